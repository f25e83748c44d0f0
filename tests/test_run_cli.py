"""``insitu run`` / ``insitu validate`` end to end: exit codes, session files, kill -9, found state.

The source-meter is the loopback SCPI emulator (real Keithley 2450 driver);
blanker and frames are the simple mocks.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from insitu.cli import main
from insitu.core.clock import Clock
from insitu.control.engine import Engine
from insitu.control.protocol import expand, parse_protocol
from insitu.core.session import open_session
from scpi_emulator import Emulator2450
from test_engine_emulator import assert_safe_log, clock_changes, keithley_instruments, level_steps, max_window_change

ROOT = Path(__file__).resolve().parents[1]

PROTO = """
name: cli-test
limits: {max_voltage: 3.0, compliance_current: 1.0e-6, max_slew_rate: 4.0, short_current: 8.0e-7}
sample_interval: 0.1
steps:
  - beam: unblank
  - ramp: {to: 2.0}
  - hold: {duration: 0.5}
  - ramp: {to: -1.0}
  - ramp: {to: 0.0}
  - beam: blank
"""


@pytest.fixture
def emu():
    e = Emulator2450()
    e.start()
    yield e
    e.stop()


def write_config(tmp_path, emu, rate_hz=5.0):
    cfg = tmp_path / "instruments.toml"
    cfg.write_text(f"""
[source_meter]
driver = "keithley2450"
resource = "{emu.resource}"
timeout_s = 1.0
[beam_blanker]
driver = "mock"
[frames]
driver = "mock"
rate_hz = {rate_hz}
""")
    return cfg


def write(tmp_path, text, name="p.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _is_progress(line: str) -> bool:
    """The engine's status lines (a plain line every few seconds when stderr is not a terminal)."""
    return (" elapsed, " in line and " left | " in line) or \
        (line.startswith("connection lost (") and line.endswith("reconnecting..."))


def one_line_error(capsys):
    err = "\n".join(ln for ln in capsys.readouterr().err.strip().splitlines() if not _is_progress(ln))
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


# ----------------------------------------------------------------------------- refusals (nothing touched)
def test_over_limit_protocol_exit_1_output_never_on(tmp_path, emu, capsys):
    proto = write(tmp_path, PROTO.replace("ramp: {to: 2.0}", "ramp: {to: 3.5}"))
    rc = main(["run", str(proto), "--config", str(write_config(tmp_path, emu)), "--out", str(tmp_path / "s.h5")])
    assert rc == 1
    err = one_line_error(capsys)
    assert "steps[1].ramp.to: 3.5 V exceeds limits.max_voltage 3 V" in err
    assert emu.connections == 0 and emu.changes == [] and emu.output is False
    assert not (tmp_path / "s.h5").exists()


def test_existing_output_refused_and_untouched(tmp_path, emu, capsys):
    out = tmp_path / "s.h5"
    out.write_bytes(b"precious")
    rc = main(["run", str(write(tmp_path, PROTO)), "--config", str(write_config(tmp_path, emu)), "--out", str(out)])
    assert rc == 1
    err = one_line_error(capsys)
    assert "exists" in err and "--overwrite" in err
    assert out.read_bytes() == b"precious"
    assert emu.connections == 0


def test_time_scale_refused_without_mock(tmp_path, emu, capsys):
    rc = main(["run", str(write(tmp_path, PROTO)), "--config", str(write_config(tmp_path, emu)),
               "--out", str(tmp_path / "s.h5"), "--time-scale", "10"])
    assert rc == 1 and "--time-scale" in one_line_error(capsys)
    assert emu.connections == 0


# ----------------------------------------------------------------------------- complete / short / drop
def test_run_records_a_complete_session(tmp_path, emu, capsys):
    out = tmp_path / "s.h5"
    rc = main(["run", str(write(tmp_path, PROTO)), "--config", str(write_config(tmp_path, emu)), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    lim = parse_protocol(PROTO).limits
    changes = [(t, k, v) for t, k, v in emu.changes]      # real time: clock scale 1
    assert_safe_log(changes, lim)
    with open_session(out) as s:
        assert s.status == "complete"
        assert s.protocol_text.strip().startswith("name: cli-test")
        bias = s.bias
        expected = expand(parse_protocol(PROTO)).duration_s / 0.1          # one sample per interval
        assert 0.8 * expected <= len(bias["time"]) <= 1.2 * expected + 20
        assert bias["setpoint"].max() == pytest.approx(2.0) and bias["setpoint"].min() == pytest.approx(-1.0)
        assert abs(bias["setpoint"][-1]) < 1e-12
        # frames only while unblanked, each with its bias and a growing dose
        ft = s.frame_table
        assert s.n_frames >= 3
        assert not ft["blanked"].any()
        assert (ft["dose"][1:] > ft["dose"][:-1]).all()
        beam = s.beam
        assert beam["blanked"][0] and beam["blanked"][-1] and not beam["blanked"].all()
        info = s.group("/entry/instrument/source_meter")
        assert "2450" in str(info)
        kinds = [k for _, k, _ in s.events]
        assert kinds[0] == "start" and kinds[-1] == "end"


def test_short_exit_3_output_off_event_recorded(tmp_path, emu, capsys):
    out = tmp_path / "s.h5"

    def short():
        while emu.level_V < 1.0:
            time.sleep(0.005)
        emu.resistance_ohm = 1e3

    threading.Thread(target=short, daemon=True).start()
    rc = main(["run", str(write(tmp_path, PROTO)), "--config", str(write_config(tmp_path, emu)), "--out", str(out)])
    assert rc == 3
    assert "|I|" in one_line_error(capsys)
    assert emu.output is False and emu.level_V == 0.0
    with open_session(out) as s:
        assert s.status == "aborted"
        assert any(k == "short" for _, k, _ in s.events)
        assert s.bias["current"].max() >= 8e-7          # the sample that tripped it is in the file


def test_dropped_connection_exit_2_samples_kept(tmp_path, emu, capsys):
    out = tmp_path / "s.h5"

    def drop():
        while emu.level_V < 1.5:
            time.sleep(0.005)
        emu.drop_connection()

    threading.Thread(target=drop, daemon=True).start()
    rc = main(["run", str(write(tmp_path, PROTO)), "--config", str(write_config(tmp_path, emu)), "--out", str(out)])
    assert rc == 2
    err = one_line_error(capsys)
    assert "reconnected" in err and "output off" in err
    assert emu.output is False and emu.level_V == 0.0 and emu.connections >= 2
    assert_safe_log(list(emu.changes), parse_protocol(PROTO).limits)
    with open_session(out) as s:
        assert s.status == "fault"
        assert s.bias["setpoint"].max() >= 1.5 - 4.0 * 0.1     # up to the drop, less one step
        assert abs(s.bias["setpoint"][-1]) < 1e-12         # the ramp-down after reconnecting is recorded
        assert any(k == "reconnect" for _, k, _ in s.events)


# ----------------------------------------------------------------------------- kill -9
KILL_PROTO = """
name: kill-test
limits: {max_voltage: 5.0, compliance_current: 1.0e-6, max_slew_rate: 1.0}
sample_interval: 0.1
steps:
  - ramp: {to: 3.0, rate: 0.9}
  - hold: {duration: 60}
"""


def test_kill_9_leaves_a_readable_file_and_next_run_ramps_down_from_found(tmp_path, emu):
    out = tmp_path / "killed.h5"
    cmd = [sys.executable, "-m", "insitu", "run", str(write(tmp_path, KILL_PROTO)),
           "--config", str(write_config(tmp_path, emu)), "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        t0 = time.monotonic()
        while emu.level_V < 1.0:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() - t0 < 60
            time.sleep(0.02)
        time.sleep(1.3)
        t_kill = time.time()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    level_at_kill = emu.level_V
    assert emu.output is True and level_at_kill > 1.0       # killed: nobody ramped it down

    with open_session(out) as s:                             # opens, no repair step
        start = datetime.fromisoformat(s.start_time).timestamp()
        elapsed = t_kill - start
        last = float(s.bias["time"][-1])
        assert elapsed - last <= 1.5, f"{elapsed - last:.2f} s of samples lost"
        assert s.bias["setpoint"].max() >= 1.0
    # the next run finds the output on at that level and ramps down from it before anything else
    emu.clear_log()
    clock = Clock(4.0)
    inst = keithley_instruments(emu, clock)
    proto = parse_protocol("""
limits: {max_voltage: 5.0, compliance_current: 1.0e-6, max_slew_rate: 1.0}
steps: [{ramp: {to: 0.5}}]
""")
    records = []
    assert Engine(proto, inst, [records.append]).run() == "complete"
    inst.close()
    changes = clock_changes(emu, clock)
    first_off = next(t for t, k, v in changes if k == "output" and not v)
    down = [v for t, k, v in changes if k == "level" and t < first_off]
    assert down[-1] == 0.0 and len(down) >= 5
    assert all(b < a for a, b in zip([level_at_kill] + down, down))
    ts, vs = level_steps(changes, initial_level=level_at_kill)
    assert max(abs(b - a) for a, b in zip(vs, vs[1:])) <= 1.0 + 1e-9
    assert max_window_change(ts, vs) <= 2.0 + 1e-9
    assert emu.output is False and emu.level_V == 0.0


# ----------------------------------------------------------------------------- --mock with the paper protocol
@pytest.mark.timeout(120)
def test_paper_protocol_runs_with_mock_in_seconds(tmp_path):
    out = tmp_path / "ding.h5"
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "insitu", "run", str(ROOT / "examples" / "ding2023.yaml"), "--mock",
                        "--time-scale", "500", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                       timeout=110)
    wall = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    with open_session(out) as s:
        assert s.status == "complete"
        sp = s.bias["setpoint"]
        assert sp.max() == pytest.approx(17.0) and sp.min() == pytest.approx(-10.0)   # extraction and reversal
        assert abs(sp[-1]) < 1e-12
        assert s.n_frames >= 10
    from filetools import assert_hyperspy_opens

    assert_hyperspy_opens(out)  # a mock run (with the virtual specimen's truth table) opens in HyperSpy
    print(f"paper protocol (3285 s) with --mock --time-scale 500: {wall:.1f} s wall")


# ----------------------------------------------------------------------------- validate
def test_validate_prints_the_expanded_timeline(capsys):
    rc = main(["validate", str(ROOT / "examples" / "ding2023-beam-blank.yaml")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "peak |V|   17 V" in out
    assert "frames     ~10" in out                       # 5 before + 5 after, beam blanked in between
    assert "beam on    0:04:10 (250 s)" in out              # 10 frames at the default 25 s per frame
    # duration: |dV|/rate of every ramp + holds + 10 frames at 25 s per frame, from the YAML by hand
    ramps = 10 / 0.2 + 3 * (7 / 0.1 + 7 / 0.1) + 10 / 0.2 + 10 / 0.2 + 10 / 0.2 + 12 / 0.2 + 5 / 0.1 + 17 / 0.2
    holds = 600 + 3 * (120 + 180) + 60 + 300 + 60 + 300 + 240
    assert f"({ramps + holds + 250:.0f} s)" in out
    # an explicit interval wins
    assert main(["validate", str(ROOT / "examples" / "ding2023-beam-blank.yaml"), "--frame-interval", "1"]) == 0
    assert "beam on    0:00:10 (10 s)" in capsys.readouterr().out


def test_validate_invalid_names_the_field(tmp_path, capsys):
    bad = write(tmp_path, PROTO.replace("max_slew_rate: 4.0", "max_slew_rate: fast"))
    assert main(["validate", str(bad)]) == 1
    assert "limits.max_slew_rate" in one_line_error(capsys)


def test_sigterm_ramps_down_switches_off_and_exits_3(tmp_path, emu):
    out = tmp_path / "term.h5"
    cmd = [sys.executable, "-m", "insitu", "run", str(write(tmp_path, KILL_PROTO)),
           "--config", str(write_config(tmp_path, emu)), "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        while emu.level_V < 1.0:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() - t0 < 60
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, err
    assert "SIGTERM" in err
    assert emu.output is False and emu.level_V == 0.0
    lim = parse_protocol(KILL_PROTO).limits
    assert_safe_log(list(emu.changes), lim)                   # ramped down at the slew, never jumped
    down = [v for _, k, v in emu.changes if k == "level"]
    peak = max(down)
    assert len([v for v in down[down.index(peak):] if 0 < v < peak]) >= 5
    with open_session(out) as s:
        assert s.status == "aborted"
        assert any("SIGTERM" in m for _, _, m in s.events)
