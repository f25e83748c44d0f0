"""GUI building blocks without a window: bounded traces, queue, sync and rate meters, overlays."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from insitu.gui.decimate import DecimatedTrace
from insitu.gui.status import RateMeter, SyncTracker
from insitu.core.units import format_current, format_duration, format_length, nice_length
from insitu.gui.worker import FrameInfo, LatestSlot, RecordQueue
from insitu.core.records import BiasSample, EventRecord, FrameRecord


def _brute_buckets(y, stride):
    """Independent reference: min/max over consecutive blocks of `stride` samples."""
    n = len(y)
    return [(y[i:i + stride].min(), y[i:i + stride].max()) for i in range(0, n, stride)]


@pytest.mark.parametrize("n", [1, 7, 100, 4096, 10_000, 123_457])
def test_decimated_trace_bounded_and_matches_block_minmax(n):
    rng = np.random.default_rng(n)
    t = np.arange(n) * 0.1
    y = rng.normal(size=n).cumsum()
    tr = DecimatedTrace(capacity=256)
    # feed in irregular batches, as the GUI does
    i = 0
    while i < n:
        k = int(rng.integers(1, 500))
        tr.extend(t[i:i + k], y[i:i + k])
        i += k
    ct, cy = tr.curve()
    assert len(ct) <= 2 * 256
    assert tr.n_samples == n
    # global extremes survive decimation (a current spike must stay visible)
    assert cy.min() == y.min() and cy.max() == y.max()
    ref = _brute_buckets(y, tr.stride)
    if tr.stride == 1:
        np.testing.assert_array_equal(cy, y)
        np.testing.assert_array_equal(ct, t)
    else:
        lo, hi = cy[0::2], cy[1::2]
        np.testing.assert_array_equal(lo, [r[0] for r in ref])
        np.testing.assert_array_equal(hi, [r[1] for r in ref])
        np.testing.assert_array_equal(ct[0::2], t[::tr.stride])


def test_decimated_trace_one_by_one_equals_batch():
    y = np.sin(np.arange(5000) / 30.0)
    a, b = DecimatedTrace(64), DecimatedTrace(64)
    for k, v in enumerate(y):
        a.append(k, v)
    b.extend(np.arange(5000), y)
    for u, v in zip(a.curve(), b.curve()):
        np.testing.assert_array_equal(u, v)


def test_decimated_trace_skips_nan_and_rejects_bad_capacity():
    tr = DecimatedTrace(8)
    tr.extend([0, 1, 2], [1.0, np.nan, 3.0])
    assert tr.curve()[1].tolist() == [1.0, 3.0]
    with pytest.raises(ValueError):
        DecimatedTrace(5)


def test_latest_slot_keeps_newest_and_counts_drops():
    s = LatestSlot()
    for k in range(10):
        s.put(k)
    assert s.take() == 9 and s.take() is None
    assert s.n_dropped == 9


def test_record_queue_frames_newest_only_and_metadata_kept():
    q = RecordQueue()
    extra = LatestSlot()
    q.frame_slots.append(extra)
    data = np.zeros((4, 4), np.uint16)
    for k in range(5):
        q(BiasSample(k, 1.0, 1.0, 1e-9, False))
        q(FrameRecord(k + 0.5, data + k, 1.0, 1e-9, False, 10.0 * k, 5e-9))
    q(EventRecord(6.0, "info", "x"))
    recs = q.drain()
    infos = [r for r in recs if isinstance(r, FrameInfo)]
    assert [r.time_s for r in infos] == [0.5, 1.5, 2.5, 3.5, 4.5]   # every frame's metadata
    assert infos[-1][4] == 40.0                                    # dose
    # pixels: the newest two only (a pair that arrives together is shown over two timer ticks)
    assert q.frames.take().data[0, 0] == 3 and q.frames.take().data[0, 0] == 4 and q.frames.take() is None
    assert extra.take().time_s == 4.5
    assert isinstance(recs[-1], EventRecord) and len(q) == 0


def test_record_queue_never_blocks_producer_while_consumer_sleeps():
    q = RecordQueue(max_records=1000)
    frame = np.zeros((1024, 1024), np.uint16)
    t0 = time.perf_counter()
    for k in range(2000):   # nobody drains: backlog is bounded, producer is not slowed
        q(FrameRecord(k, frame, 0, 0, False, 0, 1e-9))
    dt = time.perf_counter() - t0
    assert len(q) == 1000
    assert dt < 0.5


def test_sync_tracker_measures_frame_lag_on_a_ramp():
    s = SyncTracker()
    for k in range(100):
        s.add_bias(0.1 * k, 2.0 * 0.1 * k)           # 2 V/s ramp sampled at 10 Hz
    for k in range(1, 50):
        t = 0.1 * k + 0.03
        s.add_frame(t, 2.0 * (t - 0.05))              # frames carry the bias of 50 ms earlier
    dt, dv = s.worst()
    assert dt == pytest.approx(0.03, abs=1e-9)
    assert dv == pytest.approx(0.1, abs=1e-9)         # 50 ms × 2 V/s


def test_sync_tracker_waits_for_the_log_to_pass_the_frame():
    s = SyncTracker()
    s.add_bias(0.0, 0.0)
    s.add_frame(0.5, 0.0)
    assert np.isnan(s.worst()[0])
    s.add_bias(1.0, 0.0)
    assert s.worst()[0] == pytest.approx(0.5)


def test_rate_meter():
    m = RateMeter(window_s=2.0)
    for k in range(21):
        m.tick(now=100 + 0.1 * k)
    assert m.rate(now=102.0) == pytest.approx(10.0)
    assert m.rate(now=110.0) == 0.0


def test_units():
    assert format_length(2e-7) == "200 nm"
    assert format_current(-3.4e-7) == "-340 nA"
    assert format_current(0) == "0 A"
    assert nice_length(730e-9) == 5e-7
    assert nice_length(0.19) == 0.1
    assert format_duration(3725) == "1:02:05"


def test_overlay_builders():
    from insitu.gui.image_view import auto_levels, boundary_rgba, electrodes_rgba, seed_positions

    rgba = boundary_rgba((10, 12), [1, 2], [3, 4], values=[0.0, 5.0])
    assert rgba.shape == (10, 12, 4) and rgba[..., 3].sum() == 2 * 230
    assert tuple(rgba[1, 3, :3]) != tuple(rgba[2, 4, :3])        # coloured by value
    el = electrodes_rgba({"top": np.eye(5, dtype=bool)})
    assert el[..., 3].astype(bool).sum() == 5
    x, y, s = seed_positions({"x_px": [1, 2], "y_px": [3, 4], "sign": [1, -1]})
    assert x.tolist() == [1, 2] and s.tolist() == [1, -1]

    class S:
        x_px, y_px, sign = 5.0, 6.0, -1

    assert [a.tolist() for a in seed_positions([S()])] == [[5.0], [6.0], [-1.0]]
    a = np.arange(1_000_000, dtype=float).reshape(1000, 1000)
    lo, hi = auto_levels(a, 1, 99)
    # a subsample of every 3rd row/column: within 3 rows (3000) of the full-image percentiles
    assert lo == pytest.approx(np.percentile(a, 1), abs=3000)
    assert hi == pytest.approx(np.percentile(a, 99), abs=3000)


def test_source_thread_outcomes_and_stop_before_start():
    from insitu.core.errors import InstrumentError, StoppedEarly
    from insitu.gui.backends import FeedBackend
    from insitu.gui.worker import SourceThread

    def boom():
        raise InstrumentError("bad")

    def stopped():
        raise StoppedEarly("short")

    done = []
    for fn, expect in ((lambda: "complete", "complete"), (boom, "fault"), (stopped, "aborted")):
        th = SourceThread(fn, lambda: None, finish=done.append)
        th.start()
        th.join(5)
        assert th.outcome == expect
    assert done == ["complete", "fault", "aborted"]
    # a stop requested before the producer exists is passed on when it appears
    b = FeedBackend(duration_s=100.0, time_scale=1.0, frame_rate_hz=0)
    b.stop("early")
    ev = threading.Event()
    th = SourceThread(lambda: b.run([lambda r: None]), b.stop, finish=lambda o: ev.set())
    t0 = time.monotonic()
    th.start()
    th.join(5)
    assert ev.is_set() and time.monotonic() - t0 < 2.0


def test_gb_overlay_values_follow_the_gb_table():
    from insitu.analysis.transport.lamella import voronoi_lamella
    from insitu.analysis.transport.microstructure import boundary_pixels
    from insitu.gui.overlays import overlay_from

    m = voronoi_lamella((64, 64), n_grains=8, seed=3)
    bp = boundary_pixels(m.grains)
    pairs = sorted(set(zip(bp["grain_a"].tolist(), bp["grain_b"].tolist())))
    rng = np.random.default_rng(0)
    jump = {p: float(rng.uniform(1, 10)) for p in pairs[1:]}          # one pair left out of the table
    # the table lists pairs in either order, as a simulator may
    table = {"grain_a": np.array([b for a, b in jump]), "grain_b": np.array([a for a, b in jump]),
             "jump": np.array(list(jump.values()))}
    ov = overlay_from(m, table)
    assert ov.shape == m.grains.shape and set(ov.electrodes) == set(m.electrodes)
    expect = np.array([jump.get((a, b), np.nan) for a, b in zip(bp["grain_a"], bp["grain_b"])])
    np.testing.assert_array_equal(ov.gb_value, expect)
    assert np.isnan(ov.gb_value).any() and np.isfinite(ov.gb_value).any()
    # faces are drawn on the grain_a side: that pixel belongs to grain_a
    assert (m.grains[ov.gb_y, ov.gb_x] == bp["grain_a"]).all()


def test_display_mapping_binning_and_steady_levels():
    from insitu.gui.image_view import bin2, settle_levels, to_display_uint8

    a = np.array([[0, 50, 100, 150, 200, 65535]], np.uint16)
    np.testing.assert_array_equal(to_display_uint8(a, (50, 150)), [[0, 0, 127, 255, 255, 255]])
    f = np.array([[-1.0, 0.0, 0.5, 2.0]], np.float32)
    np.testing.assert_array_equal(to_display_uint8(f, (0, 1)), [[0, 0, 127, 255]])
    rng = np.random.default_rng(0)
    img = rng.integers(0, 4000, (65, 64)).astype(np.uint16)
    b = bin2(img)
    ref = img[:64].reshape(32, 2, 32, 2).astype(np.int64).sum(axis=(1, 3)) // 4   # independent 2×2 mean
    assert b.dtype == np.uint16 and b.shape == (32, 32)
    np.testing.assert_array_equal(b, ref)
    assert settle_levels(None, (1, 2)) == (1, 2)
    assert settle_levels((0, 100), (2, 99)) == (0, 100)          # small drift: keep
    assert settle_levels((0, 100), (0, 110)) == (0, 110)         # real change: follow


def test_protocol_timeline_helpers():
    from types import SimpleNamespace as S

    from insitu.gui.protocol_panel import beam_on_spans, segment_at, timeline_curve

    segs = [S(t_start_s=0, t_end_s=10, v_start_V=0, v_end_V=5, blanked=True, label="ramp", step_index=0),
            S(t_start_s=10, t_end_s=30, v_start_V=5, v_end_V=5, blanked=False, label="hold", step_index=1),
            S(t_start_s=30, t_end_s=40, v_start_V=5, v_end_V=0, blanked=False, label="down", step_index=2)]
    tl = S(segments=segs)
    assert [segment_at(tl, t) for t in (-1, 0, 9.9, 10, 35, 40, 99)] == [-1, 0, 0, 1, 2, 2, 2]
    t, v = timeline_curve(tl)
    assert t.tolist() == [0, 10, 10, 30, 30, 40] and v.tolist() == [0, 5, 5, 5, 5, 0]
    assert beam_on_spans(tl) == [(10.0, 40.0)]


def test_real_protocol_expands_for_the_panel():
    pytest.importorskip("insitu.control.protocol")
    from pathlib import Path

    from insitu.gui.protocol_panel import beam_on_spans, segment_at, timeline_curve
    from insitu.control.protocol import expand, load_protocol

    path = Path(__file__).resolve().parents[1] / "examples" / "ding2023.yaml"
    if not path.is_file():
        pytest.skip("examples/ding2023.yaml not there yet")
    tl = expand(load_protocol(path))
    t, v = timeline_curve(tl)
    assert t[0] == 0 and t[-1] == pytest.approx(tl.duration_s)
    assert np.abs(v).max() == pytest.approx(tl.peak_abs_V)
    spans = beam_on_spans(tl)
    assert sum(b - a for a, b in spans) == pytest.approx(tl.beam_on_s)
    assert segment_at(tl, tl.duration_s / 2) >= 0


def test_empty_current_plot_is_labelled_in_the_experiments_units(qtbot):
    """Before any sample the current axis reads ±1 µA (was pyqtgraph's 0..1 A: 'current (mA)' to 1000)."""
    from insitu.gui.plots import TracePlots

    p = TracePlots()
    qtbot.addWidget(p)
    p.resize(800, 400)
    p.show()
    axis = p.i_plot.getAxis("left")
    assert "(µA)" in axis.labelString()
    assert p.i_plot.viewRange()[1] == pytest.approx([-1e-6, 1e-6])
    p.add_samples(np.arange(10.0), np.ones(10), np.ones(10), np.linspace(1e-9, 3e-9, 10))
    p.refresh()
    qtbot.waitUntil(lambda: "(nA)" in axis.labelString(), timeout=3000)    # data: auto range again
    lo, hi = p.i_plot.viewRange()[1]
    assert lo < 1.1e-9 and 2.9e-9 < hi < 1e-8
    p.clear()
    assert p.i_plot.viewRange()[1] == pytest.approx([-1e-6, 1e-6])
