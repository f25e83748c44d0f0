"""``insitu check``: prints the state as found, changes nothing, exits 2 with one line on any instrument fault."""
from __future__ import annotations

import socket

import pytest

from insitu.cli import main
from scpi_emulator import Emulator2450


def _config(tmp_path, resource, driver="keithley2450", timeout_s=1.0, extra=""):
    p = tmp_path / "instruments.toml"
    p.write_text(f'[source_meter]\ndriver = "{driver}"\nresource = "{resource}"\nvisa_library = "@py"\n'
                 f'timeout_s = {timeout_s}\n{extra}', encoding="utf-8")
    return str(p)


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("model", ["2450", "2400"])
def test_check_prints_found_state_and_sends_nothing_that_changes_it(tmp_path, capsys, model):
    with Emulator2450(initial_output=True, initial_level=3.0, initial_limit=2e-7, model=model) as emu:
        emu.errors.append((-113, "Undefined header"))
        code = main(["check", "--config", _config(tmp_path, emu.resource, f"keithley{model}")])
        out = capsys.readouterr().out
        assert code == 0, out
        assert f"MODEL {model}" in out
        assert "output         ON" in out
        assert "level 3 V" in out
        assert "200 nA" in out and "2.000000e-07 A" in out
        assert '-113,"Undefined header"' in out          # the error queue as found
        # the instrument log: only queries; no level/output/limit change, no reset
        cmds = emu.commands()
        assert cmds and all(c.rstrip().split(" ")[0].endswith("?") for c in cmds), cmds
        assert not any(c.upper().startswith(("*RST", "*RCL", "*CLS", ":SYST:PRES")) for c in cmds)
        assert emu.state_changing_commands() == []
        assert emu.output and emu.level_V == 3.0 and emu.limit_A == 2e-7


def test_check_with_digio_blanker_reads_the_line_without_driving_it(tmp_path, capsys):
    with Emulator2450(initial_output=True, initial_level=3.0) as emu:
        extra = f'[beam_blanker]\ndriver = "keithley_digio"\nresource = "{emu.resource}"\nline = 2\n'
        code = main(["check", "--config", _config(tmp_path, emu.resource, extra=extra)])
        out = capsys.readouterr().out
        assert code == 0, out
        assert "beam_blanker  keithley_digio" in out and "line 2" in out
        assert emu.changes == [] and emu.connections == 1


def test_check_unreachable_exits_2_with_one_line(tmp_path, capsys):
    res = f"TCPIP0::127.0.0.1::{_free_port()}::SOCKET"
    code = main(["check", "--config", _config(tmp_path, res, timeout_s=0.5)])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and res in lines[0] and "refused" in lines[0]


def test_check_wrong_model_exits_2_with_one_line(tmp_path, capsys):
    with Emulator2450(model="2400") as emu:
        code = main(["check", "--config", _config(tmp_path, emu.resource, "keithley2450")])
        err = capsys.readouterr().err
        assert code == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and emu.resource in lines[0] and "MODEL 2400" in lines[0]


def test_check_timeout_exits_2_with_one_line(tmp_path, capsys):
    with Emulator2450() as emu:
        emu.silent = True
        code = main(["check", "--config", _config(tmp_path, emu.resource, timeout_s=0.3)])
        err = capsys.readouterr().err
        assert code == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and emu.resource in lines[0] and "timeout" in lines[0]


def test_check_bad_resource_string_and_bad_config(tmp_path, capsys):
    assert main(["check", "--config", _config(tmp_path, "not-a-resource")]) == 1
    err = capsys.readouterr().err
    assert "source_meter.resource: " in err and "not-a-resource" in err
    p = tmp_path / "bad.toml"
    p.write_text('[source_meter]\ndriver = "keithley2450"\n', encoding="utf-8")
    assert main(["check", "--config", str(p)]) == 1
    assert "resource" in capsys.readouterr().err


def test_check_mock_config_connects_nothing(tmp_path, capsys):
    from insitu.control.config import MOCK_TOML

    p = tmp_path / "mock.toml"
    p.write_text(MOCK_TOML, encoding="utf-8")
    assert main(["check", "--config", str(p)]) == 0
    assert "mock" in capsys.readouterr().out
