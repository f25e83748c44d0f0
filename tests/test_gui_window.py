"""The main window against the synthetic feed (pytest-qt, offscreen)."""
from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PyQt5 import QtGui  # noqa: E402

from insitu.gui.app import MainWindow  # noqa: E402
from insitu.gui.backends import FeedBackend  # noqa: E402


def grab_array(widget) -> np.ndarray:
    """The widget as rendered, (h, w, 3) uint8."""
    img = widget.grab().toImage().convertToFormat(QtGui.QImage.Format_RGB32)
    ptr = img.constBits()
    ptr.setsize(img.byteCount())
    a = np.frombuffer(ptr, np.uint8).reshape(img.height(), img.bytesPerLine() // 4, 4)
    return a[:, :img.width(), :3].copy()


def _stop(window, qtbot):
    if window.thread is not None and window.thread.is_alive():
        window.abort("test end")
        qtbot.waitUntil(lambda: not window.thread.is_alive(), timeout=10_000)
    window.close()


def test_window_renders_live_frames_and_readouts(qtbot):
    b = FeedBackend(duration_s=60, time_scale=1.0, frame_rate_hz=10, frame_shape=(512, 512),
                    sample_interval_s=0.1)
    w = MainWindow(b, analysis=False)
    qtbot.addWidget(w)
    w.resize(1400, 900)
    w.show()
    qtbot.waitExposed(w)
    blank = grab_array(w.image.glw).astype(float).std()
    w.start()
    qtbot.waitUntil(lambda: w.image.n_drawn >= 5, timeout=10_000)
    live = grab_array(w.image.glw).astype(float)
    # an empty view is a flat dark background; the noisy frame gives strong pixel variance
    assert blank < 5
    assert live.std() > 20
    assert w.panel.r_bias.value.text().endswith(" V")
    assert w.plots.traces["voltage"].n_samples > 0
    whole = grab_array(w)
    assert whole.shape[0] >= 650 and whole.shape[1] >= 1000
    _stop(w, qtbot)
    assert w.thread.outcome == "complete"   # the feed ends normally when asked to stop


def test_plots_stay_bounded_over_an_hour(qtbot):
    # one hour of 10 Hz samples (36 000 per trace) in about two wall seconds
    b = FeedBackend(duration_s=3600, time_scale=2000.0, frame_rate_hz=0.05, frame_shape=(64, 64),
                    sample_interval_s=0.1)
    w = MainWindow(b, analysis=False)
    qtbot.addWidget(w)
    w.show()
    w.start()
    qtbot.waitUntil(lambda: w.state == "done", timeout=30_000)
    w.plots.refresh()
    n = w.plots.traces["voltage"].n_samples
    assert n >= 35_000
    cap = w.plots.capacity
    assert w.plots.point_count() <= 3 * 2 * cap       # three curves, ≤ 2 points per bucket
    assert w.plots.point_count() < n / 5
    # the decimated curve still spans the whole hour and the full voltage range (10–17 V)
    t, v = w.plots.traces["voltage"].curve()
    stride_s = w.plots.traces["voltage"].stride * 0.1   # the last bucket starts up to this early
    assert t[-1] - t[0] > 3600 - stride_s - 1
    assert np.nanmax(v) == pytest.approx(17.0, abs=0.05)
    w.close()


def test_pause_stops_the_flow_and_resume_restarts_it(qtbot):
    b = FeedBackend(duration_s=600, time_scale=1.0, frame_rate_hz=2, frame_shape=(64, 64), sample_interval_s=0.05)
    w = MainWindow(b, analysis=False)
    qtbot.addWidget(w)
    w.show()
    w.start()
    qtbot.waitUntil(lambda: w.plots.traces["voltage"].n_samples > 5, timeout=5000)
    assert w.panel.pause_button.isEnabled()
    w.toggle_pause()
    assert w.state == "paused" and w.panel.pause_button.text() == "Resume"
    qtbot.wait(300)
    n0 = w.plots.traces["voltage"].n_samples
    qtbot.wait(600)
    assert w.plots.traces["voltage"].n_samples == n0
    w.toggle_pause()
    qtbot.waitUntil(lambda: w.plots.traces["voltage"].n_samples > n0 + 5, timeout=5000)
    _stop(w, qtbot)


class _SourceFeed(FeedBackend):
    """A feed that pretends to drive a source, to exercise the close-while-running path."""

    drives_source = True


def test_close_mid_run_asks_then_stops_before_closing(qtbot):
    b = _SourceFeed(duration_s=600, time_scale=1.0, frame_rate_hz=1, frame_shape=(64, 64))
    w = MainWindow(b, analysis=False)
    qtbot.addWidget(w)
    w.show()
    w.start()
    qtbot.waitUntil(lambda: b.producer is not None, timeout=5000)
    assert w.panel.abort_button.isEnabled()           # Abort is live while the source may be on
    asked = []
    w.confirm_close = lambda: asked.append(1) or False
    w.close()
    assert asked and w.isVisible() and w.thread.is_alive()   # operator said no: keeps running
    w.confirm_close = lambda: True
    w.close()
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=10_000)
    assert not w.thread.is_alive()
    assert b.producer.state == "done"


def test_abort_is_disabled_only_when_nothing_runs(qtbot):
    b = _SourceFeed(duration_s=0.5, time_scale=1.0, frame_rate_hz=0)
    w = MainWindow(b, analysis=False)
    qtbot.addWidget(w)
    assert not w.panel.abort_button.isEnabled() and w.panel.start_button.isEnabled()
    w.start()
    assert w.panel.abort_button.isEnabled() and not w.panel.start_button.isEnabled()
    qtbot.waitUntil(lambda: w.state == "done", timeout=5000)
    assert not w.panel.abort_button.isEnabled()


def test_display_keeps_newest_frame_when_frames_arrive_faster_than_the_timer(qtbot):
    b = FeedBackend(duration_s=2.0, time_scale=1.0, frame_rate_hz=100, frame_shape=(128, 128),
                    sample_interval_s=0.1)
    w = MainWindow(b, analysis=False, tick_ms=100)
    qtbot.addWidget(w)

    class Tap:  # sees every frame the producer emits
        last = None

        def put(self, rec):
            Tap.last = rec

    w.queue.frame_slots.append(Tap())
    w.show()
    w.start()
    qtbot.waitUntil(lambda: w.state == "done", timeout=10_000)
    # the last frame shown is the newest one produced (at most one timer tick after the end: the
    # display keeps a backlog of at most one frame)
    qtbot.waitUntil(lambda: w.image._frame is Tap.last, timeout=1000)
    drawn = w.image.n_drawn
    arrived = w.queue.frames.n_put
    assert arrived >= 150
    assert drawn <= arrived / 3                       # stale frames dropped, not queued
    assert w.queue.frames.n_dropped == arrived - drawn and len(w.queue.frames) == 0


def test_live_analysis_shows_differential_and_marks_a_new_seed(qtbot):
    pytest.importorskip("insitu.analysis.pipeline")
    rng = np.random.default_rng(1)
    base = np.full((128, 128), 400.0)
    yy, xx = np.mgrid[0:128, 0:128]
    blob = 300.0 * np.exp(-((xx - 80) ** 2 + (yy - 40) ** 2) / (2 * 2.0 ** 2))   # appears at (x=80, y=40)
    # the analysis takes about every third frame; a change within the first 5 analysed frames
    # is part of the reference (docs/analysis.md), so the blob comes after 16 frames
    frames = [rng.poisson(base).astype(np.uint16) for _ in range(16)]
    frames += [rng.poisson(base + blob).astype(np.uint16) for _ in range(24)]
    b = FeedBackend(duration_s=3.95, time_scale=1.0, frame_rate_hz=10, frames=frames, sample_interval_s=0.1)
    w = MainWindow(b, analysis=True)
    qtbot.addWidget(w)
    w.show()
    w.image.set_mode("Differential")
    w.start()
    qtbot.waitUntil(lambda: w.state == "done", timeout=15_000)
    qtbot.waitUntil(lambda: w.analysis.results.take() is None and len(w.image.seed_item.data) > 0, timeout=5000)
    assert w.analysis.error is None and w.analysis.n_fed >= 4
    xs, ys = w.image.seed_item.data["x"], w.image.seed_item.data["y"]
    table = w.analysis.analyzer.seeds_table()
    np.testing.assert_allclose(np.sort(xs), np.sort(table["x_px"]))  # markers where the analysis put seeds
    np.testing.assert_allclose(np.sort(ys), np.sort(table["y_px"]))
    assert np.hypot(xs - 80, ys - 40).min() < 4.0                 # ... which is on the blob
    assert w.image._diff is not None and w.image.n_drawn > 0
    view = grab_array(w.image.glw).astype(float)
    assert view.std() > 5                                         # the differential view is drawn
    assert any(isinstance(m, list) for m in w.plots._markers)
    seed_lines = [ln for lines in w.plots._markers for _, ln in lines
                  if ln.pen.color().getRgb()[:3] == (90, 230, 120)]
    assert seed_lines                                             # a green seed marker on the plots


def test_differential_view_has_fixed_sigma_levels_and_a_colour_bar(qtbot):
    """Issue 15: the differential view shows calibrated σ on a fixed ±8 σ scale (as the report):
    noise stays dim, a seed stands out, and a colour bar says what the colours mean."""
    from types import SimpleNamespace

    from insitu.gui.image_view import DIFF_SIGMA, LiveImageView

    v = LiveImageView()
    qtbot.addWidget(v)
    v.show()
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1, (128, 128)).astype(np.float32)
    z[60:66, 60:66] += 20.0                                  # a seed at 20 σ
    z[10, 10] = 60.0                                         # one extreme pixel must not rescale the view
    v.set_mode("Differential")
    assert v.color_bar.isVisible()
    v.show_analysis(SimpleNamespace(dx_px=0.0, dy_px=0.0, differential=z, seeds=[]))
    assert v._levels == (-DIFF_SIGMA, DIFF_SIGMA) and DIFF_SIGMA == 8.0
    assert tuple(v.color_bar.levels()) == (-DIFF_SIGMA, DIFF_SIGMA)
    shown = v.image.image.astype(float)                      # 0..255, 127.5 = 0 σ (black)
    noise = np.abs(shown[80:120, 80:120] - 127.5)
    assert np.median(noise) < 0.15 * 127.5                   # |z| ~ 1 of 8: dim
    assert shown[62, 62] >= 250                              # the seed saturates
    v.set_mode("Raw")
    assert not v.color_bar.isVisible()


def test_garbage_is_collected_in_the_gui_thread_only(qtbot):
    """A reference cycle freed while a worker thread allocates: without the GUI-thread collector
    the worker's allocations run the cycle collector there (Qt objects deleted from a worker
    thread crash Qt); with it, the cycle is freed by the GUI thread's timer."""
    import gc
    import threading

    from insitu.gui.app import collect_garbage_in_gui_thread

    collector = collect_garbage_in_gui_thread(interval_s=0.05)
    try:
        where = []

        class Node:
            def __del__(self):
                where.append(threading.current_thread() is threading.main_thread())

        node = Node()
        node.me = node           # a cycle: only the cycle collector frees it
        del node

        kept = []

        def churn():   # container allocations, kept: past the gen-0 threshold many times over
            kept.append([[i] for i in range(300_000)])

        t = threading.Thread(target=churn)
        t.start()
        t.join()
        assert where == []                         # not collected by the worker
        qtbot.waitUntil(lambda: bool(where), timeout=5000)
        assert where == [True]                     # collected in the GUI (main) thread
        kept.clear()
    finally:
        collector.timer.stop()
        gc.enable()
