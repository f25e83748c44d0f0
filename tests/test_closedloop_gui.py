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
