"""Frames lost on the way to the file reach the operator: the engine's progress records carry the count
and the GUI's status bar shows it in red (issue 17: "say so and count it ... a status field")."""
from __future__ import annotations

import pytest

from insitu.control.engine import Engine
from insitu.control.protocol import parse_protocol
from insitu.core.clock import Clock
from insitu.core.records import ProgressRecord
from insitu.drivers.interfaces import Instruments
from insitu.drivers.mock import MockBeamBlanker, MockSourceMeter

PROTO = ("limits: {max_voltage: 5, compliance_current: 1.0e-6, max_slew_rate: 1.0}\n"
         "sample_interval: 0.1\nsteps:\n  - ramp: {to: 1}\n  - hold: {duration: 2}\n  - ramp: {to: 0}\n")


class DroppingRecorder:
    """A sink like the session writer after it had to drop frames."""

    def __init__(self, dropped: int):
        self.frames_dropped = dropped
        self.records = []

    def write(self, rec) -> None:
        self.records.append(rec)


def test_progress_records_and_status_line_carry_the_frames_lost():
    clock = Clock(50.0)
    inst = Instruments(MockSourceMeter(clock=clock), MockBeamBlanker(), None, clock)
    rec = DroppingRecorder(dropped=0)
    eng = Engine(parse_protocol(PROTO), inst, [rec.write])
    lines = []

    def drop_midway(r):
        if isinstance(r, ProgressRecord) and r.elapsed_s > 1.5:
            rec.frames_dropped = 3
            lines.append(eng.status_line())

    eng.sinks.append(drop_midway)
    eng.run()
    prog = [r for r in rec.records if isinstance(r, ProgressRecord)]
    assert prog and prog[0].frames_dropped == 0
    assert prog[-1].frames_dropped == 3
    assert lines and "FRAMES DROPPED 3" in lines[-1]


def test_status_bar_shows_lost_frames_in_red_only_when_there_are_some(qtbot):
    from insitu.gui.status import StatusBar

    bar = StatusBar()
    qtbot.addWidget(bar)
    bar.set_lost_frames(0)
    assert bar.lost.isHidden() and bar.lost.text() == ""
    bar.set_lost_frames(3)
    assert not bar.lost.isHidden() and bar.lost.text() == "3 frames NOT RECORDED"
    bar.set_lost_frames(1)
    assert bar.lost.text() == "1 frame NOT RECORDED"
