"""Beam blankers over SCPI: a 2450 digital I/O line (shared connection) and configurable SCPI commands."""
from __future__ import annotations

import pytest

from insitu.control.config import BeamBlankerConfig
from insitu.drivers.blanker import DigitalLineBlanker, SCPIBlanker, open_blanker
from insitu.drivers.interfaces import BeamBlanker
from insitu.drivers.keithley import Keithley2400, Keithley2450
from insitu.core.errors import InstrumentError, UserError
from scpi_emulator import Emulator2450


@pytest.mark.parametrize("active_high", [True, False])
def test_digital_line_blanker_shares_the_2450_connection(active_high):
    with Emulator2450(initial_output=True, initial_level=2.0) as emu:
        sm = Keithley2450.connect(emu.resource, timeout_s=0.5)
        cfg = BeamBlankerConfig(driver="keithley_digio", resource=emu.resource, line=3, active_high=active_high)
        bb = open_blanker(cfg, source_meter=sm)
        assert isinstance(bb, DigitalLineBlanker) and isinstance(bb, BeamBlanker)
        assert bb._t is sm._t and emu.connections == 1
        assert emu.changes == []                               # opening changed nothing
        bb.blank()
        assert emu.digio_state[3] == (1 if active_high else 0) and emu.digio_mode[3] == "DIG,OUT"
        assert bb.is_blanked() is True
        bb.unblank()
        assert emu.digio_state[3] == (0 if active_high else 1) and bb.is_blanked() is False
        bb.close()                                             # shared: the source-meter stays usable
        assert sm.read_state().level_V == 2.0
        assert [k for _, k, _ in emu.changes] == ["digio", "digio"]   # never touched the source
        assert list(emu.errors) == []
        sm.close()


def test_digital_line_blanker_on_its_own_connection_checks_the_model():
    with Emulator2450(model="2400") as emu:
        cfg = BeamBlankerConfig(driver="keithley_digio", resource=emu.resource)
        with pytest.raises(InstrumentError, match="needs a Keithley 2450"):
            open_blanker(cfg)


def test_digital_line_blanker_refuses_a_2400_source_meter():
    with Emulator2450(model="2400") as emu:
        sm = Keithley2400.connect(emu.resource, timeout_s=0.5)
        cfg = BeamBlankerConfig(driver="keithley_digio", resource=emu.resource)
        with pytest.raises(UserError, match="2450"):
            open_blanker(cfg, source_meter=sm)
        sm.close()


def test_scpi_blanker_with_readback_via_2400_ttl_port():
    with Emulator2450(model="2400") as emu:
        cfg = BeamBlankerConfig(driver="scpi", resource=emu.resource, blank_command=":SOUR2:TTL 1",
                                unblank_command=":SOUR2:TTL 0", query_command=":SOUR2:TTL?")
        bb = open_blanker(cfg)
        assert isinstance(bb, SCPIBlanker)
        bb.blank()
        assert emu.ttl_out == 1 and bb.is_blanked()
        bb.unblank()
        assert emu.ttl_out == 0 and not bb.is_blanked()
        # a blank command that the instrument ignores is caught by the read-back
        bb.blank_command = ":SOUR2:TTL 0"
        with pytest.raises(InstrumentError, match="does not report blanked"):
            bb.blank()
        bb.close()


def test_scpi_blanker_without_query_remembers_and_refuses_unknown_state():
    with Emulator2450(model="2400") as emu:
        cfg = BeamBlankerConfig(driver="scpi", resource=emu.resource, blank_command=":SOUR2:TTL 1",
                                unblank_command=":SOUR2:TTL 0")
        bb = open_blanker(cfg)
        with pytest.raises(InstrumentError, match="unknown"):
            bb.is_blanked()
        bb.blank()
        assert bb.is_blanked() is True
        bb.close()


def test_reconnect_reopens_in_place_so_a_shared_blanker_keeps_working():
    from insitu.control.config import parse_instruments
    from insitu.core.errors import ConnectionLost
    from insitu.instruments import open_instruments

    with Emulator2450(initial_output=True, initial_level=3.0) as emu:
        cfg = parse_instruments(f'[source_meter]\ndriver = "keithley2450"\nresource = "{emu.resource}"\n'
                                f'timeout_s = 0.5\n[beam_blanker]\ndriver = "keithley_digio"\n'
                                f'resource = "{emu.resource}"\n')
        ins = open_instruments(cfg)
        try:
            emu.drop_connection()
            with pytest.raises(ConnectionLost):
                ins.source_meter.set_voltage(2.0)
            sm = ins.reconnect()
            assert sm is ins.source_meter and emu.connections == 2
            assert sm.read_state().output_on is True
            ins.blanker.blank()                         # same (reopened) connection
            assert emu.digio_state[1] == 1
        finally:
            ins.close()
