"""The real Keithley driver code against the pyvisa-sim YAML stand-ins in drivers/sim/."""
from __future__ import annotations

from pathlib import Path

import pytest

import insitu.drivers as drivers_pkg
from insitu.drivers.keithley import Keithley2400, Keithley2450
from insitu.drivers.interfaces import SourceMeter, SourceState
from insitu.core.errors import ConnectionLost, InstrumentError

SIM = Path(drivers_pkg.__file__).parent / "sim"
SIM_2450 = f"{SIM / 'keithley2450.yaml'}@sim"
SIM_2400 = f"{SIM / 'keithley2400.yaml'}@sim"
CASES = [(Keithley2450, "TCPIP0::192.0.2.24::5025::SOCKET", SIM_2450),
         (Keithley2450, "GPIB0::18::INSTR", SIM_2450),
         (Keithley2400, "GPIB0::24::INSTR", SIM_2400)]


@pytest.fixture(params=CASES, ids=["2450-socket", "2450-gpib", "2400-gpib"])
def sim(request):
    cls, res, lib = request.param
    sm = cls.connect(res, visa_library=lib, timeout_s=0.5)
    yield sm
    sm.close()


def test_sim_yaml_files_are_packaged():
    assert (SIM / "keithley2450.yaml").is_file() and (SIM / "keithley2400.yaml").is_file()


def test_connect_finds_state_without_changing_it(sim):
    assert isinstance(sim, SourceMeter)
    assert sim.found == SourceState(False, 0.0, 1.05e-4)
    assert sim.found_function == "VOLT"
    assert sim._t.read_termination == "\n" and sim._t.write_termination == "\n"
    assert sim._t.sent and all("?" in c for c in sim._t.sent)       # only queries


def test_configure_then_source_and_measure(sim):
    sim.configure(compliance_current=2.5e-7, voltage_range=20.0, nplc=0.5)
    assert sim.read_state() == SourceState(False, 0.0, pytest.approx(2.5e-7))
    assert float(sim._t.query(":SENS:CURR:NPLC?")) == 0.5
    sim.output = True
    sim.set_voltage(4.0)
    assert sim.read_state() == SourceState(True, 4.0, pytest.approx(2.5e-7))
    m = sim.measure()
    assert m.voltage_V == 4.0
    if sim.model == "2450":   # fixed sim readings: 2450 80 nA, trip 0; 2400 100 nA, status 12 (bit 3 set)
        assert (m.current_A, m.compliance_hit) == (8e-8, False)
    else:
        assert (m.current_A, m.compliance_hit) == (1e-7, True)
    sim.set_voltage(0.0)
    sim.output = False
    assert sim.read_state().output_on is False


def test_instrument_refusal_names_the_command(sim):
    sim.configure(1e-6, 20.0)
    # bypass the driver's own range check to see the instrument's error path
    with pytest.raises(InstrumentError) as exc:
        sim._t.write_checked(":SENS:CURR:NPLC 5.000000e+01")
    assert ":SENS:CURR:NPLC 5.000000e+01" in str(exc.value) and "-113" in str(exc.value)
    assert float(sim._t.query(":SENS:CURR:NPLC?")) == 1.0           # unchanged


def test_wrong_model_via_sim():
    with pytest.raises(InstrumentError, match="found 'KEITHLEY INSTRUMENTS,MODEL 2450"):
        Keithley2400.connect("GPIB0::18::INSTR", visa_library=SIM_2450)


@pytest.mark.filterwarnings("ignore:read string doesn't end with termination")
def test_unknown_sim_resource_is_one_line_naming_it():
    with pytest.raises(InstrumentError) as exc:
        Keithley2450.connect("GPIB0::7::INSTR", visa_library=SIM_2450)
    assert "GPIB0::7::INSTR" in str(exc.value) and "\n" not in str(exc.value)
    assert isinstance(exc.value, (ConnectionLost, InstrumentError))
