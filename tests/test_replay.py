"""Replay (issue 9): Player timing at speed 1 and 10, identical frames, ReplayFrameSource."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from insitu.cli import main
from insitu.core.clock import Clock
from insitu.drivers.replay import ReplayFrameSource
from insitu.core.records import BeamSample, BiasSample, EventRecord, FrameRecord, ProgressRecord
from insitu.control.replay import Player
from insitu.core.session import SessionWriter, open_session

DURATION = 2.0


@pytest.fixture
def recorded(tmp_path):
    """A 2 s session: bias every 0.1 s, a frame every 0.4 s, beam and events."""
    p = tmp_path / "rec.h5"
    rng = np.random.default_rng(7)
    with SessionWriter(p, start_time_iso="2026-03-01T10:00:00+01:00", protocol_text="name: r\n") as w:
        w.set_instrument("source_meter", {"idn": "MOCK"})
        w.write_group("/entry/sample/truth/seeds", {"x_px": np.array([1.5, 2.5])}, {"n": 2})
        w.write(EventRecord(0.0, "start", "go"))
        w.write(BeamSample(0.0, False, 5.0))
        for k in range(21):
            t = 0.1 * k
            w.write(BiasSample(t, 0.05 * k, 0.05 * k, 1e-9 * k, False))
            if k % 4 == 0:
                w.write(FrameRecord(t, rng.integers(0, 60000, (10, 14)).astype(np.uint16), 0.05 * k, 1e-9 * k,
                                    False, t * 5.0, 3e-9, drift_x=0.01 * k))
        w.write(EventRecord(DURATION, "end", "done"))
    return p


@pytest.mark.parametrize("speed", [1.0, 10.0])
def test_player_takes_recorded_time_over_speed(recorded, speed):
    got = []
    p = Player(recorded, speed=speed, sinks=[got.append])
    assert p.duration_s == pytest.approx(DURATION)
    t0 = time.monotonic()
    assert p.run() == "complete"
    elapsed = time.monotonic() - t0
    assert elapsed == pytest.approx(DURATION / speed, abs=0.15 + 0.05 * DURATION / speed)
    recs = [r for r in got if not isinstance(r, ProgressRecord)]
    times = [r.time_s for r in recs]
    assert times == sorted(times) and len(recs) == 2 + 1 + 21 + 6
    s = open_session(recorded)
    frames = [r for r in recs if isinstance(r, FrameRecord)]
    for i, fr in enumerate(frames):
        np.testing.assert_array_equal(fr.data, s.frame(i))
        assert fr.bias_V == s.frame_table["bias"][i] and fr.drift_x == s.frame_table["drift_x"][i]
    p.close()


def test_player_emits_each_record_at_its_time(recorded):
    clock = Clock(time_scale=4.0)
    lags = []
    p = Player(recorded, speed=4.0, sinks=[lambda r: lags.append(clock.now() - r.time_s)], clock=clock)
    p.run()
    lags = np.array(lags)
    rel = lags - lags[0]  # the first record goes out at run(): later ones keep its distance to their time
    assert rel.min() > -0.01 and np.median(rel) < 0.05 and rel.max() < 0.4  # never early, rarely late
    p.close()


def test_player_stop_from_another_thread(recorded):
    p = Player(recorded, speed=1.0)
    threading.Timer(0.3, p.stop).start()
    t0 = time.monotonic()
    assert p.run() == "stopped"
    assert time.monotonic() - t0 < 0.6 and 0 < p.n_emitted < 30
    p.close()


def test_replay_cli_writes_identical_frames(recorded, tmp_path):
    out = tmp_path / "copy.h5"
    assert main(["replay", str(recorded), "--speed", "10", "--out", str(out), "--quiet"]) == 0
    a, b = open_session(recorded), open_session(out)
    assert b.n_frames == a.n_frames == 6 and b.status == "complete" and b.program == "insitu replay"
    for (i, ta, fa), (_, tb, fb) in zip(a.iter_frames(), b.iter_frames()):
        np.testing.assert_array_equal(fa, fb)
        assert ta == tb
    for k in a.bias:
        np.testing.assert_array_equal(a.bias[k], b.bias[k])
    assert a.events == b.events and b.protocol_text == a.protocol_text
    assert b.group("/entry/sample/truth/seeds")["x_px"].tolist() == [1.5, 2.5]  # ground truth comes along
    assert b.group("/entry/instrument/source_meter")["idn"] == "MOCK"
    assert b.group("/entry/instrument/replay")["speed"] == 10.0
    assert main(["replay", str(recorded), "--out", str(out), "--quiet"]) == 1  # exists
    from filetools import assert_hyperspy_opens

    a.close(), b.close()
    assert_hyperspy_opens(out, n_frames=6)  # a replayed session opens in HyperSpy


def test_replay_frame_source_paces_frames(recorded):
    clock = Clock()
    src = ReplayFrameSource(recorded, clock, speed=10.0)
    assert src.period_s == pytest.approx(0.04)
    src.start()
    t_start = clock.now()
    got = []
    while not src.finished and clock.now() - t_start < 2.0:
        got += src.poll()
        time.sleep(0.005)
    src.close()
    s = open_session(recorded)
    assert [f.index for f in got] == list(range(6))
    rel = np.array([f.time_s for f in got]) - t_start
    np.testing.assert_allclose(rel, s.frame_table["time"] / 10.0, atol=0.02)
    for f in got:
        np.testing.assert_array_equal(f.data, s.frame(f.meta["recorded_index"]))
        assert f.meta["pixel_size_m"] == 3e-9


def test_replay_frame_source_loop_and_empty(recorded, tmp_path):
    clock = Clock(time_scale=100.0)
    src = ReplayFrameSource(recorded, clock, speed=1.0, loop=True)
    src.start()
    time.sleep(0.06)  # 6 experiment seconds: more than two passes of a 2 s recording
    got = src.poll()
    src.close()
    assert len(got) >= 12 and [f.index for f in got] == list(range(len(got)))
    assert np.all(np.diff([f.time_s for f in got]) > 0)
    empty = tmp_path / "empty.h5"
    SessionWriter(empty, start_time_iso="2026-03-01T10:00:00+01:00").close()
    from insitu.core.errors import UserError

    with pytest.raises(UserError, match="no frames"):
        ReplayFrameSource(empty, clock)


class _PausableClock:
    """Experiment clock that stands still while paused (as the GUI's replay clock)."""

    def __init__(self, speed):
        self.time_scale = speed
        self._base, self._wall, self.paused = 0.0, time.monotonic(), False

    def now(self):
        return self._base if self.paused else self._base + (time.monotonic() - self._wall) * self.time_scale

    def pause(self):
        self._base, self.paused = self.now(), True

    def resume(self):
        self._wall, self.paused = time.monotonic(), False


def test_player_follows_a_paused_clock(recorded):
    clock = _PausableClock(4.0)
    got = []
    p = Player(recorded, speed=4.0, sinks=[got.append], clock=clock)
    th = threading.Thread(target=p.run)
    th.start()
    time.sleep(0.15)
    clock.pause()
    time.sleep(0.05)
    n_paused = len(got)
    time.sleep(0.3)
    assert len(got) == n_paused and 0 < n_paused  # nothing is emitted while the clock stands still
    clock.resume()
    th.join(5)
    assert not th.is_alive() and p.n_emitted == 30
    p.close()
