"""Issue 17, acquisition off the control thread: the background producer of frame sources and the
session writer's queue (never block the caller, never drop silently, nothing recorded is lost)."""
from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from insitu.core.records import BiasSample, EventRecord, FrameRecord
from insitu.core.session import SessionWriter, open_session
from insitu.drivers.producer import BackgroundProducer

T0 = "2026-01-01T00:00:00+00:00"


# ----------------------------------------------------------------------------- BackgroundProducer
def test_drain_never_waits_for_a_blocked_step_and_stop_reports_it_hung():
    release = threading.Event()
    entered = threading.Event()

    def step():
        entered.set()
        release.wait(30)          # a read on an unreachable share
        return ["late"], 0.0

    p = BackgroundProducer(step, name="hang", join_timeout_s=0.2)
    p.start()
    assert entered.wait(5)
    t = time.perf_counter()
    for _ in range(100):
        assert p.drain() == []
    assert time.perf_counter() - t < 0.1          # 100 drains while the step is blocked
    t = time.perf_counter()
    assert p.stop() is False and p.hung
    assert time.perf_counter() - t < 1.0          # waited join_timeout_s, not 30 s
    release.set()
    time.sleep(0.1)
    assert p.drain() == []                        # what the stuck thread made later is not delivered


def test_a_full_queue_drops_the_oldest_and_counts_every_drop():
    n = iter(range(10))
    done = threading.Event()

    def step():
        k = next(n, None)
        if k is None:
            done.set()
            return [], 0.05
        return [k], 0.0

    p = BackgroundProducer(step, name="burst", maxsize=3)
    p.start()
    assert done.wait(5)
    got = p.drain()
    p.stop()
    assert got == [7, 8, 9]                       # the newest kept
    assert p.dropped == 7 and p.produced == 10 and p.delivered == 3


def test_a_failing_step_is_reported_by_drain_and_retried():
    calls = []

    def step():
        calls.append(1)
        if len(calls) == 1:
            raise OSError("share went away")
        return ["ok"], 0.02

    p = BackgroundProducer(step, name="flaky", retry_s=0.05)
    p.start()
    with pytest.raises(OSError, match="share went away"):
        t_end = time.monotonic() + 2
        while time.monotonic() < t_end:
            p.drain()
            time.sleep(0.005)
    t_end = time.monotonic() + 2
    got = []
    while not got and time.monotonic() < t_end:
        got = p.drain()
        time.sleep(0.01)
    p.stop()
    assert got and set(got) == {"ok"}


# ----------------------------------------------------------------------------- SessionWriter queue
def _slow_frames(monkeypatch, writer, delay_s):
    real = writer._write_frame

    def slow(rec):
        time.sleep(delay_s)
        real(rec)

    monkeypatch.setattr(writer, "_write_frame", slow)


def test_write_returns_at_once_and_a_slow_disk_drops_frames_loudly_never_samples(tmp_path, monkeypatch):
    p = tmp_path / "s.h5"
    w = SessionWriter(p, start_time_iso=T0, frame_shape=(32, 32), frame_dtype=np.uint16, max_queue_frames=2)
    _slow_frames(monkeypatch, w, 0.2)             # the disk takes 0.2 s a frame; frames come every 10 ms
    lat = []
    for k in range(20):
        a = time.perf_counter()
        w.write(BiasSample(0.01 * k, 1.0, 1.0, 1e-9, False))
        w.write(FrameRecord(0.01 * k, np.full((32, 32), k, np.uint16), 1.0, 1e-9, False, 0.0, 1e-9))
        lat.append(time.perf_counter() - a)
        time.sleep(0.01)
    assert max(lat) < 0.05                         # never waited for the 0.2-s frame writes
    dropped = w.frames_dropped
    assert dropped >= 10
    w.close("complete")
    with open_session(p) as s:
        assert len(s.bias["time"]) == 20                           # every sample
        assert s.n_frames + dropped == 20                          # every frame written or counted
        kept = [int(s.frame(i)[0, 0]) for i in range(s.n_frames)]
        assert kept == sorted(kept) and kept[0] == 0               # in order, the first one kept
        msgs = [m for _, k, m in s.events if k == "frames"]
    assert msgs and "dropped" in msgs[0]
    assert f"{dropped} frame(s) dropped in all" in msgs[-1]


def test_when_full_wait_keeps_every_frame(tmp_path, monkeypatch):
    p = tmp_path / "s.h5"
    w = SessionWriter(p, start_time_iso=T0, max_queue_frames=2, when_full="wait")
    _slow_frames(monkeypatch, w, 0.02)
    for k in range(15):
        w.write(FrameRecord(0.1 * k, np.full((8, 8), k, np.uint16), 0.0, 0.0, False, 0.0, 1e-9))
        assert w.queue_frames <= 2
    w.close("complete")
    assert w.frames_dropped == 0
    with open_session(p) as s:
        assert [int(s.frame(i)[0, 0]) for i in range(s.n_frames)] == list(range(15))


def test_close_drains_the_queue(tmp_path, monkeypatch):
    p = tmp_path / "s.h5"
    w = SessionWriter(p, start_time_iso=T0)
    _slow_frames(monkeypatch, w, 0.05)
    for k in range(10):
        w.write(FrameRecord(0.1 * k, np.full((8, 8), k, np.uint16), 0.0, 0.0, False, 0.0, 1e-9))
        w.write(BiasSample(0.1 * k, 0.0, 0.0, 0.0, False))
    assert w.queue_frames > 0                     # still being written when close() is called
    w.close("complete")
    with open_session(p) as s:
        assert s.n_frames == 10 and len(s.bias["time"]) == 10 and s.status == "complete"


def test_close_timeout_is_reported_and_the_samples_are_kept(tmp_path, monkeypatch, caplog):
    p = tmp_path / "s.h5"
    w = SessionWriter(p, start_time_iso=T0, close_timeout_s=0.3)
    _slow_frames(monkeypatch, w, 0.2)
    for k in range(10):
        w.write(FrameRecord(0.1 * k, np.full((8, 8), k, np.uint16), 0.0, 0.0, False, 0.0, 1e-9))
    for k in range(10):
        w.write(BiasSample(0.1 * k, 0.0, 0.0, 0.0, False))
    with caplog.at_level(logging.WARNING, logger="insitu.core.session"):
        t = time.perf_counter()
        w.close("complete")
        took = time.perf_counter() - t
    assert took < 2.0
    assert w.frames_lost_at_close >= 5
    assert any("given up" in r.getMessage() for r in caplog.records)
    with open_session(p) as s:
        assert len(s.bias["time"]) == 10                          # queued after the frames, still written
        assert s.n_frames + w.frames_lost_at_close == 10
        assert any(k == "frames" and "given up" in m for _, k, m in s.events)


def test_records_reach_the_file_within_a_second_while_recording(tmp_path):
    """Crash safety kept: a reader sees a sample within the ≤ 1 s flush while the writer runs."""
    p = tmp_path / "s.h5"
    w = SessionWriter(p, start_time_iso=T0)
    try:
        w.write(EventRecord(0.0, "info", "hello"))
        w.write(BiasSample(0.5, 1.0, 1.0, 2e-9, False))
        t_end = time.monotonic() + 3.0
        seen = 0
        t0 = time.monotonic()
        while time.monotonic() < t_end and not seen:
            time.sleep(0.1)
            with open_session(p) as s:
                seen = len(s.bias["time"])
        assert seen == 1 and time.monotonic() - t0 < 1.6
    finally:
        w.close("complete")


def test_a_write_error_in_the_writer_thread_reaches_the_next_write(tmp_path, monkeypatch):
    import errno

    from insitu.core.session import RecordingFailed

    p = tmp_path / "s.h5"
    w = SessionWriter(p, start_time_iso=T0, frame_shape=(8, 8), frame_dtype=np.uint16)

    def fail(rec):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(w, "_write_frame", fail)
    w.write(FrameRecord(0.0, np.zeros((8, 8), np.uint16), 0.0, 0.0, False, 0.0, 1e-9))
    with pytest.raises(RecordingFailed, match="Input/output error"):
        t_end = time.monotonic() + 3
        while time.monotonic() < t_end:
            w.write(BiasSample(0.1, 0.0, 0.0, 0.0, False))
            time.sleep(0.01)
    w.close("complete")
    with open_session(p) as s:
        assert s.status == "recording_failed"
