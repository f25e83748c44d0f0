"""The window driving the real engine on mock instruments: start, pause, abort, close (pytest-qt)."""
from __future__ import annotations

import time

import pytest

pytest.importorskip("pytestqt")
pytest.importorskip("insitu.control.engine")

from insitu.control.config import MOCK_TOML, parse_instruments  # noqa: E402
from insitu.drivers.mock import MockBeamBlanker, MockSourceMeter, NoiseFrameSource  # noqa: E402
from insitu.gui.app import MainWindow  # noqa: E402
from insitu.gui.backends import EngineBackend  # noqa: E402
from insitu.drivers.interfaces import Instruments  # noqa: E402
from insitu.control.protocol import expand, parse_protocol  # noqa: E402

PROTOCOL = """
name: gui-test
limits: {max_voltage: 6.0, compliance_current: 1.0e-3, max_slew_rate: 2.0}
sample_interval: 0.1
steps:
  - beam: unblank
  - ramp: {to: 4.0, rate: 2.0}
  - hold: {duration: 120}
  - ramp: {to: 0.0}
"""


def plain_mocks(config, clock, seed=0):
    """Mock instruments without the virtual specimen (fast, and the source keeps a log)."""
    sm = MockSourceMeter(1e6, clock)
    bb = MockBeamBlanker()
    frames = NoiseFrameSource(shape=(256, 256), rate_hz=5.0, clock=clock, blanker=bb)
    return Instruments(sm, bb, frames, clock)


def make_window(qtbot, tmp_path, protocol_text=PROTOCOL):
    config = parse_instruments(MOCK_TOML)
    protocol = parse_protocol(protocol_text)
    b = EngineBackend(config, MOCK_TOML, protocol, tmp_path / "s.h5", open_instruments=plain_mocks)
    w = MainWindow(b, protocol=protocol, timeline=expand(protocol), protocol_path="gui-test.yaml", analysis=False)
    qtbot.addWidget(w)
    w.show()
    return b, w


def test_abort_ramps_down_at_once_and_switches_off(qtbot, tmp_path):
    from insitu.core.session import open_session

    b, w = make_window(qtbot, tmp_path)
    qtbot.mouseClick(w.panel.start_button, 1)  # Qt.LeftButton
    qtbot.waitUntil(lambda: b.instruments is not None and b.instruments.source_meter.read_state().level_V >= 3.0,
                    timeout=10_000)
    sm = b.instruments.source_meter
    clock = b.instruments.clock
    assert w.panel.abort_button.isEnabled()
    t_abort = clock.now()
    v_abort = sm.read_state().level_V
    qtbot.mouseClick(w.panel.abort_button, 1)
    assert w.state == "stopping"
    qtbot.waitUntil(lambda: w.state == "done", timeout=10_000)
    assert w.thread.outcome == "aborted"
    dt = 0.1
    levels = [(t, v) for t, what, v in sm.log if what == "level" and t > t_abort]
    offs = [t for t, what, v in sm.log if what == "output" and v == 0.0 and t > t_abort]
    # at most the one step already in flight goes up; the engine then reacts within one sample
    # interval (plus scheduling slack): the levels only go down from there
    vs = [v for _, v in levels]
    peak = max(range(len(vs)), key=lambda k: vs[k])
    assert peak <= 1 and vs[peak] <= v_abort + 2.0 * dt + 1e-9
    prev = [v_abort] + vs
    first_down = next(t for (t, v), p in zip(levels, prev) if v < p)
    assert first_down - t_abort <= 2 * dt + 0.1   # the tick in flight, then the next one (+ load slack)
    # ... at the allowed slew (2 V/s), never a jump, ending at 0 V with the output off
    down = vs[peak:]
    assert all(0 <= a - c <= 2.0 * dt + 1e-9 for a, c in zip(down, down[1:]))
    assert down[-1] == 0.0 and offs
    t_zero = next(t for t, v in levels if v == 0.0)
    assert offs[0] - t_zero <= dt + 0.1                  # output off within one sample interval of 0 V
    assert offs[0] - t_abort <= vs[peak] / 2.0 + 3 * dt   # the whole stop takes the ramp time
    state = sm.read_state()
    assert not state.output_on and state.level_V == 0.0
    assert not w.panel.abort_button.isEnabled()
    with open_session(tmp_path / "s.h5") as s:
        assert s.status == "aborted"
        assert len(s.bias["time"]) > 10


def test_pause_holds_the_level_and_resume_continues(qtbot, tmp_path):
    b, w = make_window(qtbot, tmp_path)
    w.start()
    qtbot.waitUntil(lambda: b.instruments is not None and b.instruments.source_meter.read_state().level_V >= 1.0,
                    timeout=10_000)
    w.toggle_pause()
    assert w.state == "paused"
    qtbot.wait(300)
    sm = b.instruments.source_meter
    v1 = sm.read_state().level_V
    qtbot.wait(500)
    assert sm.read_state().level_V == v1            # held while paused
    assert w.panel.abort_button.isEnabled()         # and Abort still works
    w.toggle_pause()
    qtbot.waitUntil(lambda: sm.read_state().level_V > v1 + 0.3, timeout=5000)
    w.abort()
    qtbot.waitUntil(lambda: w.state == "done", timeout=10_000)
    assert not sm.read_state().output_on


def test_closing_mid_run_stops_safely_before_the_window_goes(qtbot, tmp_path):
    b, w = make_window(qtbot, tmp_path)
    w.start()
    qtbot.waitUntil(lambda: b.instruments is not None and b.instruments.source_meter.read_state().level_V >= 1.0,
                    timeout=10_000)
    w.confirm_close = lambda: True
    w.close()
    assert w.isVisible()                              # not yet: ramping down first
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=10_000)
    state = b.instruments.source_meter.read_state()
    assert not state.output_on and state.level_V == 0.0
    assert w.thread.outcome == "aborted"


def test_loading_a_bad_protocol_shows_the_error_and_keeps_start_off(qtbot, tmp_path):
    config = parse_instruments(MOCK_TOML)
    b = EngineBackend(config, MOCK_TOML, None, tmp_path / "s.h5", open_instruments=plain_mocks)
    w = MainWindow(b, analysis=False)
    qtbot.addWidget(w)
    assert not w.panel.start_button.isEnabled()
    bad = tmp_path / "bad.yaml"
    bad.write_text(PROTOCOL.replace("max_voltage: 6.0", "max_voltage: -1"))
    assert not w.load_protocol(str(bad))
    assert "max_voltage" in w.panel.name_label.text()
    assert not w.panel.start_button.isEnabled()
    good = tmp_path / "good.yaml"
    good.write_text(PROTOCOL)
    assert w.load_protocol(str(good))
    assert w.panel.start_button.isEnabled() and b.protocol is w.protocol


def test_a_frozen_gui_neither_blocks_the_engine_nor_its_safe_stop(qtbot, tmp_path):
    b, w = make_window(qtbot, tmp_path)
    w.start()
    qtbot.waitUntil(lambda: b.instruments is not None and b.instruments.source_meter.read_state().level_V >= 2.0,
                    timeout=10_000)
    sm = b.instruments.source_meter
    n0 = len(sm.log)
    time.sleep(1.0)                       # the GUI thread is frozen: no events, no draining
    assert len(sm.log) > n0 + 5           # ... the engine kept running its protocol meanwhile
    w.abort()
    time.sleep(2.5)                       # frozen again, right after Abort (ramp-down from ~2 V takes ~1 s)
    state = sm.read_state()               # read before the GUI processes a single event
    assert not state.output_on and state.level_V == 0.0
    qtbot.waitUntil(lambda: w.state == "done", timeout=5000)


def test_abort_while_connecting_switches_nothing_on(qtbot, tmp_path):
    import threading

    gate = threading.Event()
    connecting = threading.Event()
    opened = []

    def slow_mocks(config, clock, seed=0):
        connecting.set()
        gate.wait(5)                      # the instruments take a while to connect
        inst = plain_mocks(config, clock, seed)
        opened.append(inst)
        return inst

    config = parse_instruments(MOCK_TOML)
    protocol = parse_protocol(PROTOCOL)
    b = EngineBackend(config, MOCK_TOML, protocol, tmp_path / "s.h5", open_instruments=slow_mocks)
    w = MainWindow(b, protocol=protocol, timeline=expand(protocol), analysis=False)
    qtbot.addWidget(w)
    w.start()
    assert w.panel.abort_button.isEnabled()
    assert connecting.wait(10)            # Abort while the instruments are connecting (not before)
    w.abort()
    gate.set()
    qtbot.waitUntil(lambda: w.state == "done", timeout=10_000)
    assert w.thread.outcome == "aborted"
    sm = opened[0].source_meter
    assert not any(what == "output" and v for _, what, v in sm.log)   # output never switched on


def test_abort_while_paused_says_aborted_and_blanks_the_beam(qtbot, tmp_path):
    from insitu.core.session import open_session

    b, w = make_window(qtbot, tmp_path)
    qtbot.mouseClick(w.panel.start_button, 1)
    qtbot.waitUntil(lambda: b.instruments is not None and b.instruments.source_meter.read_state().level_V >= 1.0,
                    timeout=10_000)
    qtbot.mouseClick(w.panel.pause_button, 1)
    assert w.state == "paused"
    qtbot.waitUntil(lambda: "PAUSED" in w.panel.step_label.text(), timeout=10_000)
    qtbot.mouseClick(w.panel.abort_button, 1)
    qtbot.waitUntil(lambda: w.state == "done", timeout=15_000)
    qtbot.wait(300)                                   # the last records drained
    assert "PAUSED" not in w.panel.step_label.text()  # before: still "— PAUSED" after the abort
    assert "ABORTED" in w.header.text()
    assert b.instruments.blanker.is_blanked()         # before: left unblanked
    assert w.panel.r_beam.value.text() == "BLANKED"
    with open_session(tmp_path / "s.h5") as s:
        assert any(k == "beam" and "stopped early" in m for _, k, m in s.events)
        assert bool(s.beam["blanked"][-1])


def test_after_a_connection_fault_retry_runs_into_a_new_file(qtbot, tmp_path):
    from insitu.core.errors import InstrumentError
    from insitu.core.session import open_session

    calls = {"n": 0}

    def flaky(config, clock, seed=0):
        calls["n"] += 1
        if calls["n"] == 1:
            raise InstrumentError("TCPIP0::192.0.2.10::5025::SOCKET: connection refused")
        return plain_mocks(config, clock, seed)

    config = parse_instruments(MOCK_TOML)
    protocol = parse_protocol(PROTOCOL.replace("duration: 120", "duration: 0.5"))
    b = EngineBackend(config, MOCK_TOML, protocol, tmp_path / "s.h5", open_instruments=flaky)
    w = MainWindow(b, protocol=protocol, timeline=expand(protocol), protocol_path="gui-test.yaml", analysis=False)
    qtbot.addWidget(w)
    w.show()
    qtbot.mouseClick(w.panel.start_button, 1)
    qtbot.waitUntil(lambda: w.state == "done", timeout=10_000)
    assert w.thread.outcome == "fault"
    assert w.panel.start_button.isEnabled() and w.panel.start_button.text() == "Retry"   # before: disabled
    qtbot.mouseClick(w.panel.start_button, 1)
    assert w.state == "running"
    qtbot.waitUntil(lambda: w.state == "done", timeout=20_000)
    assert w.thread.outcome == "complete", w.thread.message
    assert b.session_path == str(tmp_path / "s-2.h5")
    with open_session(tmp_path / "s-2.h5") as s:
        assert s.status == "complete" and len(s.bias["time"]) > 10
    assert w.panel.start_button.text() == "New run"
