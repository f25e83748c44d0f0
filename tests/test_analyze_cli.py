"""``insitu analyze`` end to end: folders of TIFFs, session files (also live), real files, bad input."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest

from insitu.analysis.pipeline import analyze
from insitu.analysis.image.seeds import SEED_COLUMNS, match_seeds
from insitu.cli import main
from insitu.core.records import BiasSample, FrameRecord
from insitu.core.session import SessionWriter
from seriesgen import make_series


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def _seeds(path):
    rows = _rows(path)
    cols = rows[0]
    return {c: np.array([float(r[i]) for r in rows[1:]]) for i, c in enumerate(cols)}, cols


@pytest.fixture(scope="module")
def series():
    return make_series(n_frames=24, shape=(128, 128), seed=3, n_seeds=4)


@pytest.fixture
def tiff_folder(tmp_path, series):
    import tifffile

    d = tmp_path / "frames"
    d.mkdir()
    for k, f in enumerate(series.frames):
        tifffile.imwrite(d / f"frame_{k}.tif", f.astype(np.float32))   # natural order: frame_2 < frame_10
    with open(d / "frames.csv", "w") as fh:
        fh.write("index,time_s\n")
        for k, t in enumerate(series.times):
            fh.write(f"{k},{t + 100.0}\n")
    return d


def _write_session(path, series, n=None, truth=True, delay_s=0.0, frames=True):
    # with the frame shape given up front the file's structure is fixed before a live reader opens it
    with SessionWriter(path, start_time_iso="2026-01-01T00:00:00+00:00", flush_interval_s=0.05,
                       frame_shape=series.frames.shape[1:], frame_dtype=np.float32) as w:
        for k in range(n if n is not None else len(series.frames)):
            t = float(series.times[k])
            w.write(BiasSample(t, 0.1 * k, 0.1 * k, 1e-9 * k, False))
            if frames:
                w.write(FrameRecord(time_s=t, data=series.frames[k].astype(np.float32), bias_V=0.1 * k,
                                    current_A=1e-9 * k, blanked=False, dose=float(k), pixel_size_m=1e-9))
            if delay_s:
                w.flush()
                time.sleep(delay_s)
        if truth:
            w.write_group("/entry/sample/truth/seeds", {"x_px": series.seeds["x_px"], "y_px": series.seeds["y_px"],
                                                        "first_frame": series.seeds["first_frame"]})
    return path


def test_folder_of_tiffs(tiff_folder, tmp_path, series, capsys):
    out = tmp_path / "out"
    assert main(["analyze", str(tiff_folder), "--out", str(out)]) == 0
    msg = capsys.readouterr().out
    assert "24 frames" in msg
    drift = _rows(out / "drift.csv")
    assert drift[0] == ["frame", "dx_px", "dy_px"] and len(drift) == 25
    est = np.array([[float(r[1]), float(r[2])] for r in drift[1:]])
    assert np.median(np.abs(est - series.drift)) < 0.3
    seeds, cols = _seeds(out / "seeds.csv")
    assert tuple(cols) == SEED_COLUMNS
    sc = match_seeds(seeds, series.seeds)
    assert sc["f1"] >= 0.75
    # times come from frames.csv
    assert np.allclose(seeds["first_time_s"], series.times[seeds["first_frame"].astype(int)] + 100.0, atol=1e-3)
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4
    assert "src=\"http" not in html and "<script" not in html
    import h5py

    with h5py.File(out / "differential.h5", "r") as f:
        assert f["differential"].shape == (21, 128, 128)   # frames 0-2 start the reference
        assert f["frame"][()].tolist() == list(range(3, 24))
        assert f["differential"].attrs["units"] == "sigma"


def test_session_file_with_truth(tmp_path, series, capsys):
    s = _write_session(tmp_path / "s.h5", series)
    out = tmp_path / "out"
    assert main(["analyze", str(s), "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_frames"] == 24
    assert summary["truth"]["f1"] >= 0.75
    html = (out / "report.html").read_text()
    assert "bias and seeds" in html          # the bias/current figure is there for sessions
    assert "ground truth" in capsys.readouterr().out


_WRITER = """
import sys, time, numpy as np
from insitu.core.records import BiasSample, FrameRecord
from insitu.core.session import SessionWriter
frames, times = np.load(sys.argv[2]), np.load(sys.argv[3])
with SessionWriter(sys.argv[1], start_time_iso="2026-01-01T00:00:00+00:00", flush_interval_s=0.05,
                   frame_shape=frames.shape[1:], frame_dtype=np.float32) as w:
    for k in range(len(frames)):
        w.write(BiasSample(float(times[k]), 0.0, 0.0, 0.0, False))
        w.write(FrameRecord(time_s=float(times[k]), data=frames[k], bias_V=0.0, current_A=0.0, blanked=False,
                            dose=float(k), pixel_size_m=1e-9))
        w.flush()
        time.sleep(0.08)
"""


def test_live_session_written_by_another_process(tmp_path, series):
    """--live follows a session another process is writing, and ends with what an offline run finds."""
    import subprocess
    import sys

    np.save(tmp_path / "f.npy", series.frames.astype(np.float32))
    np.save(tmp_path / "t.npy", series.times)
    path = tmp_path / "live.h5"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(tmp_path / "f.npy"),
                             str(tmp_path / "t.npy")])
    try:
        t0 = time.monotonic()
        while not path.exists() and time.monotonic() - t0 < 20:
            time.sleep(0.02)
        time.sleep(0.3)
        seen = []
        paths = analyze(path, tmp_path / "out", live=True, poll_s=0.05, idle_timeout_s=30,
                        progress=lambda k, n: seen.append(k))
    finally:
        assert proc.wait(timeout=60) == 0
    assert len(_rows(paths["drift"])) == 25
    assert seen[-1] == 24 and len(seen) == 24
    ref = analyze(path, tmp_path / "out2")
    assert _rows(ref["drift"]) == _rows(paths["drift"])   # every frame was read as written
    assert _rows(ref["seeds"]) == _rows(paths["seeds"])


def test_correlation_outputs(tmp_path, series):
    from insitu.analysis.transport.microstructure import Microstructure, write_microstructure
    from insitu.analysis.transport.simulator import save_result, simulate
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:128, 0:128]
    _, lab = cKDTree(rng.uniform(0, 128, (30, 2))).query(np.column_stack([yy.ravel(), xx.ravel()]))
    grains = (lab.reshape(128, 128) + 1).astype(np.int32)
    c = rng.normal(size=(30, 3))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    top = np.zeros((128, 128), bool)
    top[:2] = True
    right = np.zeros((128, 128), bool)
    right[2:, -2:] = True
    grains[top | right] = 0
    grains[100:105, 10:15] = -1                   # a ZrO2 ring around one voxel: a floating cluster
    grains[102, 12] = grains[99, 12]
    m = Microstructure(grains=grains, grain_ids=np.arange(1, 31), c_axis=c, electrodes=dict(top=top, right=right),
                       voxel_size_m=1e-8)
    write_microstructure(tmp_path / "m.h5", m)
    with pytest.warns(UserWarning, match="touch no electrode"):
        save_result(simulate(m, {"top": 0.0, "right": 1.0}), tmp_path / "sim")
    s = _write_session(tmp_path / "s.h5", series, truth=False)
    out = tmp_path / "out"
    assert main(["analyze", str(s), "--out", str(out), "--microstructure", str(tmp_path / "m.h5"),
                 "--simulation", str(tmp_path / "sim")]) == 0
    rows = _rows(out / "correlation.csv")
    for col in ("seed_id", "grain_a", "grain_b", "gb_distance_px", "jump", "delta_phi", "gb_type", "blocking",
                "dist_top_px", "dist_right_px"):
        assert col in rows[0]
    n_seeds = len(_rows(out / "seeds.csv")) - 1
    assert len(rows) - 1 == n_seeds > 0
    st = json.loads((out / "statistics.json").read_text())
    assert st["negative_electrode"] == "top" and st["unit"] == "GB"
    assert st["interface_seeds"] + st["seeds_on_gb"] + st["off_gb_seeds"] == st["seeds_total"] == n_seeds
    assert st["p_value"] is None or 0.0 < st["p_value"] <= 1.0
    assert {r[rows[0].index("seed_class")] for r in rows[1:]} <= {"interface", "gb", "off_gb"}
    assert (out / "gb_statistics.csv").is_file()
    assert "Seeds on the GB map" in (out / "report.html").read_text()
    assert "1 conducting cluster(s) touch no electrode: 1 voxel(s)" in (out / "report.html").read_text()
    # a map of another shape without --map-transform is refused, naming the file ...
    m2 = Microstructure(grains=grains[:100], grain_ids=np.arange(1, 31), c_axis=c,
                        electrodes=dict(top=top[:100], right=right[:100]), voxel_size_m=1e-8)
    write_microstructure(tmp_path / "m2.h5", m2)
    assert main(["analyze", str(s), "--out", str(tmp_path / "o2"), "--microstructure", str(tmp_path / "m2.h5"),
                 "--simulation", str(tmp_path / "sim")]) == 1
    # ... and accepted with one
    assert main(["analyze", str(s), "--out", str(tmp_path / "o3"), "--microstructure", str(tmp_path / "m2.h5"),
                 "--simulation", str(tmp_path / "sim"), "--map-transform", "1,0,0,0.5"]) == 0


REAL = ["fei_emd_image.emd", "EMDReader_SpectrumImage_Si.emd", "fei_example_tem_stack.emd",
        "STEM HAADF Diffraction Micro.emd", "test_STEM_image.dm3", "test_stackbuilder_imagestack.dm3",
        "dmTest_3D_int16_64,65,66.dm4", "test_loading_image_saved_with_DM_stack.tif",
        "test_loading_image_saved_with_imageJ_stack.tif"]


@pytest.mark.parametrize("name", REAL)
def test_real_files_run_and_say_why_nothing_was_found(real_data, tmp_path, name, capsys):
    path = real_data / name
    if not path.exists():
        pytest.skip(f"{name} not in {real_data}")
    assert main(["analyze", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "0 seeds" in out
    assert "No seeds found: " in out
    assert ("only" in out and "need at least" in out) or "too small" in out or "no change passed" in out
    assert (tmp_path / "out" / "report.html").is_file()


def test_real_stack_folder_with_identical_frames(real_data, tmp_path, capsys):
    """Two TIFF stacks of identical frames in one folder: 4 frames, nothing changes, nothing found."""
    import shutil

    d = tmp_path / "f"
    d.mkdir()
    for n in ("test_loading_image_saved_with_DM_stack.tif", "test_loading_image_saved_with_imageJ_stack.tif"):
        shutil.copy(real_data / n, d / n)
    assert main(["analyze", str(d), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "4 frames, 0 seeds" in out


# -- bad input -----------------------------------------------------------------------------------------
def test_mixed_shapes_exit_1_and_keep_what_was_done(tiff_folder, tmp_path, capsys):
    import tifffile

    tifffile.imwrite(tiff_folder / "frame_30.tif", np.zeros((64, 64), np.float32))
    out = tmp_path / "out"
    assert main(["analyze", str(tiff_folder), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "frame_30.tif" in err and "64×64" in err and "128×128" in err
    # one error line; the rest is the progress log ("frame N" lines when stderr is not a terminal)
    assert len([ln for ln in err.strip().splitlines() if not ln.strip().startswith("frame ")]) == 1
    assert not out.exists()                               # nothing that looks finished ...
    inc = tmp_path / "out.incomplete"
    assert str(inc) in err
    assert len(_rows(inc / "drift.csv")) == 25            # ... but the 24 good frames stay on disk
    assert _rows(inc / "seeds.csv")[0] == list(SEED_COLUMNS)


def test_unreadable_file_exit_1(tiff_folder, tmp_path, capsys):
    (tiff_folder / "frame_5.tif").write_bytes(b"this is not a tiff")
    assert main(["analyze", str(tiff_folder), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "frame_5.tif" in err
    assert not (tmp_path / "out").exists()
    assert len(_rows(tmp_path / "out.incomplete" / "drift.csv")) == 6   # frames 0..4 were analysed


def test_empty_folder_missing_path_and_bad_frames_csv(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["analyze", str(empty), "--out", str(tmp_path / "o")]) == 1
    assert "no image files" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 1
    assert "no such file" in capsys.readouterr().err
    import tifffile

    d = tmp_path / "d"
    d.mkdir()
    tifffile.imwrite(d / "a.tif", np.zeros((40, 40), np.float32))
    (d / "frames.csv").write_text("frame,t\n0,1\n")
    assert main(["analyze", str(d), "--out", str(tmp_path / "o")]) == 1
    assert "frames.csv" in capsys.readouterr().err
    tifffile.imwrite(d / "b.tif", np.zeros((40, 40), np.float32))
    (d / "frames.csv").write_text("index,time_s\n0,1.5\n")           # no time for frame 1
    assert main(["analyze", str(d), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "frames.csv" in err and "frame 1" in err


def test_session_without_frames_and_not_a_session(tmp_path, series, capsys):
    s = _write_session(tmp_path / "nof.h5", series, n=3, truth=False, frames=False)
    assert main(["analyze", str(s), "--out", str(tmp_path / "o")]) == 1
    assert "no frames" in capsys.readouterr().err
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    assert main(["analyze", str(tmp_path / "other.h5"), "--out", str(tmp_path / "o")]) == 1
    assert "other.h5" in capsys.readouterr().err


def test_bad_options(tiff_folder, tmp_path, capsys):
    assert main(["analyze", str(tiff_folder), "--out", str(tmp_path / "o"), "--map-transform", "1,2"]) == 1
    assert "map-transform" in capsys.readouterr().err
    assert main(["analyze", str(tiff_folder), "--out", str(tmp_path / "o"), "--microstructure", "x.h5"]) == 1
    assert main(["analyze", str(tiff_folder), "--out", str(tmp_path / "o"), "--persistence", "0"]) == 1
