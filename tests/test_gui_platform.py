"""``insitu gui`` on a machine where Qt cannot open a window: exit 1 with one line, no abort, no instrument touched."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from insitu.gui.qt_platform import debian_package, platform_problem

ROOT = Path(__file__).resolve().parents[1]


def gui(*args, platform: str, timeout=120):
    env = dict(os.environ, QT_QPA_PLATFORM=platform)
    return subprocess.run([sys.executable, "-m", "insitu", "gui", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def test_bad_platform_plugin_is_one_line_exit_1(tmp_path):
    out = tmp_path / "run.h5"
    r = gui("--mock", "--duration", "1", "--out", out, platform="no-such-plugin")
    # before: Qt printed "Could not load the Qt platform plugin" and aborted the process (exit 134)
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert '"no-such-plugin"' in lines[0] and "QT_QPA_PLATFORM=offscreen" in lines[0]
    assert "libxcb-icccm4" in lines[0]            # the packages to install are named
    assert "Traceback" not in r.stderr
    assert not out.exists()                       # nothing was started or recorded


def test_missing_xcb_library_is_named():
    # what Qt prints (QT_DEBUG_PLUGINS=1) on a minimal Debian without the xcb libraries
    stderr = ('Cannot load library /x/libqxcb.so: (libxcb-xinerama.so.0: cannot open shared object file: '
              'No such file or directory)\nqt.qpa.plugin: Could not load the Qt platform plugin "xcb"\n')
    line = platform_problem(stderr, -6, "xcb")
    assert "libxcb-xinerama.so.0" in line and "package libxcb-xinerama0" in line
    assert "\n" not in line


@pytest.mark.parametrize("soname, package", [("libxcb-icccm.so.4", "libxcb-icccm4"),
                                             ("libxcb-keysyms.so.1", "libxcb-keysyms1"),
                                             ("libxkbcommon-x11.so.0", "libxkbcommon-x11-0"),
                                             ("libGL.so.1", "libGL1")])
def test_debian_package_names(soname, package):
    assert debian_package(soname) == package
