"""One runner for run, demo, the GUI and replay: same session metadata, a log file next to every session,
--verbose shows the SCPI traffic."""
from __future__ import annotations

import io
import threading

import h5py
import numpy as np
import pytest

from insitu.cli import main
from insitu.control.config import mock_toml, parse_instruments
from insitu.control.protocol import parse_protocol
from insitu.core.errors import StoppedEarly
from insitu.core.records import EngineState, EventRecord, ProgressRecord
from insitu.core.session import open_session
from insitu.runner import ProtocolRunner, ReplayRunner, log_path_for

PROTOCOL = """\
name: runner-test
limits: {max_voltage: 3.0, compliance_current: 1.0e-6, max_slew_rate: 2.0}
sample_interval: 0.5
steps:
  - beam: unblank
  - ramp: {to: 2.0}
  - acquire: {frames: 2}
  - ramp: {to: 0.0}
  - beam: blank
"""
#: experiment seconds per wall second of every run here (the protocol takes ~52 experiment s)
SCALE = 40.0
#: what may differ between sessions of the same protocol on the same instruments (who and when)
VOLATILE = {"start_time", "end_time", "program", "program_name", "status", "replay"}


def _tree(f: h5py.File, top: str) -> dict:
    """``{path: value}`` of every dataset and attribute under ``top`` (datasets as arrays/strings)."""
    out = {}

    def add(name, obj):
        path = f"{top}/{name}"
        for k, v in obj.attrs.items():
            out[f"{path}@{k}"] = _plain(v)
        if isinstance(obj, h5py.Dataset):
            out[path] = _plain(obj[()])

    g = f[top]
    for k, v in g.attrs.items():
        out[f"{top}@{k}"] = _plain(v)
    if isinstance(g, h5py.Dataset):
        out[top] = _plain(g[()])
    else:
        g.visititems(add)
    return out


def _plain(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray):
        return [_plain(x) for x in v.tolist()] if v.dtype.kind in "OS" else v.tolist()
    return v.item() if isinstance(v, np.generic) else v


def metadata(path) -> dict:
    """Everything a session says about how it was made: /entry's own fields, /entry/instrument/*,
    /entry/sample (microstructure; the truth table's layout), less :data:`VOLATILE`."""
    with h5py.File(path, "r") as f:
        e = f["/entry"]
        out = {}
        for name in e:
            if name in VOLATILE or name in ("bias", "beam", "events", "frames"):
                continue
            if name == "instrument":
                for part in e["instrument"]:
                    if part not in VOLATILE:
                        out.update(_tree(f, f"/entry/instrument/{part}"))
            elif name == "sample":
                out.update({k: v for k, v in _tree(f, "/entry/sample").items() if "/truth/" not in k})
                out["truth columns"] = sorted(f["/entry/sample/truth/seeds"])
            else:
                out.update(_tree(f, f"/entry/{name}"))
        out["version"] = _plain(e["program_name"].attrs["version"])
    return out


def _run_gui_backend(out):
    """The GUI's path: EngineBackend.run in a worker thread (as SourceThread runs it), default instruments."""
    from insitu.gui.backends import EngineBackend
    from insitu.gui.worker import RecordQueue, SourceThread

    text = mock_toml()
    b = EngineBackend(parse_instruments(text), text, parse_protocol(PROTOCOL), out, time_scale=SCALE)
    q = RecordQueue()
    th = SourceThread(lambda: b.run([q]), b.stop, finish=b.finish, name=b.label)
    th.start()
    th.join(120)
    assert th.outcome == "complete", th.message
    return q.drain()


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    """The same protocol on the same mock instruments (specimen seed 0), started four ways."""
    from insitu.commands.demo import run_virtual_experiment

    d = tmp_path_factory.mktemp("runner")
    proto = d / "p.yaml"
    proto.write_text(PROTOCOL)
    paths = {k: d / f"{k}.h5" for k in ("run", "demo", "gui", "replay")}
    assert main(["run", str(proto), "--mock", "--time-scale", str(SCALE), "--seed", "0", "--quiet",
                 "--out", str(paths["run"])]) == 0
    status, _, _ = run_virtual_experiment(parse_protocol(PROTOCOL, str(proto)), paths["demo"], seed=0,
                                          time_scale=SCALE)
    assert status == "complete"
    records = _run_gui_backend(paths["gui"])
    assert main(["replay", str(paths["run"]), "--speed", "50", "--quiet", "--out", str(paths["replay"])]) == 0
    return paths, records


def test_sessions_carry_the_same_metadata_whoever_started_them(sessions):
    paths, _ = sessions
    ref = metadata(paths["run"])
    # the run's own record of how it was made is there to compare
    for key in ("/entry/instrument/source_meter/idn", "/entry/instrument/source_meter/set_current_limit_A",
                "/entry/instrument/source_meter/found_output_on", "/entry/instrument/beam_blanker/idn",
                "/entry/instrument/frames/idn", "/entry/protocol", "/entry/instruments", "version",
                "truth columns"):
        assert key in ref, key
    assert any(k.startswith("/entry/sample/microstructure/") for k in ref)
    for who in ("demo", "gui", "replay"):
        got = metadata(paths[who])
        assert got.keys() == ref.keys(), (who, sorted(got.keys() ^ ref.keys()))
        differ = [k for k in ref if not _same(ref[k], got[k])]
        assert not differ, (who, differ)
    with open_session(paths["run"]) as s:
        assert s.status == "complete" and s.n_frames == 2
    programs = {}
    for who, p in paths.items():
        with open_session(p) as s:
            programs[who] = s.program
    assert programs == {"run": "insitu run", "demo": "insitu demo", "gui": "insitu gui", "replay": "insitu replay"}
    with h5py.File(paths["replay"], "r") as f:      # a replay says what it replayed
        assert f["/entry/instrument/replay/speed"][()] == 50.0


def _same(a, b) -> bool:
    if isinstance(a, (list, float)) or isinstance(b, (list, float)):
        return np.array_equal(np.asarray(a, dtype=object), np.asarray(b, dtype=object)) or \
            np.allclose(np.asarray(a, float), np.asarray(b, float), equal_nan=True)
    return a == b


def test_every_session_has_its_log_file(sessions):
    paths, _ = sessions
    for who, p in paths.items():
        log = log_path_for(p)
        assert log == p.with_suffix(".log") and log.is_file(), who
        text = log.read_text()
        assert f"insitu {who}:" in text and "(exit 0)" in text, (who, text[-500:])
        assert " DEBUG " not in text                       # INFO by default
        if who != "replay":
            assert "insitu.events: t=" in text and "step: [2/5] ramp" in text   # the session's events


def test_gui_gets_typed_records(sessions):
    _, records = sessions
    steps = [r for r in records if isinstance(r, EventRecord) and r.step_index is not None]
    assert [(r.step_index, r.n_steps, r.step_kind) for r in steps] == \
        [(0, 5, "beam"), (1, 5, "ramp"), (2, 5, "acquire"), (3, 5, "ramp"), (4, 5, "beam")]
    assert steps[1].message == "[2/5] " + steps[1].step_label     # the file keeps its text form
    prog = [r for r in records if isinstance(r, ProgressRecord)]
    assert prog and all(isinstance(r.state, EngineState) for r in prog)
    assert {r.step_kind for r in prog} >= {"ramp", "acquire"}


def test_replayed_step_events_carry_their_step_fields(sessions):
    paths, _ = sessions
    got = []
    r = ReplayRunner(paths["run"], speed=1000, handle_signals=False)
    assert r.run([got.append]) == "complete" and r.exit_code == 0 and r.log_path is None
    steps = [e for e in got if isinstance(e, EventRecord) and e.kind == "step"]
    assert [(e.step_index, e.n_steps) for e in steps] == [(k, 5) for k in range(5)]


def test_abort_before_start_switches_nothing_on_and_closes_the_file_aborted(tmp_path):
    from test_gui_engine import plain_mocks

    opened = []

    def mocks(config, clock, seed=0):
        inst = plain_mocks(config, clock, seed)
        opened.append(inst)
        return inst

    text = mock_toml()
    r = ProtocolRunner(parse_protocol(PROTOCOL), parse_instruments(text), text, tmp_path / "s.h5",
                       open_instruments=mocks, handle_signals=False)
    r.request_abort("operator")
    with pytest.raises(StoppedEarly, match="nothing switched on"):
        r.run()
    assert r.exit_code == 3 and not opened and not (tmp_path / "s.h5").exists()
    assert "(exit 3)" in (tmp_path / "s.log").read_text()


def test_abort_mid_run_exit_3_file_aborted_and_output_off(tmp_path):
    from test_gui_engine import plain_mocks

    text = mock_toml()
    p = parse_protocol(PROTOCOL.replace("acquire: {frames: 2}", "hold: {duration: 600}"))
    r = ProtocolRunner(p, parse_instruments(text), text, tmp_path / "s.h5", open_instruments=plain_mocks,
                       handle_signals=False)
    th = threading.Thread(target=lambda: pytest.raises(StoppedEarly, r.run))
    th.start()
    deadline = 200
    while deadline and (r.instruments is None or r.instruments.source_meter.read_state().level_V < 1.0):
        threading.Event().wait(0.05)
        deadline -= 1
    r.request_abort("test")
    th.join(60)
    assert not th.is_alive() and r.exit_code == 3 and r.status == "aborted"
    st = r.instruments.source_meter.read_state()
    assert not st.output_on and st.level_V == 0.0
    with open_session(tmp_path / "s.h5") as s:
        assert s.status == "aborted"
        assert s.group("/entry/instrument/source_meter")["set_current_limit_A"] == 1e-6


def test_an_existing_session_and_its_log_are_left_alone(tmp_path, capsys):
    out = tmp_path / "s.h5"
    out.write_bytes(b"precious")
    log = log_path_for(out)
    log.write_text("the old run's log")
    proto = tmp_path / "p.yaml"
    proto.write_text(PROTOCOL)
    assert main(["run", str(proto), "--mock", "--out", str(out)]) == 1
    assert out.read_bytes() == b"precious" and log.read_text() == "the old run's log"


def test_verbose_shows_scpi_traffic_and_logs_it_next_to_the_session(tmp_path, emulator, capsys):
    emu = emulator()
    cfg = tmp_path / "instruments.toml"
    cfg.write_text(f'[source_meter]\ndriver = "keithley2450"\nresource = "{emu.resource}"\ntimeout_s = 1.0\n'
                   '[beam_blanker]\ndriver = "mock"\n[frames]\ndriver = "mock"\nrate_hz = 5.0\n')
    proto = tmp_path / "p.yaml"
    proto.write_text(PROTOCOL.replace("acquire: {frames: 2}", "hold: {duration: 0.5}").replace(
        "sample_interval: 0.5", "sample_interval: 0.1").replace("max_slew_rate: 2.0", "max_slew_rate: 8.0"))
    quiet, loud = tmp_path / "a.h5", tmp_path / "b.h5"
    assert main(["run", str(proto), "--config", str(cfg), "--quiet", "--out", str(quiet)]) == 0
    err = capsys.readouterr().err
    assert err.strip() == ""                                        # nothing on stderr without --verbose
    text = log_path_for(quiet).read_text()
    assert "insitu.drivers" not in text and "INFO" in text          # the log file: INFO, no SCPI

    assert main(["--verbose", "run", str(proto), "--config", str(cfg), "--quiet", "--out", str(loud)]) == 0
    err = capsys.readouterr().err
    writes = [ln for ln in err.splitlines() if "DEBUG" in ln and "insitu.drivers" in ln and " -> " in ln]
    reads = [ln for ln in err.splitlines() if "DEBUG" in ln and "insitu.drivers" in ln and " <- " in ln]
    assert any("OUTP" in ln for ln in writes) and any("SOUR" in ln for ln in writes) and reads
    assert all(emu.resource in ln for ln in writes)
    text = log_path_for(loud).read_text()
    assert sum(" -> " in ln and "insitu.drivers" in ln for ln in text.splitlines()) >= len(writes) > 10
    # the verb option works after the verb too
    assert main(["check", "--config", str(cfg), "-v"]) == 0
    assert "insitu.drivers" in capsys.readouterr().err


def test_status_line_ends_before_an_error_message(monkeypatch, capsys):
    """On a terminal a '\\r frame N' progress text is ended before the one-line error."""
    from insitu.core.progress import StatusLine
    from insitu.core.errors import UserError

    buf = io.StringIO()

    class Failing:
        HELP = ""

        @staticmethod
        def run(args):
            s = StatusLine(buf, tty=True)
            s.write("\r  frame 10 ")
            raise UserError("frame 11: unreadable")

    import insitu.cli as cli

    parser = cli.build_parser()
    args = parser.parse_args(["info", "x.h5"])
    args._module = Failing
    monkeypatch.setattr(cli, "build_parser", lambda: _FixedParser(args))
    monkeypatch.setattr("sys.stderr", buf)
    assert cli.main([]) == 1
    assert buf.getvalue() == "\r  frame 10 \ninsitu info: error: frame 11: unreadable\n"


class _FixedParser:
    def __init__(self, args):
        self.args = args

    def parse_args(self, argv):
        return self.args
