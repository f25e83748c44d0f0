"""The README's five-minute tour runs as written, in order, so it cannot rot.

Every command of the tour's shell block runs in a fresh folder (with the
project's ``examples/`` beside it). Only what needs hardware or files the
reader brings is substituted, each for a stated reason:

* a Keithley at ``examples/keithley2450.toml`` → the strict SCPI emulator on
  loopback for ``check`` and the GUI (the real driver code runs); the hour-long
  ``run`` of the real thing → ``--mock --time-scale 300``;
* the reader's files (``ACOM.ang``, ``series.emd``, ``electrical.csv``) → the
  real files in ``../shared/data/real`` (the test skips without them);
* ``insitu gui`` → the same command with ``--screenshot --duration`` (a window
  that closes itself);
* ``demo-output/`` is what the README's set-up step ``make demo`` leaves: the
  test makes it first with ``insitu demo --out demo-output``;
* clock accelerations of 300x (``--time-scale 300``, ``--speed 300``, and the
  demo's default) → 1200x, only to keep ``make test`` within its CI budget: the
  same code runs, an hour of protocol takes ~3 s instead of ~12 s.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOUR_HEADING = "## Five-minute tour"


def tour_commands(readme: str) -> list[str]:
    """The ``insitu`` commands of the tour's first ``sh`` block, comments stripped, in order.

    Examples
    --------
    >>> tour_commands("## Five-minute tour\\n```sh\\n. .venv/bin/activate\\n# c\\ninsitu info a.h5   # x\\n```\\n")
    ['insitu info a.h5']
    """
    start = readme.index(TOUR_HEADING)
    block = re.search(r"```sh\n(.*?)```", readme[start:], re.S)
    assert block, "the tour has no ```sh block"
    cmds = []
    for line in re.sub(r"\\\n\s*", " ", block.group(1)).splitlines():      # join "\" continuations
        line = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if line.startswith("insitu "):
            cmds.append(line)
    return cmds


def substitute(cmd: str, *, emu_toml: Path, real: Path, tmp: Path) -> str:
    """The tour command as this test runs it (see the module docstring for why each change)."""
    hw = "--config examples/keithley2450.toml"
    if cmd.startswith("insitu run ") and hw in cmd:
        cmd = cmd.replace(hw, "--mock --time-scale 300")
    cmd = cmd.replace(hw, f"--config {shlex.quote(str(emu_toml))}")
    for mine, theirs in (("ACOM.ang", "ACOM.ang"), ("series.emd", "fei_example_tem_stack.emd"),
                         ("electrical.csv", "protochips_electrical.csv")):
        cmd = re.sub(rf"(?<![\w/.-]){re.escape(mine)}(?![\w.-])", shlex.quote(str(real / theirs)), cmd)
    cmd = re.sub(r"--(time-scale|speed) 300\b", r"--\1 1200", cmd)
    if cmd.startswith("insitu gui"):
        shot = tmp / f"gui-{abs(hash(cmd)) % 10_000}.png"
        cmd += f" --screenshot {shot} --duration 3"
    return cmd


@pytest.fixture
def tour_folder(tmp_path):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    return tmp_path


def test_readme_tour_runs_as_written(tour_folder, real_data, emulator):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    cmds = tour_commands(readme)
    assert len(cmds) >= 10, cmds
    emu = emulator(initial_output=False, initial_level=0.0)
    emu_toml = tour_folder / "emulated-2450.toml"
    emu_toml.write_text(f'[source_meter]\ndriver = "keithley2450"\nresource = "{emu.resource}"\n'
                        'timeout_s = 2.0\n[beam_blanker]\ndriver = "mock"\n[frames]\ndriver = "mock"\n')
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    bindir = Path(sys.executable).parent
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"     # `insitu` as the reader's shell finds it
    timings = []
    if any("demo-output/" in c for c in cmds):   # the set-up step's output, as `make demo` leaves it
        cmds = ["insitu demo --out demo-output --time-scale 1200"] + cmds
    for cmd in cmds:
        run = substitute(cmd, emu_toml=emu_toml, real=real_data, tmp=tour_folder)
        t0 = time.monotonic()
        r = subprocess.run(run, shell=True, cwd=tour_folder, env=env, capture_output=True, text=True, timeout=600)
        timings.append((time.monotonic() - t0, cmd))
        assert r.returncode == 0, f"README tour: `{cmd}` (run as `{run}`) exited {r.returncode}:\n{r.stderr[-3000:]}"
    print("\n".join(f"{dt:6.1f} s  {c}" for dt, c in timings))
    assert emu.output_changes() == [] or all(not on for _, on in emu.output_changes())   # check touched nothing
