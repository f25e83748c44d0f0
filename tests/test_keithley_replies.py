"""Bad replies never become numbers: 9.91e37, NaN, garbage, short replies, timeouts, error-queue entries."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from insitu.drivers.keithley import Keithley2400, Keithley2450
from insitu.drivers.scpi import fmt, parse_bool, parse_error, parse_number, parse_numbers
from insitu.core.errors import ConnectionLost, InstrumentError
from scpi_emulator import Emulator2450

READ_2450 = ':READ? "defbuffer1", READ, SOUR, REL'


@pytest.fixture(params=["2450", "2400"])
def running(request):
    """A configured source-meter with the output on at 4 V, and its emulator."""
    model = request.param
    emu = Emulator2450(model=model)
    emu.start()
    cls = Keithley2450 if model == "2450" else Keithley2400
    sm = cls.connect(emu.resource, timeout_s=0.3)
    sm.configure(1e-6, 20.0)
    sm.output = True
    sm.set_voltage(4.0)
    yield model, emu, sm
    sm.close()
    emu.stop()


def _read_cmd(model):
    return READ_2450 if model == "2450" else ":READ?"


GOOD = {"2450": ["+8.0E-08", "+4.0E+00", "+1.0E+00"], "2400": ["+4.0E+00", "+8.0E-08", "+9.91E+37", "+1.0E+00", "+4.0E+00"]}
CURRENT_INDEX = {"2450": 0, "2400": 1}


@pytest.mark.parametrize("bad, match", [
    ("+9.910000E+37", "no value"),
    ("NaN", "no valid value"),
    ("nan", "no valid value"),
    ("-INF", "no valid value"),
    ("1.2.3", "not a number"),
    ("", "not a number"),
])
def test_bad_current_field_raises(running, bad, match):
    model, emu, sm = running
    fields = list(GOOD[model])
    fields[CURRENT_INDEX[model]] = bad
    emu.override(_read_cmd(model), ",".join(fields))
    with pytest.raises(InstrumentError, match=match) as exc:
        sm.measure()
    assert _read_cmd(model) in str(exc.value)
    # the next, good reading is fine again (the stream stayed in step)
    m = sm.measure()
    assert m.current_A == pytest.approx(8e-8)


@pytest.mark.parametrize("reply", ["+8.0E-08,+4.0E+00", "+8.0E-08", "garbage", "1,2,3,4,5,6"])
def test_wrong_number_of_fields_raises(running, reply):
    model, emu, sm = running
    emu.override(_read_cmd(model), reply)
    with pytest.raises(InstrumentError, match="expected|not a number"):
        sm.measure()


def test_timeout_is_connection_lost_naming_command(running):
    model, emu, sm = running
    emu.override(_read_cmd(model), None)          # the instrument says nothing
    with pytest.raises(ConnectionLost) as exc:
        sm.measure()
    msg = str(exc.value)
    assert "timeout" in msg and emu.resource in msg and _read_cmd(model) in msg


def test_2450_garbage_compliance_state_raises():
    with Emulator2450() as emu:
        sm = Keithley2450.connect(emu.resource, timeout_s=0.5)
        sm.configure(1e-6, 20.0)
        sm.output = True
        emu.override(":SOUR:VOLT:ILIM:TRIP?", "maybe")
        with pytest.raises(InstrumentError, match="ILIM:TRIP"):
            sm.measure()
        sm.close()


@pytest.mark.parametrize("status, hit", [(4, False), (12, True), (8, True), (4 | 16, False)])
def test_2400_compliance_is_bit_3_of_the_status_word(status, hit):
    with Emulator2450(model="2400") as emu:
        sm = Keithley2400.connect(emu.resource, timeout_s=0.5)
        sm.configure(1e-6, 20.0)
        sm.output = True
        emu.override(":READ?", f"+4.0E+00,+8.0E-08,+9.91E+37,+1.0E+00,{float(status):+.6E}")
        assert sm.measure().compliance_hit is hit
        sm.close()


@pytest.mark.parametrize("status", ["+1.000000E+00", "-4", "4.5"])
def test_2400_overflow_or_bad_status_word_raises(status):
    with Emulator2450(model="2400") as emu:
        sm = Keithley2400.connect(emu.resource, timeout_s=0.5)
        sm.configure(1e-6, 20.0)
        sm.output = True
        emu.override(":READ?", f"+4.0E+00,+8.0E-08,+9.91E+37,+1.0E+00,{status}")
        with pytest.raises(InstrumentError, match="status|OFLO"):
            sm.measure()
        sm.close()


def test_error_queue_entry_after_set_voltage_names_the_command():
    with Emulator2450() as emu:
        sm = Keithley2450.connect(emu.resource, timeout_s=0.5)
        sm.configure(1e-6, 20.0)
        emu.override("SYST:ERR?", '5074,"Interlock tripped"')
        with pytest.raises(InstrumentError) as exc:
            sm.set_voltage(3.0)
        assert ":SOUR:VOLT:LEV 3.000000e+00" in str(exc.value) and "5074" in str(exc.value)
        sm.close()


def test_garbage_idn_is_wrong_model():
    with Emulator2450(idn="\x01\x02garbage") as emu:
        with pytest.raises(InstrumentError, match="expected a Keithley 2450"):
            Keithley2450.connect(emu.resource, timeout_s=0.5)


# ----------------------------------------------------------------------------- pure parsing
def test_parse_error_formats():
    assert parse_error('0,"No error"', what="e") == (0, "No error")
    assert parse_error('-222,"Parameter data out of range;1;2026/11/27 08:00:00.000"', what="e") == \
        (-222, "Parameter data out of range")
    with pytest.raises(InstrumentError):
        parse_error("OK", what="e")


def test_parse_bool_and_numbers_are_strict():
    assert parse_bool("+1.000000E+00", what="x") is True
    for bad in ("2", "yes", ""):
        with pytest.raises(InstrumentError):
            parse_bool(bad, what="x")
    assert parse_numbers(" 1e-7 , -2 ,3", 3, what="x") == [1e-7, -2.0, 3.0]
    with pytest.raises(InstrumentError, match="expected 2"):
        parse_numbers("1,2,3", 2, what="x")
    with pytest.raises(InstrumentError):
        parse_number("-9.91e37", what="x")


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=1e-15, max_value=210.0), st.sampled_from([1.0, -1.0]))
def test_fmt_keeps_small_values(x, sign):
    v = sign * x
    text = fmt(v)
    assert "e" in text
    back = float(text)
    assert back != 0.0 and math.isclose(back, v, rel_tol=1e-6)


def test_fmt_refuses_non_finite():
    with pytest.raises(ValueError):
        fmt(float("nan"))


@pytest.mark.parametrize("value", [2.4873495242942782, 17.5 - 1e-12, 1e-6 - 1e-17, -9.9999996, 3.33333349e-7])
def test_numbers_go_out_rounded_toward_zero(value):
    """A level at max_voltage or a limit at the compliance must not go out larger on the wire
    (found by the property test: 2.4873495242942782 V was sent as 2.487350 V)."""
    sent = float(fmt(value))
    assert abs(sent) <= abs(value)
    assert abs(value) - abs(sent) <= 1e-6 * abs(value)
