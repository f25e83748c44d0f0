"""``insitu batch analyze`` on a dask LocalCluster with 2 workers: the table, errors, re-runs, figures."""
from __future__ import annotations

import csv
import json
import os
import time

import numpy as np
import pytest

from insitu.analysis import batch
from insitu.analysis.pipeline import analyze
from insitu.cli import main
from mock_sessions import BIAS_STEP_V, DOSE_STEP, write_mock_session
from dask_cluster import cluster  # noqa: F401  (the module's shared LocalCluster fixture)


def _table(path):
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {os.path.basename(r["session"]): r for r in rows}, list(rows[0]) if rows else []



@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    d = tmp_path_factory.mktemp("sessions")
    write_mock_session(d / "lam1.h5", seed=1)
    write_mock_session(d / "lam1-blank.h5", seed=2, blanked=True)
    write_mock_session(d / "lam2.h5", seed=3)
    (d / "corrupt.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)   # an HDF5 signature, then nothing
    return d


def _run(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_batch_table_and_failed_row(cluster, sessions, tmp_path, capsys):
    addr, workers = cluster
    out = tmp_path / "batch"
    code, stdout, err = _run(["batch", "analyze", str(sessions), "--out", str(out), "--scheduler", addr], capsys)
    assert code == 1                                     # one session failed
    assert "1 failed" in stdout and "corrupt.h5" in err and "Traceback" not in err
    rows, cols = _table(out / "batch.csv")
    assert cols == list(batch.BATCH_COLUMNS)
    assert sorted(rows) == ["corrupt.h5", "lam1-blank.h5", "lam1.h5", "lam2.h5"]
    bad = rows["corrupt.h5"]
    assert bad["status"] == "error" and "corrupt.h5: not a session file" in bad["error"]
    assert bad["n_seeds"] == "0" and bad["first_seed_time_s"] == ""
    for name in ("lam1.h5", "lam1-blank.h5", "lam2.h5"):
        r = rows[name]
        assert r["status"] == "ok" and r["error"] == ""
        assert r["worker"] in workers
        # the same numbers as a standalone analysis of that session, run here in the test process
        single = analyze(sessions / name, tmp_path / f"single-{name}")
        with open(single["seeds"], newline="") as fh:
            seeds = list(csv.DictReader(fh))
        assert int(r["n_frames"]) == 16 and int(r["n_seeds"]) == len(seeds) > 0
        first = min(seeds, key=lambda s: float(s["first_time_s"]))
        assert float(r["first_seed_time_s"]) == pytest.approx(float(first["first_time_s"]), abs=1e-9)
        # bias and dose were recorded as BIAS_STEP_V * k and DOSE_STEP * k (0 with the beam blanked) at frame k
        k = int(first["first_frame"])
        assert float(r["bias_at_first_seed_V"]) == pytest.approx(BIAS_STEP_V * k)
        assert float(r["dose_at_first_seed"]) == pytest.approx(0.0 if "blank" in name else DOSE_STEP * k)
        assert r["auc"] == "" and r["p_value"] == ""     # no correlation inputs given
        assert (out / name[:-3] / "seeds.csv").is_file() and (out / name[:-3] / "report.html").is_file()
    html = (out / "batch.html").read_text()
    for heading in ("Seeds against time, charge and dose", "First-seed bias", "Beam on against beam blanked"):
        assert heading in html
    assert html.count("data:image/png;base64") == 3


def test_rerun_skips_finished_sessions(cluster, sessions, tmp_path, capsys):
    addr, _ = cluster
    out = tmp_path / "batch"
    args = ["batch", "analyze", str(sessions / "lam1.h5"), str(sessions / "lam2.h5"), "--out", str(out),
            "--scheduler", addr, "--quiet"]
    assert _run(args, capsys)[0] == 0
    first = _table(out / "batch.csv")[0]
    stamp = {n: (out / n / "seeds.csv").stat().st_mtime_ns for n in ("lam1", "lam2")}
    time.sleep(0.01)
    code, stdout, _ = _run(args, capsys)
    assert code == 0 and "0 analysed, 2 unchanged (skipped)" in stdout
    assert {n: (out / n / "seeds.csv").stat().st_mtime_ns for n in ("lam1", "lam2")} == stamp
    assert _table(out / "batch.csv")[0] == first          # the stored rows come back unchanged
    # other options are another content: analysed again
    code, stdout, _ = _run(args + ["--threshold", "7"], capsys)      # not the default (6)
    assert code == 0 and "2 analysed, 0 unchanged" in stdout
    # --force analyses again what is unchanged
    code, stdout, _ = _run(args + ["--threshold", "7", "--force"], capsys)
    assert code == 0 and "2 analysed, 0 unchanged" in stdout
    assert (out / "lam1" / "seeds.csv").stat().st_mtime_ns > stamp["lam1"]


def test_changed_session_is_analysed_again_on_an_embedded_cluster(tmp_path, capsys):
    """The default engine (LocalCluster started by the command); a session whose bytes changed is redone."""
    d = tmp_path / "in"
    d.mkdir()
    write_mock_session(d / "a.h5", seed=4, n_frames=8, shape=(64, 64))
    write_mock_session(d / "b.h5", seed=5, n_frames=8, shape=(64, 64))
    out = tmp_path / "out"
    args = ["batch", "analyze", str(d), "--out", str(out), "--workers", "2", "--quiet"]
    assert _run(args, capsys)[0] == 0
    rows = _table(out / "batch.csv")[0]
    assert all(r["worker"].startswith("tcp://127.0.0.1:") for r in rows.values())
    (d / "b.h5").unlink()
    write_mock_session(d / "b.h5", seed=6, n_frames=8, shape=(64, 64))
    code, stdout, _ = _run(args, capsys)
    assert code == 0 and "1 analysed, 1 unchanged (skipped)" in stdout
    assert json.loads((out / "b" / batch.DONE_FILE).read_text())["key"] != \
        json.loads((out / "a" / batch.DONE_FILE).read_text())["key"]


def test_bad_input_is_one_line_exit_1(cluster, sessions, tmp_path, capsys):
    addr, _ = cluster
    for args, words in [
        (["batch", "analyze", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "o")], "no such file"),
        (["batch", "analyze", str(sessions), "--out", str(tmp_path / "o"), "--workers", "0"], "--workers 0"),
        (["batch", "analyze", str(sessions), "--out", str(tmp_path / "o"), "--persistence", "0"], "--persistence"),
        (["batch", "analyze", str(sessions), "--out", str(tmp_path / "o"), "--microstructure", "m.h5"],
         "both --microstructure and --simulation"),
    ]:
        code, _, err = _run(args, capsys)
        assert code == 1 and words in err and "Traceback" not in err, (args, err)
        assert len(err.strip().splitlines()) == 1
    # two inputs that would write to the same folder
    (tmp_path / "x").mkdir()
    write_mock_session(tmp_path / "x" / "lam1.h5", seed=1, n_frames=6, shape=(64, 64))
    code, _, err = _run(["batch", "analyze", str(sessions / "lam1.h5"), str(tmp_path / "x" / "lam1.h5"),
                         "--out", str(tmp_path / "o")], capsys)
    assert code == 1 and "rename one" in err
    # --workers and --scheduler together: a usage error
    with pytest.raises(SystemExit) as e:
        main(["batch", "analyze", str(sessions), "--out", str(tmp_path / "o"), "--workers", "2", "--scheduler", addr])
    assert e.value.code == 1 and "not allowed with" in capsys.readouterr().err


def test_unreachable_scheduler_is_one_line_exit_1(sessions, tmp_path, capsys, monkeypatch):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                             # a loopback port nobody listens on
    monkeypatch.setattr("insitu.core.scaleout.CONNECT_TIMEOUT_S", 2.0)
    t0 = time.monotonic()
    code, _, err = _run(["batch", "analyze", str(sessions / "lam1.h5"), "--out", str(tmp_path / "o"),
                         "--scheduler", f"tcp://127.0.0.1:{port}"], capsys)
    assert code == 1 and f"cannot reach the dask scheduler at tcp://127.0.0.1:{port}" in err
    assert len(err.strip().splitlines()) == 1 and time.monotonic() - t0 < 30


def test_pair_key_and_beam_pairs():
    assert batch.pair_key("lam3-beam-blank.h5") == batch.pair_key("lam3.h5") == batch.pair_key("Lam3_on.h5") == "lam3"
    assert batch.pair_key("lam3.h5") != batch.pair_key("lam4-blank.h5")
    rows = [dict(session=s, status="ok") for s in ("a.h5", "a-blank.h5", "b.h5", "c-blank.h5")]
    figs = [dict(beam=b) for b in ("on", "blank", "on", "blank")]
    pairs = batch.beam_pairs(rows, figs)
    assert [(k, on["session"], off["session"]) for k, on, off in pairs] == [("a", "a.h5", "a-blank.h5")]


def test_content_hash_of_a_folder_sees_names_and_bytes(tmp_path):
    d = tmp_path / "frames"
    d.mkdir()
    (d / "f0.tif").write_bytes(b"abc")
    h0 = batch.content_hash(d)
    (d / "f0.tif").write_bytes(b"abd")
    h1 = batch.content_hash(d)
    (d / "f0.tif").rename(d / "f1.tif")
    assert len({h0, h1, batch.content_hash(d)}) == 3
    import hashlib

    assert batch.content_hash(d / "f1.tif") == hashlib.sha256(b"abd").hexdigest()
    assert np.isnan(batch._nan(None))


def test_stopped_batch_keeps_the_rows_that_finished(cluster, sessions, tmp_path, capsys, monkeypatch):
    """Ctrl-C after the first session: exit 3, and batch.csv holds that session's row; the rest say so."""
    import insitu.core.scaleout as so

    real = so.run_tasks

    def first_then_interrupt(*a, **kw):
        for item in real(*a, **kw):
            yield item
            raise KeyboardInterrupt

    monkeypatch.setattr(so, "run_tasks", first_then_interrupt)
    addr, _ = cluster
    out = tmp_path / "stopped"
    code, _, err = _run(["batch", "analyze", str(sessions / "lam1.h5"), str(sessions / "lam2.h5"), "--out", str(out),
                         "--scheduler", addr, "--quiet"], capsys)
    assert code == 3 and "interrupted" in err
    rows = _table(out / "batch.csv")[0]
    assert sorted(r["status"] for r in rows.values()) == ["error", "ok"]
    assert any("not finished" in r["error"] for r in rows.values())


def test_correlation_columns_come_from_each_sessions_statistics(cluster, tmp_path, capsys):
    """batch.csv's auc / p_value are each session's statistics.json numbers (empty where it has none);
    192² sessions, so that seeds sit on GBs away from the electrode and one session has an AUC."""
    from insitu.analysis.transport.lamella import voronoi_lamella
    from insitu.analysis.transport.microstructure import write_microstructure
    from insitu.analysis.transport.simulator import save_result, simulate

    shape = (192, 192)
    m = voronoi_lamella(shape, n_grains=25, seed=1)           # the frames' shape: no --map-transform
    write_microstructure(tmp_path / "m.h5", m)
    save_result(simulate(m, {"top": 0.0, "right": 1.0}), tmp_path / "sim")
    for seed, n_seeds in ((3, 6), (4, 10)):
        write_mock_session(tmp_path / f"lam{seed}.h5", seed=seed, n_seeds=n_seeds, shape=shape)
    out = tmp_path / "o"
    assert _run(["batch", "analyze", str(tmp_path / "lam3.h5"), str(tmp_path / "lam4.h5"), "--out", str(out),
                 "--microstructure", str(tmp_path / "m.h5"), "--simulation", str(tmp_path / "sim"),
                 "--scheduler", cluster[0], "--quiet"], capsys)[0] == 0
    numbers = 0
    for name, r in _table(out / "batch.csv")[0].items():
        st = json.loads((out / name[:-3] / "statistics.json").read_text())
        for key in ("auc", "p_value"):
            if st[key] is None or st[key] != st[key]:   # no number (too few seed-carrying GBs): empty cell
                assert r[key] == "", (key, r[key])
            else:
                assert float(r[key]) == pytest.approx(st[key], rel=1e-12) and 0.0 <= st[key] <= 1.0
                numbers += 1
    assert numbers >= 1          # the numeric path is exercised, not only the empty cells


def test_progress_bar_on_a_terminal_and_lines_elsewhere(monkeypatch):
    import io

    from insitu.core.scaleout import _Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    for stream, want in ((Tty(), "3/3"), (io.StringIO(), "sessions [3/3] c.h5: ok")):
        monkeypatch.setattr("sys.stderr", stream)
        bar = _Progress(3, "sessions", True)
        for name in ("a.h5", "b.h5", "c.h5"):
            bar.step(f"{name}: ok")
        bar.close()
        assert want in stream.getvalue()
    quiet = io.StringIO()
    monkeypatch.setattr("sys.stderr", quiet)
    bar = _Progress(1, "sessions", False)
    bar.step("a.h5: ok")
    bar.close()
    assert quiet.getvalue() == ""
