"""Issue 18, atomic outputs: one --overwrite rule; temporary names renamed when complete; a full disk
is one line, exit 1, and nothing at the final name. Each test failed on the code before the fix."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from filetools import can_mount_tmpfs, one_line_error
from insitu.cli import main
from insitu.core.records import BiasSample, FrameRecord
from insitu.core.session import SessionWriter, open_session

ROOT = Path(__file__).resolve().parents[1]
T0 = "2026-01-01T00:00:00+00:00"


def _session(path, n=8, shape=(48, 48)):
    rng = np.random.default_rng(3)
    with SessionWriter(path, start_time_iso=T0) as w:
        for i in range(n):
            w.write(BiasSample(1.0 * i, 1.0, 1.0, 1e-9, False))
            w.write(FrameRecord(1.0 * i, rng.poisson(100, shape).astype(np.uint16), 1.0, 1e-9, False, 0.0, 2e-9))
    return path


def _leftovers(folder: Path):
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name)


def test_analyze_rerun_refuses_or_replaces_the_whole_set(tmp_path, capsys):
    """Old code: a re-run wrote into the folder; stale correlation.csv/statistics.json/report.html stayed."""
    s = _session(tmp_path / "s.h5")
    out = tmp_path / "an"
    assert main(["analyze", str(s), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    for stale in ("correlation.csv", "statistics.json"):
        (out / stale).write_text("from an older run\n")
    (out / "report.html").write_text("old report")
    assert main(["analyze", str(s), "--out", str(out), "--quiet"]) == 1
    assert "--overwrite" in one_line_error(capsys)
    assert (out / "report.html").read_text() == "old report"  # refused: untouched
    assert main(["analyze", str(s), "--out", str(out), "--quiet", "--overwrite"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert "correlation.csv" not in names and "statistics.json" not in names
    assert "seeds.csv" in names and (out / "report.html").read_text() != "old report"
    assert _leftovers(tmp_path) == []


def test_simulate_rerun_and_out_that_is_a_file(tmp_path, capsys):
    """Old code: `simulate --out FILE` was a traceback; a re-run mixed old and new files."""
    from insitu.analysis.transport.lamella import voronoi_lamella
    from insitu.analysis.transport.microstructure import write_microstructure

    m = tmp_path / "m.h5"
    write_microstructure(m, voronoi_lamella((24, 24), n_grains=3, seed=2))
    base = ["simulate", str(m), "--potential", "top=0", "--potential", "right=1"]
    (tmp_path / "afile").write_text("x")
    assert main(base + ["--out", str(tmp_path / "afile")]) == 1
    assert "exists" in one_line_error(capsys)
    assert main(base + ["--out", str(tmp_path / "afile"), "--overwrite"]) == 1
    assert "is a file" in one_line_error(capsys)
    assert (tmp_path / "afile").read_text() == "x"
    out = tmp_path / "sim"
    assert main(base + ["--out", str(out)]) == 0
    (out / "potential.png").write_bytes(b"stale plot")
    capsys.readouterr()
    assert main(base + ["--out", str(out)]) == 1
    assert "--overwrite" in one_line_error(capsys)
    assert main(base + ["--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["gb.csv", "result.h5"]
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("rtol", ["-1", "0", "nan", "2"])
def test_simulate_bad_rtol_is_one_line(tmp_path, capsys, rtol):
    """Old code: `simulate --rtol -1` was a traceback."""
    from insitu.analysis.transport.lamella import voronoi_lamella
    from insitu.analysis.transport.microstructure import write_microstructure

    m = tmp_path / "m.h5"
    write_microstructure(m, voronoi_lamella((24, 24), n_grains=3, seed=2))
    assert main(["simulate", str(m), "--potential", "top=0", "--potential", "right=1", "--out",
                 str(tmp_path / "o"), "--rtol", rtol]) == 1
    assert "--rtol" in one_line_error(capsys)
    assert not (tmp_path / "o").exists()


def test_failed_export_leaves_nothing_at_the_final_name(tmp_path, capsys, monkeypatch):
    """A writer that fails half-way (here HyperSpy's save, after writing part of the file)."""
    import errno

    import hyperspy.signal

    s = _session(tmp_path / "s.h5")

    def half_then_full(self, filename, *a, **k):
        Path(filename).write_bytes(b"\x89HDF half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(hyperspy.signal.BaseSignal, "save", half_then_full)
    assert main(["export", str(s), "--to", "hspy", "--out", str(tmp_path / "x.hspy")]) == 1
    assert "No space left on device" in one_line_error(capsys)
    assert not (tmp_path / "x.hspy").exists() and _leftovers(tmp_path) == []
    assert main(["export", str(s), "--to", "tiff", "--out", str(tmp_path / "x.tif")]) == 1
    one_line_error(capsys)
    assert not (tmp_path / "x.tif").exists() and not (tmp_path / "x.tif.frames.csv").exists()
    assert _leftovers(tmp_path) == []


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs `unshare -rm` to mount a small tmpfs")
def test_export_analyze_import_on_a_full_disk(tmp_path, real_data):
    """A real full filesystem (2 MB tmpfs, ballast leaving 200 kB): each verb one line, exit 1, and no
    file or folder at the final name. Old code: partial files at the final names."""
    s = _session(tmp_path / "s.h5", n=30, shape=(96, 96))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    py = sys.executable
    verbs = {"export": f"export {s} --to hspy --out {mnt}/x.hspy",
             "analyze": f"analyze {s} --out {mnt}/an --quiet",
             "import": f"import '{real_data / 'dmTest_3D_int16_64,65,66.dm4'}' --out {mnt}/imp.h5"}
    lines = [f"mount -t tmpfs -o size=2m tmpfs {mnt} || exit 90",
             f"{py} -c \"import os; st = os.statvfs('{mnt}'); "
             f"open('{mnt}/ballast', 'wb').write(bytes(st.f_bavail * st.f_frsize - 200 * 1024))\""]
    for name, cmd in verbs.items():
        lines.append(f"{py} -m insitu {cmd} > {tmp_path}/{name}.out 2> {tmp_path}/{name}.err; "
                     f"echo $? > {tmp_path}/{name}.rc")
    lines.append(f"ls -a {mnt} > {tmp_path}/ls.txt")
    r = subprocess.run(["unshare", "-rm", "sh", "-c", "\n".join(lines)], cwd=ROOT, timeout=300)
    assert r.returncode == 0
    for name in verbs:
        err = (tmp_path / f"{name}.err").read_text().strip()
        assert (tmp_path / f"{name}.rc").read_text().strip() == "1", (name, err)
        assert len(err.splitlines()) == 1 and "Traceback" not in err, (name, err)
        assert "No space left on device" in err, (name, err)
    assert sorted((tmp_path / "ls.txt").read_text().split()) == [".", "..", "ballast"]
