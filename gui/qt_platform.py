"""Can Qt open a window here?  Asked in a child process, before any instrument is touched.

When Qt cannot load its platform plugin (on Linux usually ``xcb``, for want of
a few ``libxcb-*`` system libraries) it does not raise: it prints "Could not
load the Qt platform plugin" and aborts the whole process (exit 134). A GUI
that had already connected to a source-meter would die with it. So
``insitu gui`` first starts a throw-away ``QApplication`` in a child process
and turns a failure into one line that names what is missing.

This module imports no Qt itself.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

#: Debian/Ubuntu packages that PyQt5's xcb platform plugin needs beyond a minimal system
XCB_PACKAGES = ("libxcb-icccm4", "libxcb-image0", "libxcb-keysyms1", "libxcb-randr0", "libxcb-render-util0",
                "libxcb-shape0", "libxcb-xinerama0", "libxcb-xkb1", "libxkbcommon-x11-0", "libgl1", "libegl1",
                "libfontconfig1", "libdbus-1-3")

_PROBE = ("import sys\n"
          "from PyQt5.QtWidgets import QApplication\n"
          "app = QApplication(sys.argv[:1])\n"
          "print(app.platformName())\n")

_MISSING_LIB = re.compile(r"(lib[\w.+-]+?\.so(?:\.\d+)*): cannot open shared object file")


def debian_package(soname: str) -> str:
    """The usual Debian package name of a shared library.

    Parameters
    ----------
    soname : str
        e.g. ``"libxcb-icccm.so.4"``.

    Returns
    -------
    str
        The library name with its major version appended (a ``-`` between two
        digits), which is Debian's naming rule for library packages.

    Examples
    --------
    >>> debian_package("libxcb-icccm.so.4")
    'libxcb-icccm4'
    >>> debian_package("libxkbcommon-x11.so.0")
    'libxkbcommon-x11-0'
    """
    name, _, version = soname.partition(".so")
    major = version.lstrip(".").split(".")[0]
    if not major:
        return name
    return f"{name}-{major}" if name[-1].isdigit() else f"{name}{major}"


def platform_problem(stderr: str, returncode: int, platform: str) -> str:
    """One line saying why Qt could not start, from the probe's ``stderr``.

    Examples
    --------
    >>> platform_problem("Cannot load library x: (libxcb-icccm.so.4: cannot open shared object file: "
    ...                  "No such file or directory)\\nqt.qpa.plugin: Could not load the Qt platform plugin "
    ...                  '"xcb"', -6, "xcb").split(";")[0]
    'the Qt platform plugin "xcb" cannot start (missing system library libxcb-icccm.so.4, Debian package libxcb-icccm4)'
    """
    missing = sorted(set(_MISSING_LIB.findall(stderr)))
    what = f'the Qt platform plugin "{platform}" cannot start'
    if missing:
        libs = ", ".join(missing)
        pkgs = " ".join(debian_package(m) for m in missing)
        what += f" (missing system library {libs}, Debian package {pkgs})"
    elif "could not find" in stderr.lower() or "no qt platform plugin could be initialized" in stderr.lower():
        what += " (no such plugin, or no display)"
    else:
        what += f" (exit {returncode})"
    return (f"{what}; install the xcb libraries (apt-get install {' '.join(XCB_PACKAGES)}), or set "
            "QT_QPA_PLATFORM=offscreen to run without a screen (--screenshot works there)")


def check_qt_platform(timeout_s: float = 60.0) -> str:
    """Start a ``QApplication`` in a child process; return its platform name.

    Parameters
    ----------
    timeout_s : float
        How long the child may take (importing PyQt5 on a cold disk is slow).

    Returns
    -------
    str
        The platform plugin Qt chose (``"xcb"``, ``"offscreen"``, ...).

    Raises
    ------
    insitu.core.errors.UserError
        One line naming what is missing and how to fix it.
    """
    from insitu.core.errors import UserError

    env = dict(os.environ, QT_DEBUG_PLUGINS="1")
    platform = os.environ.get("QT_QPA_PLATFORM") or "xcb"
    try:
        r = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env,
                           timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise UserError(f"the Qt platform plugin \"{platform}\" did not start within {timeout_s:g} s "
                        "(is the display reachable?); QT_QPA_PLATFORM=offscreen runs without a screen") from None
    if r.returncode != 0:
        raise UserError(platform_problem(r.stderr, r.returncode, platform))
    return r.stdout.strip().splitlines()[-1] if r.stdout.strip() else platform
