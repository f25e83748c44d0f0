"""The window replaying a recorded session: timing, speed, pause, bounded plots (pytest-qt)."""
from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("pytestqt")
pytest.importorskip("insitu.control.replay")

from insitu.gui.app import MainWindow  # noqa: E402
from insitu.gui.backends import ReplayBackend, ReplayClock  # noqa: E402
from insitu.gui.feed import record_synthetic_session  # noqa: E402


class Tap:
    """A frame slot that notes (record time, wall time) of every frame the replay emits."""

    def __init__(self):
        self.seen = []

    def put(self, rec):
        self.seen.append((rec.time_s, time.monotonic()))


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    p = tmp_path_factory.mktemp("replay") / "s.h5"
    return record_synthetic_session(p, duration_s=2.0, sample_interval_s=0.1, frame_rate_hz=5.0,
                                    frame_shape=(96, 96))


def _play(qtbot, path, speed):
    b = ReplayBackend(path, speed=speed)
    w = MainWindow(b, analysis=False)
    qtbot.addWidget(w)
    tap = Tap()
    w.queue.frame_slots.append(tap)
    w.show()
    return b, w, tap


@pytest.mark.parametrize("speed", [1.0, 2.0])
def test_replay_plays_at_the_recorded_timing(qtbot, session, speed):
    b, w, tap = _play(qtbot, session, speed)
    w.start()
    qtbot.waitUntil(lambda: w.state == "done", timeout=15_000)
    assert w.thread.outcome == "complete"
    t_rec = np.array([s[0] for s in tap.seen])
    t_wall = np.array([s[1] for s in tap.seen])
    assert len(t_rec) == 11                                   # every frame of 0…2 s at 5 frames/s
    # wall time between frames = recorded time / speed (least-squares slope and worst deviation)
    slope = np.polyfit(t_rec, t_wall, 1)[0]
    assert slope == pytest.approx(1.0 / speed, rel=0.05)
    resid = (t_wall - t_wall[0]) - (t_rec - t_rec[0]) / speed
    assert np.abs(resid).max() < 0.1
    # what the operator sees: every bias sample in the plots, the last frame shown, elapsed = duration
    assert w.plots.traces["voltage"].n_samples == 21
    assert w.image._frame.time_s == pytest.approx(2.0)
    assert w.panel.r_time.value.text().startswith("0:02")
    assert not w.panel.start_button.isEnabled() and w.panel.start_button.text() == "Play"


def test_replay_pause_holds_and_speed_changes_take_effect(qtbot, session):
    b, w, tap = _play(qtbot, session, 1.0)
    w.start()
    qtbot.waitUntil(lambda: len(tap.seen) >= 3, timeout=5000)
    w.toggle_pause()
    qtbot.wait(150)
    n = len(tap.seen)
    qtbot.wait(700)
    assert len(tap.seen) <= n + 1                   # at most the record already in flight
    w.toggle_pause()
    w.speed_box.setCurrentIndex(w.speed_box.findData(5.0))
    assert b.clock.time_scale == 5.0
    t0 = time.monotonic()
    qtbot.waitUntil(lambda: w.state == "done", timeout=10_000)
    # the remaining ≥ 1.4 recorded seconds play in about a fifth of that (not 1.4 s)
    assert time.monotonic() - t0 < 0.9
    assert len(tap.seen) == 11


def test_replay_stop_ends_early_without_error(qtbot, session):
    b, w, tap = _play(qtbot, session, 0.5)
    assert not w.panel.abort_button.isEnabled()
    w.start()
    qtbot.waitUntil(lambda: len(tap.seen) >= 2, timeout=5000)
    assert w.panel.abort_button.isEnabled()
    w.abort()
    qtbot.waitUntil(lambda: w.state == "done", timeout=5000)
    assert w.thread.outcome == "stopped" and len(tap.seen) < 11


def test_replay_clock_pause_and_speed():
    c = ReplayClock(2.0)
    time.sleep(0.05)
    c.pause()
    t = c.now()
    assert 0.09 <= t <= 0.2
    time.sleep(0.05)
    assert c.now() == t
    c.resume()
    c.set_speed(10.0)
    time.sleep(0.05)
    assert c.now() - t == pytest.approx(0.5, abs=0.2)


def test_plots_bounded_over_a_long_replay(qtbot, tmp_path):
    p = record_synthetic_session(tmp_path / "long.h5", duration_s=3600.0, sample_interval_s=0.1,
                                 frame_rate_hz=0.01, frame_shape=(32, 32))
    b, w, tap = _play(qtbot, p, 3000.0)
    w.start()
    qtbot.waitUntil(lambda: w.state == "done", timeout=120_000)
    w.plots.refresh()
    assert w.plots.traces["voltage"].n_samples == 36_001
    assert w.plots.point_count() <= 3 * 2 * w.plots.capacity
    assert w.plots.point_count() < 36_001 / 5
