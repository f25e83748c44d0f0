"""``insitu simulate`` end to end: outputs, plots, and one-line errors with exit 1."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from insitu.analysis.transport.lamella import voronoi_lamella
from insitu.analysis.transport.microstructure import ZRO2, write_microstructure
from insitu.cli import main


@pytest.fixture
def micro_file(tmp_path):
    p = tmp_path / "m.h5"
    write_microstructure(p, voronoi_lamella((48, 64), n_grains=10, seed=3))
    return p


def test_simulate_writes_result_and_csv(micro_file, tmp_path, capsys):
    out = tmp_path / "sim"
    rc = main(["simulate", str(micro_file), "--potential", "top=0", "--potential", "right=2", "--out", str(out),
               "--model", "diagonal", "--plots"])
    assert rc == 0
    with h5py.File(out / "result.h5") as f:
        assert f["potential"].shape == (48, 64) and f["current_density"].shape == (48, 64, 2)
        assert f["field"].shape == (48, 64, 2)
        i_top, i_right = f["electrode_current/top"][()], f["electrode_current/right"][()]
        assert i_right > 0 and abs(i_top + i_right) < 1e-9 * i_right
        assert np.nanmax(f["potential"][()]) == pytest.approx(2.0)
    assert (out / "gb.csv").read_text().startswith("grain_a,grain_b,length_m,j_a,j_b,jump,delta_phi,gb_type,")
    for name in ("potential.png", "current_density.png", "gb_network.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    cap = capsys.readouterr()
    assert "conductance" in cap.out and "model paper" in cap.out
    assert "--model diagonal is deprecated" in cap.err


@pytest.mark.parametrize("args, message", [
    (["--potential", "top=0", "--potential", "bottom=1"], "unknown electrode 'bottom'"),
    (["--potential", "top=0"], "no potential given for electrode 'right'"),
    (["--potential", "top"], "NAME=VOLTS"),
    (["--potential", "top=0", "--potential", "right=abc"], "not a number"),
])
def test_bad_potentials_exit_1(micro_file, tmp_path, capsys, args, message):
    rc = main(["simulate", str(micro_file), "--out", str(tmp_path / "o")] + args)
    err = capsys.readouterr().err
    # one error line; on a cold numba cache (fresh clone, this file alone) the compile notice comes first
    lines = [ln for ln in err.strip().splitlines() if "compiling numerical kernels on first use" not in ln]
    assert rc == 1 and message in err and len(lines) == 1


def test_bad_files_exit_1(micro_file, tmp_path, capsys):
    with h5py.File(micro_file, "a") as f:
        del f["orientations/c_axis"]
        del f["orientations/euler_bunge"]
    rc = main(["simulate", str(micro_file), "--potential", "top=0", "--potential", "right=1", "--out",
               str(tmp_path / "o")])
    assert rc == 1 and "c_axis" in capsys.readouterr().err
    rc = main(["simulate", str(tmp_path / "nope.h5"), "--potential", "top=0", "--out", str(tmp_path / "o")])
    assert rc == 1 and "nope.h5" in capsys.readouterr().err


def test_floating_cluster_warns_or_fails_when_strict(tmp_path, capsys):
    m = voronoi_lamella((40, 40), n_grains=4, seed=1)
    m.grains[15:22, 15:22] = ZRO2
    m.grains[18, 18] = m.grain_ids[0]
    p = tmp_path / "f.h5"
    write_microstructure(p, m)
    base = ["simulate", str(p), "--potential", "top=0", "--potential", "right=1", "--out", str(tmp_path / "o")]
    assert main(base) == 0
    assert "touch no electrode" in capsys.readouterr().err
    assert main(base + ["--strict", "--overwrite"]) == 1
    assert "row 18, column 18" in capsys.readouterr().err


def test_grain_labels_only_where_legible():
    """238 grains (twins.ctf) drew 238 overlapping labels; now only grains big enough, at most 60."""
    import numpy as np

    from insitu.analysis.transport.simulator_plots import MAX_GRAIN_LABELS, legible_grain_labels

    rng = np.random.default_rng(1)
    g = np.zeros((400, 400), int)
    g[:200, :200], g[:200, 200:], g[200:, :] = 1, 2, 3                 # three big grains
    ys, xs = rng.integers(0, 400, 300), rng.integers(0, 400, 300)
    g[ys, xs] = np.arange(4, 304)                                      # 300 one-pixel "grains"
    labels = legible_grain_labels(g, range(1, 304))
    assert [gid for gid, _, _ in labels] == [1, 2, 3]
    gid, x, y = labels[2]
    assert abs(x - 199.5) < 2 and abs(y - 299.5) < 2                    # centroid of the lower half
    many = np.repeat(np.repeat(np.arange(1, 101).reshape(10, 10), 40, 0), 40, 1)   # 100 grains of 40x40 px
    assert len(legible_grain_labels(many, range(1, 101))) == MAX_GRAIN_LABELS


def test_refine_option(micro_file, tmp_path, capsys):
    """--refine R: the solve on an R x finer grid, maps written on the map's grid, the factor said;
    a bad value is a one-line error; floating clusters are reported in the map's voxels."""
    out = tmp_path / "sim"
    base = ["simulate", str(micro_file), "--potential", "top=0", "--potential", "right=1"]
    assert main(base + ["--out", str(out), "--refine", "2"]) == 0
    assert "refine 2: refined 2x as asked" in capsys.readouterr().out
    with h5py.File(out / "result.h5") as f:
        assert f["potential"].shape == (48, 64) and f["current_density"].shape == (48, 64, 2)
    assert main(base + ["--out", str(tmp_path / "o"), "--refine", "two"]) == 1
    assert "--refine two" in capsys.readouterr().err
    m = voronoi_lamella((40, 40), n_grains=4, seed=1)
    m.grains[15:22, 15:22] = ZRO2
    m.grains[18, 18] = m.grain_ids[0]
    p = tmp_path / "f.h5"
    write_microstructure(p, m)
    assert main(["simulate", str(p), "--potential", "top=0", "--potential", "right=1", "--out",
                 str(tmp_path / "f"), "--refine", "3", "--strict"]) == 1
    err = capsys.readouterr().err
    assert "1 voxel(s)" in err and "row 18, column 18" in err
