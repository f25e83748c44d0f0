"""The GUI's closed-loop box (issue 20): armed rules, the moment one fired, Disarm and Resume (pytest-qt)."""
from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from insitu.control.protocol import parse_protocol  # noqa: E402
from insitu.core.records import SeedRecord  # noqa: E402
from test_gui_engine import make_window  # noqa: E402

CLOSED_LOOP = """
name: gui-closed-loop
limits: {max_voltage: 6.0, compliance_current: 1.0e-3, max_slew_rate: 2.0}
sample_interval: 0.1
on_seed: hold
steps:
  - beam: unblank
  - ramp: {to: 2.0, rate: 2.0}
  - hold: {duration: 600, until: {seeds: 2}}
  - ramp: {to: 0.0}
"""


def test_rules_box_shows_armed_rules_fires_and_disarms(qtbot, tmp_path):
    b, w = make_window(qtbot, tmp_path, CLOSED_LOOP)
    box = w.panel.rules_box
    assert box.isVisible() and "on_seed: hold" in box.armed_label.text()
    assert "until seeds >= 2" in box.armed_label.text()
    w.start()
    qtbot.waitUntil(lambda: b.engine is not None and b.engine.state == "running" and
                    "until" in b.engine.armed(), timeout=10_000)
    eng = b.engine
    qtbot.waitUntil(lambda: "this step: until seeds >= 2" in box.armed_label.text(), timeout=5000)
    assert box.disarm_until_button.isEnabled() and box.disarm_seed_button.isEnabled()
    assert not box.resume_button.isEnabled()
    # a confirmed seed: on_seed hold fires, the protocol clock stops, Resume is offered
    eng.post_seed(SeedRecord(0.0, 7, 10.0, 12.0, 3, 4, b.instruments.clock.now()))
    qtbot.waitUntil(lambda: "FIRED" in box.fired_label.text(), timeout=5000)
    assert "on_seed hold met by seed 7 (frame 4)" in box.fired_label.text()
    qtbot.waitUntil(lambda: box.resume_button.isEnabled(), timeout=5000)
    assert eng.state == "held"
    qtbot.mouseClick(box.resume_button, 1)
    qtbot.waitUntil(lambda: eng.state == "running", timeout=5000)
    # the operator disarms the step's until: a second seed no longer ends the hold
    qtbot.mouseClick(box.disarm_until_button, 1)
    assert "until" not in eng.armed()
    qtbot.mouseClick(box.disarm_seed_button, 1)
    assert eng.armed() == {}
    eng.post_seed(SeedRecord(0.0, 8, 30.0, 12.0, 5, 6, b.instruments.clock.now()))
    qtbot.wait(500)
    assert eng.state == "running" and [t.rule for t in eng.triggers] == ["on_seed hold"]
    qtbot.waitUntil(lambda: "ARMED  nothing" in box.armed_label.text(), timeout=5000)
    w.abort()
    qtbot.waitUntil(lambda: w.state == "done", timeout=10_000)
    assert not b.instruments.source_meter.read_state().output_on


def test_rules_box_is_hidden_for_a_fixed_timeline(qtbot, tmp_path):
    b, w = make_window(qtbot, tmp_path)
    assert not w.panel.rules_box.isVisible()
    assert parse_protocol(CLOSED_LOOP).on_seed == "hold"


SHORT_CLOSED_LOOP = """
name: gui-closed-loop-short
limits: {max_voltage: 6.0, compliance_current: 1.0e-3, max_slew_rate: 2.0}
sample_interval: 0.1
steps:
  - beam: unblank
  - ramp: {to: 1.0, rate: 2.0}
  - hold: {duration: 3.5, until: {seeds: 5}}
  - ramp: {to: 0.0}
"""


def _count_feeds(monkeypatch):
    """Record (analyzer, frame time) of every LiveAnalyzer.feed call, from any thread."""
    import threading

    from insitu.analysis.pipeline import LiveAnalyzer

    calls, lock = [], threading.Lock()
    feed = LiveAnalyzer.feed

    def counting(self, frame, time_s):
        with lock:
            calls.append((id(self), float(time_s)))
        return feed(self, frame, time_s)

    monkeypatch.setattr(LiveAnalyzer, "feed", counting)
    return calls


def _engine_window(qtbot, tmp_path, text):
    from insitu.control.config import MOCK_TOML, parse_instruments
    from insitu.control.protocol import expand
    from insitu.gui.app import MainWindow
    from insitu.gui.backends import EngineBackend
    from test_gui_engine import plain_mocks

    protocol = parse_protocol(text)
    b = EngineBackend(parse_instruments(MOCK_TOML), MOCK_TOML, protocol, tmp_path / "s.h5",
                      open_instruments=plain_mocks)
    w = MainWindow(b, protocol=protocol, timeline=expand(protocol), analysis=True)
    qtbot.addWidget(w)
    w.show()
    w.image.set_mode("Differential")
    return b, w


def test_closed_loop_run_analyses_each_frame_once_and_the_view_shows_it(qtbot, tmp_path, monkeypatch):
    """A closed-loop run's seed watcher analyses every recorded frame; the window's live view shows
    its results instead of feeding the same frames to a second detector (2 cores: twice the cost)."""
    from collections import Counter

    calls = _count_feeds(monkeypatch)
    b, w = _engine_window(qtbot, tmp_path, SHORT_CLOSED_LOOP)
    w.start()
    qtbot.waitUntil(lambda: w.state == "done", timeout=30_000)
    assert w.thread.outcome == "complete"
    n_frames = w.queue.frames.n_put                        # every frame the run recorded
    assert n_frames >= 10
    # the watcher may still be working through its queue (the first frames load the compiled
    # kernels, or compile them on a cold numba cache, when the runner stops waiting for it after
    # 5 s): wait until every frame is analysed or no more come for 3 s
    import time

    last, still, deadline = -1, 0, time.monotonic() + 60
    while len(calls) < n_frames and still < 10 and time.monotonic() < deadline:
        qtbot.wait(300)
        still, last = (still + 1 if len(calls) == last else 0), len(calls)
    per_frame = Counter(t for _, t in calls)
    assert max(per_frame.values()) == 1, f"frames analysed twice: {sum(v > 1 for v in per_frame.values())}"
    assert 3 <= len(calls) <= n_frames                     # the watcher's analysis, of recorded frames
    assert len({a for a, _ in calls}) == 1                 # by one detector
    # ... and the window's view shows that detector's results (off the Qt thread, nothing analysed there)
    assert w.analysis.error is None and w.analysis.n_fed == 0 and w.analysis.n_shared > 0
    assert id(w.analysis.analyzer) == calls[0][0]
    qtbot.waitUntil(lambda: w.image._diff is not None, timeout=5000)


def test_fixed_timeline_run_keeps_its_own_live_analysis(qtbot, tmp_path, monkeypatch):
    """Without seed rules no watcher runs: the window's analysis thread analyses the newest frames."""
    calls = _count_feeds(monkeypatch)
    b, w = _engine_window(qtbot, tmp_path, SHORT_CLOSED_LOOP.replace(", until: {seeds: 5}", ""))
    w.start()
    qtbot.waitUntil(lambda: w.state == "done", timeout=30_000)
    assert w.thread.outcome == "complete"
    assert w.analysis.error is None and w.analysis.n_fed >= 3 and w.analysis.n_shared == 0
    assert len(calls) == w.analysis.n_fed and len({a for a, _ in calls}) == 1
    assert len(calls) < w.queue.frames.n_put              # the newest frame, at most 4 per second
    qtbot.waitUntil(lambda: w.image._diff is not None, timeout=5000)
