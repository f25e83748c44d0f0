"""Refined solves with sub-voxel grain boundaries (``simulate(..., refine=r)``, analysis/transport/refine.py).

The convergence of the GB table on the 20-grain lamella is in tests/test_gb_convergence.py (slow).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from insitu.analysis.transport.lamella import voronoi_lamella
from insitu.analysis.transport.microstructure import Microstructure
from insitu.analysis.transport.refine import (AUTO_MAX_VOXELS, block_mean, choose_refine, laminate, refine_labels,
                                              refine_microstructure)
from insitu.analysis.transport.simulator import RESOLVED_BAND_PX, gb_resolution_note, refine_factor, simulate
from insitu.core.errors import UserError

Z = [0.0, 0.0, 1.0]
X = [1.0, 0.0, 0.0]


def _lr(grains, c_axes, **kw):
    """Electrodes on the first and last columns (as tests/test_simulator.py)."""
    g = np.asarray(grains, np.int32)
    left, right = np.zeros(g.shape, bool), np.zeros(g.shape, bool)
    left[:, 0] = right[:, -1] = True
    ids = sorted(int(i) for i in np.unique(g[g > 0]))
    kw.setdefault("voxel_size_m", 1e-8)
    kw.setdefault("thickness_m", 5e-8)
    return Microstructure(grains=g, grain_ids=ids, c_axis=[c_axes[i] for i in ids],
                          electrodes={"left": left, "right": right}, **kw)


def _tilted(polar, azimuth):
    return [np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth), np.cos(polar)]


def test_refined_labels_follow_the_line_not_the_staircase():
    """A straight GB at 30 deg from the rows' normal, voxelised by voxel centres: the refined map
    misassigns fewer fine voxels against the exact line than the block-upsampled staircase."""
    n, r = 64, 4
    yy, xx = np.mgrid[:n, :n] + 0.5
    line = lambda x, y: x - y * np.tan(np.radians(30.0)) < 20.0
    g = np.where(line(xx, yy), 1, 2)
    Y, X_ = (np.mgrid[:n * r, :n * r] + 0.5) / r
    exact = np.where(line(X_, Y), 1, 2)
    inner = (slice(8 * r, -8 * r), slice(None))            # away from the top and bottom edges
    wrong_refined = np.count_nonzero((refine_labels(g, r) != exact)[inner])
    wrong_block = np.count_nonzero((np.repeat(np.repeat(g, r, 0), r, 1) != exact)[inner])
    assert wrong_refined < 0.5 * wrong_block                 # measured 74 against 208 fine voxels
    # grains, ids and non-grain classes are kept: vacuum, ZrO2 and backbone are blocks
    m = voronoi_lamella((48, 48), n_grains=6, seed=3)
    f = refine_labels(m.grains, 3)
    np.testing.assert_array_equal(np.unique(f), np.unique(m.grains))
    np.testing.assert_array_equal(f <= 0, np.repeat(np.repeat(m.grains <= 0, 3, 0), 3, 1))
    np.testing.assert_array_equal(f[f <= 0], np.repeat(np.repeat(m.grains, 3, 0), 3, 1)[f <= 0])


@pytest.mark.parametrize("model", ["full", "paper"])
def test_grid_aligned_map_refined_equals_unrefined(model):
    """Series bicrystal with a GB resistor and parallel grains, all boundaries on the grid: the
    refined solve gives the unrefined answer (the closed forms of tests/test_simulator.py)."""
    g = np.ones((5, 17), np.int32)
    g[:, 7:] = 2
    m = _lr(g, {1: Z, 2: X}, anisotropy=40.0, gb_ratio=20.0, gb_thickness_m=2e-9)
    p = np.ones((10, 14), np.int32)
    p[4:] = 2
    for micro in (m, _lr(p, {1: Z, 2: X}, anisotropy=40.0)):
        r1 = simulate(micro, {"left": 3.0, "right": 0.0}, model=model)
        r3 = simulate(micro, {"left": 3.0, "right": 0.0}, model=model, refine=3)
        assert r3.info["refine"] == 3 and r1.info["refine"] == 1
        assert r3.conductance_S == pytest.approx(r1.conductance_S, rel=1e-9)
        assert r3.electrode_current["left"] == pytest.approx(r1.electrode_current["left"], rel=1e-9)
        assert r3.potential.shape == r1.potential.shape
        inside = ~(micro.electrodes["left"] | micro.electrodes["right"])   # j in an ideal electrode: a convention
        np.testing.assert_allclose(r3.current_density[inside], r1.current_density[inside], rtol=1e-8,
                                   atol=1e-9 * np.abs(r1.current_density).max())
        np.testing.assert_allclose(r3.potential, r1.potential, rtol=1e-8, atol=1e-9)
        for k in ("length_m", "j_a", "j_b", "delta_phi", "normal_deg"):
            np.testing.assert_allclose(r3.gb_table[k], r1.gb_table[k], rtol=1e-8, atol=1e-12, err_msg=k)
        assert list(r3.gb_table["gb_type"]) == list(r1.gb_table["gb_type"])


def test_oblique_bicrystal_geometry_and_jump_converge():
    """A straight GB 30 deg off the columns between two tilted grains (full model): the refined GB
    length within 3 % of the line's, its normal within 0.03 (unit vectors) of the exact one, and the
    jump converging (its change halving or better from r = 2 -> 4 -> 8, anisotropy 10 where the
    scheme is in its asymptotic range)."""
    n = 48
    alpha = np.radians(30.0)
    yy, xx = np.mgrid[:n, :n] + 0.5
    g = np.where(xx - yy * np.tan(alpha) < 12.0, 1, 2)
    m = _lr(g, {1: _tilted(0.4, 1.0), 2: _tilted(1.2, 2.5)}, anisotropy=10.0)
    jumps = []
    for r in (2, 4, 8):
        res = simulate(m, {"left": 1.0, "right": 0.0}, model="full", refine=r)
        gt = res.gb_table
        assert len(gt["grain_a"]) == 1
        assert gt["length_m"][0] == pytest.approx(n * m.voxel_size_m / np.cos(alpha), rel=0.03)
        nd = np.radians(gt["normal_deg"][0])
        assert np.hypot(np.cos(nd) - np.cos(-alpha), np.sin(nd) - np.sin(-alpha)) < 0.03
        jumps.append(gt["jump"][0])
    d1, d2 = abs(jumps[1] - jumps[0]), abs(jumps[2] - jumps[1])
    assert d2 < 0.75 * d1
    assert d2 < 0.05 * abs(jumps[2])


def test_auto_factor_and_its_cap():
    m = voronoi_lamella((64, 64), n_grains=6, seed=1)
    r, why = refine_factor(m, "full", "auto")
    band = 0.1 * np.sqrt(np.count_nonzero(m.grains > 0) / 6)
    assert r == min(8, int(np.ceil(RESOLVED_BAND_PX / band)))
    assert "finer grid" in why
    assert refine_factor(m, "paper", "auto")[0] == 1                 # the paper model converges at 5 voxels
    assert refine_factor(m, "full", 3) == (3, "refined 3x as asked")
    for bad in ("two", 0, 1.5, -1):
        with pytest.raises(UserError):
            refine_factor(m, "full", bad)
    # the cap: a 2048^2 map with 12-voxel bands would need 2x (4096^2): not refined, and said so
    r, why = choose_refine(12.0, (2048, 2048), RESOLVED_BAND_PX)
    assert r == 1 and "cap" in why and "not refined" in why
    r, why = choose_refine(2.0, (512, 512), RESOLVED_BAND_PX)              # wants 10x; 2048^2 allows 4x
    assert r == 4 and 512 ** 2 * r ** 2 <= AUTO_MAX_VOXELS
    assert choose_refine(25.0, (64, 64), RESOLVED_BAND_PX)[0] == 1


def pairs_of(res):
    return set(zip(res.gb_table["grain_a"].tolist(), res.gb_table["grain_b"].tolist()))


def test_refined_lamella_reports_per_gb_of_the_map():
    m = voronoi_lamella((48, 48), n_grains=6, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r1 = simulate(m, {"top": 0.0, "right": 1.0})
        r2 = simulate(m, {"top": 0.0, "right": 1.0}, refine=2)
    assert r2.potential.shape == m.shape and r2.voxel_size_m == m.voxel_size_m
    assert r2.info["fine_shape"] == [96, 96]
    assert r2.info["refine_gbs_lost"] == len(pairs_of(r1)) - len(pairs_of(r2))
    pairs1, pairs2 = pairs_of(r1), pairs_of(r2)
    assert pairs2 <= pairs1 and len(pairs2) >= len(pairs1) - 1
    # conservation on the fine grid, and the block means keep NaN exactly where nothing conducts
    assert sum(r2.electrode_current.values()) == pytest.approx(0.0, abs=1e-9 * abs(r2.electrode_current["right"]))
    np.testing.assert_array_equal(np.isnan(r2.potential), np.isnan(r1.potential))
    # the note counts voxels of the grid solved
    note1, note2 = gb_resolution_note(r1), gb_resolution_note(r2)
    assert "--refine auto" in note1 and "--refine" not in (note2 or "")
    band1 = float(note1.split()[4])
    assert note2 is None or float(note2.split()[4]) == pytest.approx(2 * band1, rel=0.05)


def test_block_mean_and_refine_microstructure():
    a = np.arange(16.0).reshape(4, 4)
    np.testing.assert_allclose(block_mean(a, 2), [[2.5, 4.5], [10.5, 12.5]])
    m = voronoi_lamella((32, 32), n_grains=4, seed=0)
    f = refine_microstructure(m, 2)
    assert f.voxel_size_m == m.voxel_size_m / 2 and f.thickness_m == m.thickness_m
    for k in m.electrodes:
        np.testing.assert_array_equal(block_mean(f.electrodes[k].astype(float), 2) == 1.0, m.electrodes[k])
    assert refine_microstructure(m, 1) is m


def _rot(theta):
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def _mat(s):
    return np.array([[s[0], s[2]], [s[2], s[1]]])


def test_laminate_tensor_closed_form_rotation_and_wiener_bounds():
    """Layers normal to x: the closed form (harmonic across, the Schur-complement rule along);
    any other normal by rotating the frame; and the effective tensor between the harmonic and the
    arithmetic mean of the two tensors (Wiener bounds, in the matrix sense)."""
    rng = np.random.default_rng(4)
    for _ in range(20):
        A = [rng.uniform(0.1, 3.0, 2) for _ in range(2)]
        th = rng.uniform(0, np.pi, 2)
        sa, sb = (_rot(t) @ np.diag(a) @ _rot(t).T for t, a in zip(th, A))
        v = lambda m: np.array([[m[0, 0], m[1, 1], m[0, 1]]])
        phi = rng.uniform(0.05, 0.95)
        eff = _mat(laminate(v(sa), v(sb), np.array([phi]), np.array([[1.0, 0.0]]))[0])
        mean = lambda f: phi * f(sa) + (1 - phi) * f(sb)
        sxx = 1.0 / mean(lambda s: 1.0 / s[0, 0])
        sxy = sxx * mean(lambda s: s[0, 1] / s[0, 0])
        syy = mean(lambda s: s[1, 1] - s[0, 1] ** 2 / s[0, 0]) + sxy ** 2 / sxx
        np.testing.assert_allclose(eff, [[sxx, sxy], [sxy, syy]], rtol=1e-12)
        # a normal at angle psi: the same laminate seen in a rotated frame
        psi = rng.uniform(0, 2 * np.pi)
        R = _rot(psi)
        rot = _mat(laminate(v(R @ sa @ R.T), v(R @ sb @ R.T), np.array([phi]),
                            np.array([[np.cos(psi), np.sin(psi)]]))[0])
        np.testing.assert_allclose(rot, R @ eff @ R.T, rtol=1e-10, atol=1e-12)
        arith = phi * sa + (1 - phi) * sb
        harm = np.linalg.inv(phi * np.linalg.inv(sa) + (1 - phi) * np.linalg.inv(sb))
        assert np.linalg.eigvalsh(arith - eff).min() > -1e-12
        assert np.linalg.eigvalsh(eff - harm).min() > -1e-12


def test_refined_solve_is_the_plain_solve_of_the_laminated_fine_map():
    """simulate(refine=2) is the unrefined solve of the refined map with the laminate applied: the
    same currents and fine potential, the laminate's voxel count reported; without the laminate
    nothing is counted and the answer changes. "auto" that does not refine says why."""
    from insitu.analysis.transport import network
    from insitu.analysis.transport.refine import apply_laminate, refine_fields, refine_microstructure
    from insitu.analysis.transport.simulator import _simulate_voxels

    m = voronoi_lamella((40, 40), n_grains=5, seed=3)
    pots = {"top": 0.0, "right": 1.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r2 = simulate(m, pots, model="full", refine=2, with_gb_table=False)
        plain = simulate(m, pots, model="full", refine=2, refine_laminate=False, with_gb_table=False)
        fields = refine_fields(m.grains, 2, 1.0, cut=True)
        fine = refine_microstructure(m, 2, labels=fields["labels"])
        v = network.voxel_properties(fine, "full")
        n_cut = apply_laminate(v, fields, fine)
        direct = _simulate_voxels(fine, pots, "full", v, 0.0, rtol=1e-8, gb_tol_deg=15.0, beam_tol_deg=15.0,
                                  gb_band_m=None, with_gb_table=False, solver="auto")
        auto = simulate(m, pots, model="paper", refine="auto", with_gb_table=False)
    assert n_cut > 0 and r2.info["refine_laminate_voxels"] == n_cut
    assert plain.info["refine_laminate_voxels"] == 0
    assert r2.electrode_current["right"] == pytest.approx(direct.electrode_current["right"], rel=1e-9)
    assert abs(plain.electrode_current["right"] / r2.electrode_current["right"] - 1) > 1e-4
    assert auto.info["refine"] == 1 and auto.info["refine_note"].startswith("model paper")
