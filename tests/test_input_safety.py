"""Bad protocols and configs are refused in one line, before anything is connected (issue 18).

Duplicate YAML keys, anchors and aliases (an alias bomb must not hang ``validate``), current limits no
source-meter can set, binary or unparsable configs, SCPI strings that could send a second command, and
terminal control characters in what ``validate`` prints.
"""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from insitu.cli import main
from insitu.control.config import parse_instruments
from insitu.drivers.blanker import SCPIBlanker
from insitu.core.errors import UserError
from insitu.control.protocol import parse_protocol

LIMITS = "limits: {max_voltage: 5, compliance_current: 1.0e-6, max_slew_rate: 1}\n"


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


def write(tmp_path, text, name="p.yaml"):
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    return p


# ----------------------------------------------------------------------------- YAML
@pytest.mark.parametrize("text, key, line", [
    ("limits:\n  max_voltage: 5\n  compliance_current: 1.0e-6\n  max_slew_rate: 1\n  max_voltage: 150\n"
     "steps: [{ramp: {to: 100}}]\n", "max_voltage", 5),
    (LIMITS + "steps: [{ramp: {to: 1}}]\nsteps: [{ramp: {to: 4}}]\n", "steps", 3),
    (LIMITS + "steps:\n  - ramp: {to: 1, to: 4}\n", "to", 3),
])
def test_a_key_given_twice_is_refused_naming_it_and_its_line(tmp_path, capsys, text, key, line):
    """Old code: the last value won (max_voltage 150 validated and planned a 100 V ramp)."""
    assert main(["validate", str(write(tmp_path, text))]) == 1
    err = one_line_error(capsys)
    assert f"key '{key}' appears twice" in err and f"line {line}" in err, err


@pytest.mark.parametrize("text, what", [
    ("limits: &l {max_voltage: 5, compliance_current: 1.0e-6, max_slew_rate: 1}\nsteps: [{ramp: {to: 1}}]\n",
     "anchor &l"),
    (LIMITS + "r: &r {ramp: {to: 1}}\nsteps: [*r]\n", "anchor &r"),
    ("base: &b {max_voltage: 5, compliance_current: 1.0e-6, max_slew_rate: 1}\n"
     "limits: {<<: *b, max_voltage: 4}\nsteps: [{ramp: {to: 1}}]\n", "anchor &b"),
])
def test_anchors_and_aliases_are_refused(text, what):
    with pytest.raises(UserError, match=what):
        parse_protocol(text, "p.yaml")


def test_an_alias_bomb_is_refused_at_once(tmp_path):
    """A 691-byte alias bomb of valid steps (9^8 holds once expanded) made `validate` hang (old code: still
    running after 30 s); now exit 1 in one line at the first anchor."""
    rows = ["limits: {max_voltage: 5, compliance_current: 1.0e-6, max_slew_rate: 1}", "steps:",
            "  - &a {hold: {duration: 0}}"]
    for prev, name in zip("abcdefgh", "bcdefghi"):
        rows.append(f"  - &{name} {{repeat: {{times: 1, steps: [" + ", ".join([f"*{prev}"] * 9) + "]}}")
    p = write(tmp_path, "\n".join(rows) + "\n")
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "insitu", "validate", str(p)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 1 and time.monotonic() - t0 < 30
    err = res.stderr.strip()
    assert "\n" not in err and "anchor &a is not allowed" in err, err


# ----------------------------------------------------------------------------- instrument ranges
@pytest.mark.parametrize("value", ["1.0e-15", "5.0e-10", "2.0"])
def test_a_current_limit_no_source_meter_can_set_is_refused_by_validate(tmp_path, capsys, value):
    """Old code: 1e-15 A validated, and `run` failed with exit 2 after connecting."""
    p = write(tmp_path, f"limits: {{max_voltage: 5, compliance_current: {value}, max_slew_rate: 1}}\n"
                        "steps: [{ramp: {to: 1}}]\n")
    assert main(["validate", str(p)]) == 1
    err = one_line_error(capsys)
    assert "limits.compliance_current" in err and "1e-09 .. 1.05 A" in err


def test_the_smallest_settable_current_limit_is_accepted():
    assert parse_protocol("limits: {max_voltage: 5, compliance_current: 1.0e-9, max_slew_rate: 1}\n"
                          "steps: [{ramp: {to: 1}}]\n").limits.compliance_current == 1e-9


def test_run_refuses_a_femtoamp_limit_before_connecting(tmp_path, capsys, emulator):
    emu = emulator()
    cfg = write(tmp_path, f'[source_meter]\ndriver = "keithley2450"\nresource = "{emu.resource}"\n', "i.toml")
    p = write(tmp_path, "limits: {max_voltage: 5, compliance_current: 1.0e-15, max_slew_rate: 1}\n"
                        "steps: [{ramp: {to: 1}}]\n")
    assert main(["run", str(p), "--config", str(cfg), "--out", str(tmp_path / "s.h5")]) == 1
    assert "compliance_current" in one_line_error(capsys)
    assert emu.connections == 0 and not (tmp_path / "s.h5").exists()


# ----------------------------------------------------------------------------- configs
def test_a_binary_config_is_one_line_exit_1(tmp_path, capsys):
    cfg = write(tmp_path, b"\x00\x01\xff\xfe\x89PNG binary", "i.toml")
    assert main(["check", "--config", str(cfg)]) == 1
    err = one_line_error(capsys)
    assert "not a text file" in err and "i.toml" in err
    p = write(tmp_path, LIMITS + "steps: [{ramp: {to: 1}}]\n")
    assert main(["run", str(p), "--config", str(cfg), "--out", str(tmp_path / "s.h5")]) == 1
    assert "not a text file" in one_line_error(capsys)


@pytest.mark.parametrize("resource, field", [
    ("TCPIP0::127.0.0.1::notaport::SOCKET", "port"),
    ("TCPIP0::127.0.0.1::99999::SOCKET", "port"),
    ("TCPIP0::127.0.0.1::0::SOCKET", "port"),
    ("GPIB0::xx::INSTR", "primary address"),
    ("GPIB0::31::INSTR", "primary address"),
    ("TCPIPx::127.0.0.1::5025::SOCKET", "board"),
])
def test_an_unparsable_port_or_address_is_a_config_error_exit_1(tmp_path, capsys, resource, field):
    """Old code: the resource parsed, the connection failed, exit 2 (an instrument fault)."""
    cfg = write(tmp_path, f'[source_meter]\ndriver = "keithley2450"\nresource = "{resource}"\n', "i.toml")
    assert main(["check", "--config", str(cfg)]) == 1
    err = one_line_error(capsys)
    assert "source_meter.resource" in err and field in err, err


def _blanker_toml(sm_resource, bb_resource, blank):
    return (f'[source_meter]\ndriver = "keithley2450"\nresource = "{sm_resource}"\n'
            f'[beam_blanker]\ndriver = "scpi"\nresource = "{bb_resource}"\n'
            f'blank_command = "{blank}"\nunblank_command = ":DIG:LINE1:STAT 0"\n')


@pytest.mark.parametrize("blank, why", [
    (":DIG:LINE1:STAT 1;:SOUR:VOLT:LEV 10", "';' is not allowed"),
    (":DIG:LINE1:STAT 1\\n:SOUR:VOLT:LEV 10", "character '\\\\n' is not allowed"),
    (":DIG:LINE1:STAT 1\\r", "character '\\\\r' is not allowed"),
    ("", "empty command"),
])
def test_a_blanker_command_that_could_send_a_second_command_is_refused(blank, why):
    """Old code: sent as it was; on a shared connection ';:SOUR:VOLT:LEV 10' set the source to 10 V."""
    with pytest.raises(UserError, match=why) as exc:
        parse_instruments(_blanker_toml("TCPIP0::127.0.0.1::5025::SOCKET", "TCPIP0::127.0.0.2::5025::SOCKET",
                                        blank), "i.toml")
    assert "beam_blanker.blank_command" in str(exc.value) and "\n" not in str(exc.value)


def test_on_the_source_meters_connection_a_blanker_may_only_drive_digital_outputs():
    res = "TCPIP0::127.0.0.1::5025::SOCKET"
    with pytest.raises(UserError, match="not a digital-output command"):
        parse_instruments(_blanker_toml(res, res, ":SOUR:VOLT:LEV 10"), "i.toml")
    with pytest.raises(UserError, match="not a digital-output command"):
        parse_instruments(_blanker_toml(res, res, ":OUTP 0"), "i.toml")
    assert parse_instruments(_blanker_toml(res, res, ":DIG:LINE1:STAT 1"), "i.toml").beam_blanker.blank_command
    # on its own connection a blanker speaks its own commands
    other = "TCPIP0::127.0.0.2::5025::SOCKET"
    assert parse_instruments(_blanker_toml(res, other, "BLANK ON"), "i.toml").beam_blanker.blank_command == "BLANK ON"


def test_run_with_a_smuggled_level_command_never_connects(tmp_path, capsys, emulator):
    emu = emulator()
    cfg = write(tmp_path, _blanker_toml(emu.resource, emu.resource, ":DIG:LINE1:STAT 1;:SOUR:VOLT:LEV 10"), "i.toml")
    p = write(tmp_path, LIMITS + "steps: [{beam: unblank}, {ramp: {to: 1}}, {beam: blank}]\n")
    assert main(["run", str(p), "--config", str(cfg), "--out", str(tmp_path / "s.h5")]) == 1
    assert "beam_blanker.blank_command" in one_line_error(capsys)
    assert emu.connections == 0 and emu.level_V == 0.0


def test_the_scpi_blanker_itself_refuses_compound_commands():
    class _T:
        resource = "TCPIP0::127.0.0.1::5025::SOCKET"

    with pytest.raises(UserError, match="';' is not allowed"):
        SCPIBlanker(_T(), "BLANK 1;:SOUR:VOLT:LEV 10", "BLANK 0")
    with pytest.raises(UserError, match="not a digital-output command"):
        SCPIBlanker(_T(), ":SOUR:VOLT:LEV 10", ":DIG:LINE1:STAT 0", owns_transport=False)


# ----------------------------------------------------------------------------- terminal control characters
def test_validate_prints_no_terminal_control_characters(tmp_path, capsys):
    p = write(tmp_path, 'name: "evil\\e[32m LIMITS OK\\e[0m\\e]0;owned\\a"\n'
                        'description: "clear\\e[2J"\n' + LIMITS + "steps: [{ramp: {to: 1}}]\n")
    assert main(["validate", str(p)]) == 0
    out = capsys.readouterr().out
    assert not any(ord(c) < 32 and c != "\n" or 0x7f <= ord(c) <= 0x9f for c in out), repr(out[:200])
    assert "evil\\x1b[32m LIMITS OK" in out and "\\x07" in out


def test_a_validate_error_prints_no_terminal_control_characters(tmp_path, capsys):
    p = write(tmp_path, LIMITS + 'steps: [{ramp: {to: 1}}]\n"bogus\\e[2J\\e[32mOK": 1\n')
    assert main(["validate", str(p)]) == 1
    err = one_line_error(capsys)
    assert "\x1b" not in err and "bogus\\x1b[2J" in err and "unknown key" in err
