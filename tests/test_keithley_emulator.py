"""Keithley drivers against the strict SCPI emulator through pyvisa-py on a loopback TCP socket."""
from __future__ import annotations

import math

import pytest

from insitu.core.clock import Clock
from insitu.drivers.interfaces import SourceMeter, SourceState
from insitu.drivers.keithley import Keithley2400, Keithley2450
from insitu.core.errors import ConnectionLost, InstrumentError

DRIVERS = {"2450": Keithley2450, "2400": Keithley2400}


def _raw(emu):
    import pyvisa

    rm = pyvisa.ResourceManager("@py")
    return rm.open_resource(emu.resource, read_termination="\n", write_termination="\n", timeout=1000)


# ----------------------------------------------------------------------------- the emulator itself
def test_emulator_long_and_short_forms_are_the_same_header(emulator):
    emu = emulator()
    inst = _raw(emu)
    try:
        inst.write(":SOURce:VOLTage:LEVel:IMMediate:AMPLitude 1.5")
        assert float(inst.query(":SOUR:VOLT:LEV?")) == 1.5
        inst.write(":sour:volt 2.5")                      # case-insensitive, optional [:LEVel]
        assert float(inst.query(":SOURce1:VOLTage?")) == 2.5
        inst.write(":OUTPut:STATe ON")
        assert inst.query(":OUTP?") == "1"
        assert inst.query("SYST:ERR?") == '0,"No error"'
        # neither long nor short form: undefined, and nothing changes
        inst.write(":SOURC:VOLT 7")
        inst.write(":SOUR:VOLTAG 7")
        assert inst.query(":SYSTem:ERRor:NEXT?") == '-113,"Undefined header"'
        assert inst.query("SYST:ERR?") == '-113,"Undefined header"'
        assert inst.query("SYST:ERR?") == '0,"No error"'
        assert emu.level_V == 2.5
    finally:
        inst.close()


def test_emulator_queues_range_and_type_errors_and_resolves_compound_paths(emulator):
    emu = emulator()
    inst = _raw(emu)
    try:
        inst.write(":SOUR:VOLT:ILIM 2")            # > 1.05 A
        inst.write(":SOUR:VOLT:LEV abc")
        inst.write(":SOUR:VOLT:ILIM")
        codes = [inst.query("SYST:ERR?").split(",")[0] for _ in range(4)]
        assert codes == ["-222", "-104", "-109", "0"]
        assert emu.limit_A == pytest.approx(1.05e-4)
        # relative header after ';' continues at the previous level (SCPI-99)
        inst.write(":SOUR:VOLT:RANG 20;LEV 4")
        assert inst.query("*OPC?") == "1"             # sync: the write has been executed
        assert emu.level_V == 4.0 and emu.range_V == 20.0 and not emu.range_auto
        assert inst.query("SYST:ERR?") == '0,"No error"'
    finally:
        inst.close()


# ----------------------------------------------------------------------------- connecting
@pytest.mark.parametrize("model", ["2450", "2400"])
def test_connect_reads_found_state_and_changes_nothing(emulator, model):
    emu = emulator(initial_output=True, initial_level=3.0, model=model, initial_limit=2e-6)
    sm = DRIVERS[model].connect(emu.resource, timeout_s=1.0)
    try:
        assert isinstance(sm, SourceMeter)
        assert sm.found == SourceState(True, 3.0, 2e-6)
        assert sm.read_state() == SourceState(True, 3.0, 2e-6)
        assert sm.output is True
        assert f"MODEL {model}" in sm.idn
    finally:
        sm.close()
    assert emu.state_changing_commands() == []
    assert all("?" in c for c in emu.commands()), emu.commands()   # only queries were sent
    assert emu.output and emu.level_V == 3.0


@pytest.mark.parametrize("configured, actual", [("2450", "2400"), ("2400", "2450")])
def test_wrong_model_names_resource_and_what_was_found(emulator, configured, actual):
    emu = emulator(model=actual)
    with pytest.raises(InstrumentError) as exc:
        DRIVERS[configured].connect(emu.resource, timeout_s=1.0)
    msg = str(exc.value)
    assert emu.resource in msg and f"MODEL {actual}" in msg and f"Keithley {configured}" in msg
    assert emu.state_changing_commands() == []


def test_2450_in_tsp_mode_is_refused(emulator):
    emu = emulator()
    emu.lang = "TSP"
    with pytest.raises(InstrumentError, match="TSP"):
        Keithley2450.connect(emu.resource, timeout_s=1.0)


def test_unreachable_port_is_connection_lost_naming_resource():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    res = f"TCPIP0::127.0.0.1::{port}::SOCKET"
    with pytest.raises(ConnectionLost) as exc:
        Keithley2450.connect(res, timeout_s=0.5)
    assert res in str(exc.value) and "\n" not in str(exc.value)


# ----------------------------------------------------------------------------- configuring
@pytest.mark.parametrize("model", ["2450", "2400"])
def test_configure_sets_instrument_with_empty_error_queue(emulator, model):
    emu = emulator(model=model)
    sm = DRIVERS[model].connect(emu.resource, timeout_s=1.0)
    try:
        sm.configure(compliance_current=1e-7, voltage_range=20.0, nplc=2.0)
        assert emu.limit_A == pytest.approx(1e-7)
        assert emu.range_V == 20.0 and not emu.range_auto
        assert emu.nplc == 2.0 and emu.source_function == "VOLT" and emu.sense_function == "CURR"
        assert list(emu.errors) == []
        assert sm.stale_errors == []
        # sub-µA values go out in exponent form, never as 0.000000
        limit_cmds = [c for c in emu.commands() if ("ILIM " in c or "PROT " in c)]
        assert limit_cmds and all("e-07" in c for c in limit_cmds)
        # configure never switches the output on, nor moves the level, nor resets
        assert emu.output_changes() == [] and emu.level_changes() == []
        assert not any(k == "reset" for _, k, _ in emu.changes)
        if model == "2400":
            assert emu.format_elements == ["VOLT", "CURR", "RES", "TIME", "STAT"]
    finally:
        sm.close()


def test_configure_error_names_the_failing_command(emulator):
    # found at 3 V: a 2 V range cannot hold that level -> the instrument refuses the range command
    emu = emulator(initial_output=True, initial_level=3.0)
    sm = Keithley2450.connect(emu.resource, timeout_s=1.0)
    try:
        with pytest.raises(InstrumentError) as exc:
            sm.configure(1e-6, 2.0)
        msg = str(exc.value)
        assert ":SOUR:VOLT:RANG 2.000000e+00" in msg and "-221" in msg
        assert emu.level_V == 3.0 and emu.output
    finally:
        sm.close()


def test_configure_reports_errors_queued_before_it_separately(emulator):
    emu = emulator()
    emu.errors.append((-113, "Undefined header"))     # left by someone else
    sm = Keithley2450.connect(emu.resource, timeout_s=1.0)
    try:
        sm.configure(1e-6, 20.0)
        assert sm.stale_errors == [(-113, "Undefined header")]
    finally:
        sm.close()


# ----------------------------------------------------------------------------- sourcing and measuring
@pytest.mark.parametrize("model", ["2450", "2400"])
def test_measure_follows_resistive_load_and_reports_compliance(emulator, model):
    r = 50e6
    emu = emulator(model=model, resistance_ohm=r)
    clock = Clock()
    sm = DRIVERS[model].connect(emu.resource, timeout_s=1.0, clock=clock)
    try:
        sm.configure(compliance_current=1e-7, voltage_range=20.0)
        sm.output = True
        sm.set_voltage(4.0)
        t0 = clock.now()
        m = sm.measure()
        t1 = clock.now()
        assert t0 <= m.time_s <= t1
        assert m.current_A == pytest.approx(4.0 / r, rel=1e-6)
        assert m.voltage_V == pytest.approx(4.0)
        assert m.compliance_hit is False
        sm.set_voltage(-10.0)                         # -200 nA wanted, limit 100 nA
        m = sm.measure()
        assert m.current_A == pytest.approx(-1e-7, rel=1e-6)
        assert m.voltage_V == pytest.approx(-1e-7 * r, rel=1e-6)   # the source gives way
        assert m.compliance_hit is True
        assert list(emu.errors) == []
        assert [v for _, v in emu.level_changes()] == [4.0, -10.0]
        assert [v for _, v in emu.output_changes()] == [True]
    finally:
        sm.close()


def test_measure_with_output_off_sends_nothing(emulator):
    emu = emulator(model="2400")     # a 2400 refuses :READ? with the output off
    sm = Keithley2400.connect(emu.resource, timeout_s=1.0)
    try:
        n = len(emu.log)
        m = sm.measure()
        assert (m.voltage_V, m.current_A, m.compliance_hit) == (0.0, 0.0, False)
        assert len(emu.log) == n
    finally:
        sm.close()


@pytest.mark.parametrize("bad", [20.5, -25.0, float("nan"), float("inf")])
def test_set_voltage_refuses_outside_range_without_sending(emulator, bad):
    emu = emulator()
    sm = Keithley2450.connect(emu.resource, timeout_s=1.0)
    try:
        sm.configure(1e-6, 20.0)
        n = len(emu.log)
        with pytest.raises(InstrumentError):
            sm.set_voltage(bad)
        assert len(emu.log) == n
        sm.set_voltage(20.0)                          # the edge is allowed
        assert emu.level_V == 20.0
    finally:
        sm.close()


def test_set_voltage_before_configure_is_limited_by_the_range_found(emulator):
    emu = emulator(initial_output=True, initial_level=3.0, initial_range=20.0)
    sm = Keithley2450.connect(emu.resource, timeout_s=1.0)
    try:
        sm.set_voltage(1.5)                           # ramping down from the found level works
        assert emu.level_V == 1.5
        with pytest.raises(InstrumentError, match="±20"):
            sm.set_voltage(30.0)
    finally:
        sm.close()


# ----------------------------------------------------------------------------- lost connection
@pytest.mark.parametrize("model", ["2450", "2400"])
def test_dropped_connection_raises_connection_lost_and_reopen_keeps_state(emulator, model):
    emu = emulator(model=model)
    sm = DRIVERS[model].connect(emu.resource, timeout_s=0.5)
    try:
        sm.configure(1e-6, 20.0)
        sm.output = True
        sm.set_voltage(5.0)
        emu.drop_connection()
        with pytest.raises(ConnectionLost) as exc:
            sm.set_voltage(4.0)
            sm.measure()
        assert emu.resource in str(exc.value)
        # later calls keep failing fast until reconnected
        with pytest.raises(ConnectionLost, match="reconnect"):
            sm.measure()
        assert emu.output and emu.level_V in (5.0, 4.0)     # the instrument keeps sourcing
        n_changes = len(emu.state_changing_commands())
        sm.reopen()
        assert emu.connections == 2
        assert len(emu.state_changing_commands()) == n_changes   # reconnecting changed nothing
        assert sm.output is True
        sm.set_voltage(0.0)
        sm.output = False
        assert emu.level_V == 0.0 and not emu.output
    finally:
        sm.close()


def test_info_holds_found_and_set_values(emulator):
    emu = emulator(initial_output=False, initial_level=1.0, initial_limit=5e-5)
    sm = Keithley2450.connect(emu.resource, timeout_s=1.0)
    try:
        sm.configure(2e-7, 20.0)
        info = sm.info()
        assert info["found_level_V"] == 1.0 and info["found_current_limit_A"] == 5e-5
        assert info["set_current_limit_A"] == pytest.approx(2e-7) and info["set_voltage_range_V"] == 20.0
        assert info["idn"] == sm.idn
        assert all(isinstance(v, (str, int, float, bool)) for v in info.values())
    finally:
        sm.close()
    assert not math.isnan(emu.level_V)


def test_read_state_refuses_a_current_source_with_output_on(emulator):
    emu = emulator(initial_output=True, initial_level=3.0)
    emu.source_function = "CURR"
    sm = Keithley2450.connect(emu.resource, timeout_s=1.0)     # connecting still works and reports it
    try:
        assert sm.found_function == "CURR"
        with pytest.raises(InstrumentError, match="sourcing CURR"):
            sm.read_state()
        assert sm.describe()["source_function"] == "CURR"
    finally:
        sm.close()
    assert emu.state_changing_commands() == []
