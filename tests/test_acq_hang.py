"""Issue 17: a frame source that hangs (a read blocked for 30 s on an unreachable share) cannot hold up
the safety loop: an abort's ramp-down starts within one tick, and the run ends without waiting for it."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import tifffile

from insitu.control.engine import Engine
from insitu.control.protocol import parse_protocol
from insitu.core.clock import Clock
from insitu.core.errors import StoppedEarly
from insitu.core.records import EventRecord
from insitu.drivers.folder import FolderWatchSource
from insitu.drivers.interfaces import Instruments
from insitu.drivers.mock import MockBeamBlanker, MockSourceMeter

DT = 0.1
PROTO = f"""
name: hang
limits: {{max_voltage: 5, compliance_current: 1.0e-6, max_slew_rate: 2.0}}
sample_interval: {DT}
steps:
  - beam: unblank
  - ramp: {{to: 2.0}}
  - hold: {{duration: 60}}
"""


@pytest.fixture
def hung_read(monkeypatch):
    """``read_file`` blocks for 30 s (released at teardown); ``entered`` is set when a read has started."""
    import insitu.core.readers as readers

    entered, release = threading.Event(), threading.Event()

    def blocked(path, **kw):
        entered.set()
        release.wait(30.0)
        raise OSError("share unreachable")

    monkeypatch.setattr(readers, "read_file", blocked)
    yield entered
    release.set()


def test_an_abort_ramps_down_within_one_tick_while_the_frame_source_is_stuck_in_a_read(tmp_path, hung_read):
    clock = Clock()
    sm = MockSourceMeter(50e6, clock)
    src = FolderWatchSource(tmp_path, clock, settle_s=0.05)
    inst = Instruments(sm, MockBeamBlanker(), src, clock)
    records: list = []
    eng = Engine(parse_protocol(PROTO), inst, [records.append])
    box: dict = {}

    def operator():
        # once at the hold: a file appears, the watcher starts reading it and hangs; 1 s later, Abort
        while not (eng._step_label.startswith("hold") and eng.setpoint == 2.0):
            time.sleep(0.01)
        tifffile.imwrite(tmp_path / "frame.tif", np.zeros((64, 64), np.uint16))
        assert hung_read.wait(10), "the watcher never started reading"
        time.sleep(1.0)
        box["t_abort"] = clock.now()
        eng.request_abort("operator")

    th = threading.Thread(target=operator, daemon=True)
    th.start()
    t_wall = time.monotonic()
    with pytest.raises(StoppedEarly):
        eng.run()
    wall = time.monotonic() - t_wall
    th.join(5)
    t_abort = box["t_abort"]
    # the instrument-side log: the first level set after the abort is the first step of the ramp-down
    after = [(t, v) for t, k, v in sm.log if k == "level" and t >= t_abort]
    assert after and after[0][1] < 2.0
    delay = after[0][0] - t_abort
    # without any frame source the engine needs up to two ticks: the tick that sees the abort, then the
    # first ramp-down step; the stuck read adds nothing (with the read on the control thread: 30 s)
    assert delay <= 2 * DT + 0.05, f"ramp-down started {delay:.3f} s after the abort"
    assert not sm.output and sm.read_state().level_V == 0.0
    # the run ended long before the 30-s read: stop() did not wait for the stuck thread, and said so
    assert wall < 20.0
    assert src.hung
    msgs = [r.message for r in records if isinstance(r, EventRecord) and r.kind == "frames"]
    assert any("did not stop" in m for m in msgs)


def test_poll_returns_at_once_while_a_read_hangs(tmp_path, hung_read):
    src = FolderWatchSource(tmp_path, Clock(), settle_s=0.05)
    src.start()
    tifffile.imwrite(tmp_path / "frame.tif", np.zeros((16, 16), np.uint16))
    assert hung_read.wait(10)
    t = time.perf_counter()
    for _ in range(50):
        assert src.poll() == []
    assert time.perf_counter() - t < 0.1
    t = time.perf_counter()
    assert src.stop() is False and src.hung
    assert time.perf_counter() - t < 2.0
