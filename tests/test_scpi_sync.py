"""Replies stay in step with their queries; SCPI traffic is logged; the limit and ramp-down allowances of the driver.

Issue 18: one stray reply line used to shift every later answer by one. The transport now discards input that
no query asked for before each query, and re-queries once when a reply has the wrong form and stray lines are
found behind it.
"""
from __future__ import annotations

import logging

import pytest

from insitu.drivers.keithley import Keithley2400, Keithley2450
from insitu.core.errors import InstrumentError


@pytest.fixture(params=["2450", "2400"])
def running(request, emulator):
    """A configured source-meter with the output on at 1 V (2.5 V range, 1 µA limit), and its emulator."""
    model = request.param
    emu = emulator(model=model)
    cls = Keithley2450 if model == "2450" else Keithley2400
    sm = cls.connect(emu.resource, timeout_s=0.5)
    sm.configure(1e-6, 2.5)
    sm.output = True
    sm.set_voltage(1.0)
    yield emu, sm
    sm.close()


def test_a_stray_line_before_a_query_is_discarded_not_taken_for_the_answer(running):
    emu, sm = running
    emu.extra_reply_line(":OUTP?", "+7.000000E+00")       # sent right after the reply to the next :OUTP?
    assert sm.output is True
    state = sm.read_state()                               # old driver: :OUTP? -> '+7...' refused, then shifted
    assert state.output_on is True and state.level_V == pytest.approx(1.0)
    assert state.current_limit_A == pytest.approx(1e-6)
    notes = sm.take_notices()
    assert len(notes) == 1 and "'+7.000000E+00'" in notes[0] and emu.resource in notes[0]
    assert sm.take_notices() == []


def test_a_reply_taken_from_a_stray_line_is_re_queried(running):
    """The stray line arrives first, in the same reply: it is refused by the form check (not an error-queue
    entry), the real reply behind it is cleared, and the query is sent again."""
    emu, sm = running
    emu.override("SYST:ERR?", '+1.390000E+00\n0,"No error"')
    sm.set_voltage(0.5)                                    # old driver: "not an error-queue entry" and out of step
    assert emu.level_V == 0.5
    assert [c for c in emu.commands()[-3:]].count("SYST:ERR?") == 2
    assert sm.read_state().level_V == pytest.approx(0.5)
    assert len(sm.take_notices()) == 1


def test_a_reply_that_stays_wrong_after_the_re_query_raises_saying_out_of_step(running):
    emu, sm = running
    emu.override(":OUTP?", "garbage\nmore garbage", count=2)
    with pytest.raises(InstrumentError, match="out of step") as exc:
        sm.output
    assert ":OUTP?" in str(exc.value) and "\n" not in str(exc.value)
    assert sm.output is True                                # and the stream is in step again


def test_a_bad_reply_with_nothing_behind_it_is_not_re_queried(running):
    emu, sm = running
    emu.override(":OUTP?", "maybe")
    with pytest.raises(InstrumentError, match="expected 0/1/ON/OFF"):
        sm.output
    assert [c for c in emu.commands()].count(":OUTP?") == 2   # the configure-time one and this one: no re-query


def test_scpi_traffic_is_logged_at_debug_on_insitu_drivers(emulator, caplog):
    emu = emulator()
    with caplog.at_level(logging.DEBUG, logger="insitu.drivers"):
        sm = Keithley2450.connect(emu.resource, timeout_s=0.5)
        sm.close()
    msgs = [r.getMessage() for r in caplog.records if r.name == "insitu.drivers"]
    assert any(m.endswith("-> '*IDN?'") for m in msgs)
    assert any("<- 'KEITHLEY INSTRUMENTS,MODEL 2450" in m for m in msgs)
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "insitu.drivers")


def test_set_current_limit_changes_only_the_limit_and_reads_it_back(emulator):
    emu = emulator(initial_output=True, initial_level=3.0, initial_limit=1e-4)
    sm = Keithley2450.connect(emu.resource, timeout_s=0.5)
    emu.clear_log()
    sm.set_current_limit(1e-6)
    assert emu.limit_A == pytest.approx(1e-6) and emu.output is True and emu.level_V == 3.0
    assert [k for _, k, _ in emu.state_changing_commands()] == ["limit"]
    with pytest.raises(InstrumentError, match="outside 1e-09..1.05 A"):
        sm.set_current_limit(1e-15)
    assert [k for _, k, _ in emu.state_changing_commands()] == ["limit"]   # nothing sent
    sm.close()


def test_set_voltage_may_ramp_down_from_a_level_read_back_beyond_the_range(running):
    emu, sm = running
    with pytest.raises(InstrumentError, match="outside the ±2.5 V range"):
        sm.set_voltage(9.5)
    emu.front_panel_level(10.0)                             # someone else sets 10 V
    assert sm.read_state().level_V == 10.0
    with pytest.raises(InstrumentError, match="outside"):
        sm.set_voltage(-9.5)                                # the other sign is no ramp down
    with pytest.raises(InstrumentError, match="outside"):
        sm.set_voltage(10.5)                                # above the level found
    sm.set_voltage(9.5)
    assert emu.level_V == 9.5
    with pytest.raises(InstrumentError, match="outside"):
        sm.set_voltage(9.8)                                 # the allowance shrinks with every step down
    sm.set_voltage(2.0)
    with pytest.raises(InstrumentError, match="outside"):
        sm.set_voltage(3.0)                                 # back within the range: the range holds again
    assert emu.level_V == 2.0
