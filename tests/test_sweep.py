"""``insitu sweep`` on a dask LocalCluster with 2 workers, against standalone ``insitu simulate`` runs."""
from __future__ import annotations

import csv
import itertools
from dataclasses import replace

import numpy as np
import pytest

from insitu.analysis import sweep
from insitu.analysis.transport.lamella import voronoi_lamella
from insitu.analysis.transport.microstructure import write_microstructure
from insitu.analysis.transport.simulator import GB_COLUMNS, lone_electrode, simulate, superpose, unit_potentials
from insitu.cli import main
from insitu.core.errors import UserError
from dask_cluster import cluster  # noqa: F401  (the module's shared LocalCluster fixture)

GRID = {"gb_ratio": (5.0, 40.0), "anisotropy": (100.0, 1000.0)}
POTS = {"top": 0.5, "right": 3.0}      # not a unit solution: the sweep scales by 2.5 and shifts by 0.5 V


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _rel(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1e-300)



@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    m = voronoi_lamella((48, 48), n_grains=12, seed=2)
    path = tmp_path_factory.mktemp("micro") / "m.h5"
    write_microstructure(path, m)
    return path, m


def _sweep_args(mpath, out, addr, pots=POTS):
    args = ["sweep", str(mpath), "--out", str(out), "--scheduler", addr, "--quiet"]
    for k, v in pots.items():
        args += ["--potential", f"{k}={v}"]
    for k, vals in GRID.items():
        args += ["--param", f"{k}=" + ",".join(str(v) for v in vals)]
    return args


def test_sweep_rows_equal_standalone_simulate(cluster, micro, tmp_path, capsys):
    addr, workers = cluster
    mpath, m = micro
    out = tmp_path / "sweep"
    assert main(_sweep_args(mpath, out, addr)) == 0
    assert "4 combinations (0 failed), 5 linear solve(s)" in capsys.readouterr().out   # 4 + the reference
    rows = _csv(out / "sweep.csv")
    cols = list(rows[0])
    assert cols[:2] == ["gb_ratio", "anisotropy"] and cols[-1] == "worker"
    assert sorted(cols[2:-1]) == ["current_right_A", "current_top_A"]
    assert [(float(r["gb_ratio"]), float(r["anisotropy"])) for r in rows] == list(itertools.product(*GRID.values()))
    gb_rows = _csv(out / "gb_sweep.csv")
    assert list(gb_rows[0]) == ["gb_ratio", "anisotropy"] + list(GB_COLUMNS) + ["rank"]
    for r in rows:
        assert r["worker"] in workers
        # the same material written to a file and run through 'insitu simulate'
        params = {k: float(r[k]) for k in GRID}
        m2 = voronoi_lamella((48, 48), n_grains=12, seed=2, **params)
        p2 = tmp_path / f"m-{params['gb_ratio']}-{params['anisotropy']}.h5"
        write_microstructure(p2, m2)
        sim = tmp_path / f"sim-{p2.stem}"
        assert main(["simulate", str(p2), "--potential", f"top={POTS['top']}",
                     "--potential", f"right={POTS['right']}", "--out", str(sim)]) == 0
        capsys.readouterr()
        ref = simulate(m2, POTS)                             # its currents (gb.csv holds the GB table)
        for e in ("top", "right"):
            assert _rel(float(r[f"current_{e}_A"]), ref.electrode_current[e]) < 1e-6
        mine = {(int(g["grain_a"]), int(g["grain_b"])): g for g in gb_rows
                if float(g["gb_ratio"]) == params["gb_ratio"] and float(g["anisotropy"]) == params["anisotropy"]}
        theirs = _csv(sim / "gb.csv")
        assert len(mine) == len(theirs) > 5
        for g in theirs:
            s = mine[(int(g["grain_a"]), int(g["grain_b"]))]
            for c in ("length_m", "j_a", "j_b", "jump", "delta_phi"):
                assert _rel(float(s[c]), float(g[c])) < 1e-6 or abs(float(s[c]) - float(g[c])) < 1e-12, c
            assert s["gb_type"] == g["gb_type"] and s["blocking"] == g["blocking"]
        # rank 1 .. n by |jump| within the combination
        order = sorted(mine.values(), key=lambda g: int(g["rank"]))
        assert [int(g["rank"]) for g in order] == list(range(1, len(order) + 1))
        jumps = [abs(float(g["jump"])) for g in order]
        assert jumps == sorted(jumps, reverse=True)
    html = (out / "sweep.html").read_text()
    assert "Stability against the reference" in html and "Which parameters move the blocking GBs" in html


def test_bias_change_solves_nothing(cluster, micro, tmp_path, capsys):
    """A second sweep at another bias reuses the stored unit solutions: no solve, currents scale exactly."""
    addr, _ = cluster
    mpath, _ = micro
    out = tmp_path / "sweep"
    assert main(_sweep_args(mpath, out, addr)) == 0
    capsys.readouterr()
    first = _csv(out / "sweep.csv")
    pots2 = {"top": -1.0, "right": 11.0}
    assert main(_sweep_args(mpath, out, addr, pots2)) == 0
    assert "0 linear solve(s)" in capsys.readouterr().out
    second = _csv(out / "sweep.csv")
    factor = (pots2["right"] - pots2["top"]) / (POTS["right"] - POTS["top"])
    for a, b in zip(first, second):
        for e in ("top", "right"):
            assert _rel(float(b[f"current_{e}_A"]), factor * float(a[f"current_{e}_A"])) < 1e-12
    # and the stored solution gives the same as a fresh solve at that bias
    m2 = voronoi_lamella((48, 48), n_grains=12, seed=2, gb_ratio=5.0, anisotropy=100.0)
    assert _rel(float(second[0]["current_right_A"]), simulate(m2, pots2).electrode_current["right"]) < 1e-6
    # reversed polarity: the top electrode's unit solutions are solved once (4 combinations + the reference)
    pots3 = {"top": 2.0, "right": 0.0}
    assert main(_sweep_args(mpath, out, addr, pots3)) == 0
    assert "5 linear solve(s)" in capsys.readouterr().out
    third = _csv(out / "sweep.csv")
    r3 = simulate(m2, pots3)
    assert _rel(float(third[0]["current_top_A"]), r3.electrode_current["top"]) < 1e-6
    gb3 = [g for g in _csv(out / "gb_sweep.csv") if float(g["gb_ratio"]) == 5.0 and float(g["anisotropy"]) == 100.0]
    i = int(np.argmax(np.abs(r3.gb_table["jump"])))
    g = next(g for g in gb3 if (int(g["grain_a"]), int(g["grain_b"])) ==
             (int(r3.gb_table["grain_a"][i]), int(r3.gb_table["grain_b"][i])))
    assert _rel(float(g["jump"]), r3.gb_table["jump"][i]) < 1e-6 and g["gb_type"] == r3.gb_table["gb_type"][i]


def test_three_distinct_potentials_solve_directly(cluster, tmp_path, capsys):
    """With three distinct electrode potentials the GB table is not a superposition: one solve per combination."""
    addr, _ = cluster
    m = voronoi_lamella((40, 40), n_grains=10, seed=4)
    left = np.zeros(m.shape, bool)
    left[18:24, 0] = True
    m.electrodes["left"] = left
    write_microstructure(tmp_path / "m3.h5", m)
    pots = {"top": 0.0, "right": 1.0, "left": 0.4}
    assert main(["sweep", str(tmp_path / "m3.h5"), "--out", str(tmp_path / "o"), "--scheduler", addr, "--quiet",
                 "--potential", "top=0", "--potential", "right=1", "--potential", "left=0.4",
                 "--param", "backbone_ratio=50,500"]) == 0
    assert "2 combinations (0 failed), 3 linear solve(s)" in capsys.readouterr().out
    rows = _csv(tmp_path / "o" / "sweep.csv")
    for r in rows:
        ref = simulate(replace(m, backbone_ratio=float(r["backbone_ratio"])), pots)
        for e in pots:
            assert _rel(float(r[f"current_{e}_A"]), ref.electrode_current[e]) < 1e-6


def test_bad_sweep_input_is_one_line_exit_1(cluster, micro, tmp_path, capsys):
    addr, _ = cluster
    mpath, _ = micro
    base = ["sweep", str(mpath), "--out", str(tmp_path / "o"), "--scheduler", addr]
    for extra, words in [
        (["--potential", "top=0", "--potential", "right=1", "--param", "colour=1,2"], "unknown parameter"),
        (["--potential", "top=0", "--potential", "right=1", "--param", "gb_ratio=1,x"], "'x' is not a number"),
        (["--potential", "top=0", "--potential", "right=1", "--param", "gb_ratio=-1"], "positive"),
        (["--potential", "top=0", "--potential", "right=1"], "at least one --param"),
        (["--potential", "top=0", "--param", "gb_ratio=1,2"], "no --potential for 'right'"),
        (["--potential", "top=0", "--potential", "right=1", "--potential", "left=2", "--param", "gb_ratio=1"],
         "unknown electrode 'left'"),
    ]:
        assert main(base + extra) == 1
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, err
    assert main(["sweep", str(tmp_path / "nope.h5"), "--out", str(tmp_path / "o"), "--potential", "top=0",
                 "--potential", "right=1", "--param", "gb_ratio=1"]) == 1


def test_parameter_grid_and_ranks():
    g = sweep.parameter_grid(["gb_ratio=10,20,40", "anisotropy=100,1000", "gb_thickness_m=0"])
    assert len(g) == 6 and g[1] == {"gb_ratio": 10.0, "anisotropy": 1000.0, "gb_thickness_m": 0.0}
    for bad in (["gb_ratio"], ["gb_ratio=1,1"], ["gb_ratio=1", "gb_ratio=2"], ["sigma_ip=0"]):
        with pytest.raises(UserError):
            sweep.parameter_grid(bad)
    assert sweep.jump_ranks([0.5, -3.0, 1.0, 3.0]).tolist() == [4, 1, 3, 2]


def test_superpose_equals_a_solve_and_refuses_what_it_cannot_do():
    m = voronoi_lamella((40, 40), n_grains=10, seed=1)
    unit = simulate(m, unit_potentials(m.electrodes, "right"))
    pots = {"top": -2.0, "right": 5.0}
    a, b = superpose({"right": unit}, pots), simulate(m, pots)
    span = 7.0      # V: roundoff of a direct solve is relative to the potential range, not to |phi| near 0 V
    assert np.allclose(a.potential, b.potential, rtol=1e-9, atol=1e-9 * span, equal_nan=True)
    assert np.allclose(a.current_density, b.current_density, rtol=1e-9, atol=1e-9 * np.abs(b.current_density).max())
    for k in ("jump", "j_a", "delta_phi"):
        assert np.allclose(a.gb_table[k], b.gb_table[k], rtol=1e-8, atol=1e-12)
    assert (a.gb_table["gb_type"] == b.gb_table["gb_type"]).all() and a.potentials == pots
    assert lone_electrode({"top": 1.0, "right": 1.0}) is None
    assert lone_electrode({"a": 0.0, "b": 0.0, "c": 2.0}) == ("c", 2.0, 0.0)
    with pytest.raises(UserError, match="no unit solution for electrode 'top'"):
        superpose({"right": unit}, {"top": 3.0, "right": 0.0})
    with pytest.raises(UserError, match="three|lower potential"):
        superpose({"right": unit}, {"top": 3.0, "right": 3.0})


def test_stability_against_the_reference():
    ref = dict(grain_a=[1, 1, 2, 3], grain_b=[2, 3, 3, 4], jump=[4.0, -3.0, 2.0, 1.0],
               blocking=[True, True, False, True])
    same = dict(params={}, error="", gb=ref)
    # reversed order of |jump|: rank correlation -1; of the top-2 blocking (1-2, 1-3) only 1-3 stays in the top 2
    rev = dict(params={}, error="", gb=dict(ref, jump=[1.0, 2.0, 3.0, 4.0]))
    st = sweep.stability(ref, [same, rev], k=2)
    assert st[0] == dict(spearman=pytest.approx(1.0), top_k_kept=1.0)
    assert st[1]["spearman"] == pytest.approx(-1.0) and st[1]["top_k_kept"] == 0.5
