"""CLI conventions and instruments-config validation."""
from __future__ import annotations

import subprocess
import sys

import pytest

from insitu.cli import VERBS, build_parser, main
from insitu.control.config import MOCK_TOML, parse_instruments
from insitu.core.errors import UserError


def test_every_verb_has_help(capsys):
    parser = build_parser()
    for verb in VERBS:
        with pytest.raises(SystemExit) as exc:
            parser.parse_args([verb, "--help"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert f"insitu {verb}" in out


def test_no_verb_prints_help_and_exits_1(capsys):
    assert main([]) == 1
    assert "VERB" in capsys.readouterr().out


def test_console_script_runs_as_module():
    res = subprocess.run([sys.executable, "-m", "insitu", "--version"], capture_output=True, text=True)
    assert res.returncode == 0
    assert res.stdout.startswith("insitu ")


def test_program_entry_returns_the_exit_code_and_freezes_the_garbage_collector(monkeypatch, tmp_path, capsys):
    """console_main = main + gc.freeze (the process ends next: its final cycle searches are skipped)."""
    import gc

    from insitu.cli import console_main

    monkeypatch.setattr(sys, "argv", ["insitu", "validate", str(tmp_path / "missing.yaml")])
    try:
        assert gc.get_freeze_count() == 0
        assert console_main() == 1
        assert "missing.yaml" in capsys.readouterr().err
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_mock_config_is_all_mock():
    cfg = parse_instruments(MOCK_TOML)
    assert cfg.is_mock
    assert cfg.beam.probe_current_A == pytest.approx(5e-11)


@pytest.mark.parametrize("text, key", [
    ('[source_meter]\ndriver = "keithley9999"\n', "source_meter.driver"),
    ('[source_meter]\ndriver = "keithley2450"\n', "resource"),
    ('[source_meter]\ndriver = "mock"\ntimeout_s = -1\n', "source_meter.timeout_s"),
    ('[source_meter]\ndriver = "mock"\nbogus = 1\n', "source_meter.bogus"),
    ('[frames]\ndriver = "folder"\n', "source_meter"),
    ('[source_meter]\ndriver = "mock"\n[frames]\ndriver = "folder"\n', "path"),
    ('[source_meter\n', "not valid TOML"),
])
def test_bad_config_names_the_key(text, key):
    with pytest.raises(UserError) as exc:
        parse_instruments(text, "cfg.toml")
    msg = str(exc.value)
    assert msg.startswith("cfg.toml: ")
    assert key in msg
    assert "\n" not in msg


def test_valid_real_config():
    cfg = parse_instruments('[source_meter]\ndriver = "keithley2450"\nresource = "TCPIP0::127.0.0.1::5025::SOCKET"\n')
    assert cfg.source_meter.visa_library == "@py"
    assert not cfg.is_mock


def test_bad_arguments_exit_1(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["validate", "--no-such-flag"])
    assert exc.value.code == 1
