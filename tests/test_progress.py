"""Progress is line-based when stderr is not a terminal, and --quiet silences it."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from insitu.core.progress import StatusLine

ROOT = Path(__file__).resolve().parents[1]




def test_status_line_in_a_log_is_throttled_lines():
    buf = io.StringIO()
    s = StatusLine(buf, period_s=0.0)
    s.write("\rA 1   ")
    s.write("\rA 2")
    s.write("\n")
    s.write("\rB")
    s.close()
    assert buf.getvalue() == "A 1\nA 2\nB\n"          # every update a line at period 0, none lost at the end
    buf = io.StringIO()
    s = StatusLine(buf, period_s=1e6)
    for k in range(100):
        s.write(f"\rstep {k}")
    s.close()
    assert buf.getvalue() == "step 0\nstep 99\n"      # the first, then the last: no flood


def test_status_line_on_a_terminal_rewrites_in_place():
    buf = io.StringIO()
    s = StatusLine(buf, tty=True)
    s.write("\rA")
    s.write("\rB")
    s.close()
    assert buf.getvalue() == "\rA\rB\n"


PROTOCOL = """\
name: p
limits: {max_voltage: 5, compliance_current: 1.0e-6, max_slew_rate: 0.5}
sample_interval: 0.2
steps:
  - ramp: {to: 2.0, rate: 0.5}
  - hold: {duration: 20}
  - ramp: {to: 0.0, rate: 0.5}
"""


def test_run_piped_prints_progress_lines_and_quiet_does_not(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text(PROTOCOL)
    cmd = [sys.executable, "-m", "insitu", "run", str(p), "--mock", "--time-scale", "20", "--overwrite"]
    r = subprocess.run(cmd + ["--out", str(tmp_path / "a.h5")], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines and "\r" not in r.stderr               # plain lines, no carriage returns in a log
    assert "finished" in lines[-1] and "elapsed" in lines[-1]
    q = subprocess.run(cmd + ["--out", str(tmp_path / "b.h5"), "--quiet"], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert q.returncode == 0 and q.stderr.strip() == ""
