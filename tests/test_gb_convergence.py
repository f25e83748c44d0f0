"""GB quantities under refinement: the same paper-like lamella (20 grains) voxelised at 256^2,
512^2, 1024^2 and 2048^2 (the Voronoi seeds, discs and frame scale with the grid), GBs matched by
grain pair. The band over which j_a, j_b are averaged is a tenth of the equivalent grain diameter:
5.4, 10.8, 21.6 and 43 voxels.

Measured (2026-12-06, seed 0); top-10 GBs by |quantity| at the coarse grid, median / max relative
error, and the rank correlation of all GBs between the grid and the next finer one (GBs shorter
than their band left out, see :func:`_errors`):

| model | quantity | grid | vs 4x (1024^2) | vs 2048^2 | rank corr. h vs h/2 |
|---|---|---|---|---|---|
| paper | jump | 256^2 | 4.7 % / 12.1 % | 5.9 % / 12.1 % | 0.993 |
| paper | blockade | 256^2 | 2.5 % / 8.1 % | 3.0 % / 8.1 % | 0.999 |
| full | jump | 256^2 | 20 % / 32 % | 22 % / 34 % | 0.997 |
| full | jump | 512^2 | | 7.5 % / 18 % | 0.998 |
| full | jump | 1024^2 | | 3.1 % / 5.3 % | 0.999 |
| full | blockade | 256^2 | 12 % / 51 % | 15 % / 64 % | 0.997 |

So the thin-film scheme converges, and its GB jumps are within 10 % of the next refinement once
the grains are ~200 voxels across (bands >= ~20 voxels); at 256^2 (grains ~54 voxels) they are
not. The 256^2 jumps of the top 10 are all too small, like the total current
(0.905 of the 2048^2 value; 256/512/1024/2048: 7.24/7.62/7.86/8.00 nA, an order of ~0.8). Two
causes, measured by solving the 256^2 map itself on a 4x finer grid (each voxel split 4 x 4):
the discretisation (the 256^2 solve vs its own 4x split: 13 % median) and the staircase GBs of
the 256^2 map (its 4x split vs the 1024^2 lamella: 11 % median). Neither a band that leaves out
the voxels nearest the GB (median 9 %, max 24 %, against 1024^2), Richardson extrapolation from 256^2 and 512^2
(9 % / 27 %), nor a 2x or 4x refinement of a smoothed 256^2 map (13 % / 17 %, 8 % / 17 % against 2048^2) reach
10 % for all ten.

What does: the refined solve with sub-voxel GBs, ``simulate(..., refine="auto")`` (4x at 256^2:
the map solved on 1024^2 with smooth grain boundaries and laminate tensors in the fine voxels they
cut; analysis/transport/refine.py). The same 256^2 map (the user's question: are the numbers of
*this* map converged?), top-10 jumps, median / max, rank correlation with the next refinement:

| 256^2 map, full model | vs 8x (h/2) | vs 16x (4096^2, h/4) | vs the 2048^2 lamella |
|---|---|---|---|
| unrefined | 15 % / 27 % (vs 4x) | 19 % / 32 % | 22 % / 34 % |
| refine 4, no laminate | 3.8 % / 9.2 %, rank 0.999 | 5.8 % / 9.6 % | 8.1 % / 16.5 % |
| refine 4 (auto, laminate) | 2.0 % / 4.5 %, rank 0.9996 | 2.3 % / 5.8 % (16x without laminate) | 5.2 % / 9.5 % |
| refine 8, no laminate | | 2.0 % / 2.7 % | 4.1 % / 9.3 % |

Other lamellae (seeds 1, 2; same test family), refine 4 vs 8: seed 1 2.9 % / 5.2 % (rank 1.000),
seed 2 2.6 % / 5.3 % (rank 0.9992); unrefined (vs 8x) 15 % and 21 % median.
The gap to the finer Voronoi lamellae is what the 256^2 map's own resolution costs (a staircase
holds less about the true boundary than a finer map): a property of the data, not of the solver.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import spearmanr

from insitu.analysis.transport.lamella import voronoi_lamella
from insitu.analysis.transport.simulator import refine_factor, simulate

N = 256
_cache = {}


def _table(model, k, base=N, n_grains=20, refine=1):
    """GB table of the lamella at (base k)^2, solved ``refine`` x refined:
    {(grain_a, grain_b): (jump, blockade, length_m)}, and the band width (m)."""
    if (model, k, base, n_grains, refine) not in _cache:
        m = voronoi_lamella((base * k, base * k), n_grains=n_grains, seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = simulate(m, {"top": 0.0, "right": 1.0}, model=model, refine=refine)
        g = r.gb_table
        _cache[model, k, base, n_grains, refine] = (
            {(int(a), int(b)): (j, bl, le) for a, b, j, bl, le in
             zip(g["grain_a"], g["grain_b"], g["jump"], g["blockade"], g["length_m"])}, r.info["gb_band_m"])
    return _cache[model, k, base, n_grains, refine]


def _compare(ta, tb, tc, band_m, q, n_top=10):
    """Relative errors of the top-``n_top`` GBs of table ``ta`` by |quantity q| against table
    ``tc``, and the rank correlation of all GBs between ``ta`` and ``tb``. GBs shorter than
    ``band_m`` (in ``tc``) are left out: the 20-grain lamella has four such stubs at near-fourfold
    Voronoi vertices (0.2-2 % of a grain diameter at 2048^2), which come and go with the
    voxelisation."""
    keys = [key for key in ta if key in tb and key in tc]
    assert len(keys) >= 0.9 * len(ta)              # the same GBs at every resolution
    keys = [key for key in keys if tc[key][2] >= band_m]
    assert len(keys) >= 0.85 * len(ta)
    a, b, c = (np.array([t[key][q] for key in keys]) for t in (ta, tb, tc))
    top = np.argsort(-np.abs(a))[:n_top]
    return np.abs(a[top] - c[top]) / np.abs(c[top]), spearmanr(a, b)[0]


def _errors(model, q, k=1, ref=4, base=N, n_grains=20, n_top=10):
    """:func:`_compare` of the lamella at (base k)^2 against (base ref)^2, rank correlation with
    (2 base k)^2."""
    t = {n: _table(model, n, base, n_grains)[0] for n in sorted({k, 2 * k, ref})}
    return _compare(t[k], t[2 * k], t[ref], _table(model, ref, base, n_grains)[1], q, n_top)


def _refined_errors(q, r, r_ref, ref_lamella=None, n_top=10):
    """:func:`_compare` of the 256^2 map solved ``r`` x refined (full model) against the same map
    ``r_ref`` x refined (or, with ``ref_lamella=k``, against the (256 k)^2 lamella), rank correlation
    with the ``2 r`` x refined solve."""
    ta, tb = _table("full", 1, refine=r)[0], _table("full", 1, refine=2 * r)[0]
    tc, band_m = _table("full", ref_lamella, refine=1) if ref_lamella else _table("full", 1, refine=r_ref)
    return _compare(ta, tb, tc, band_m, q, n_top)


def test_small_lamella_gb_jumps_under_refinement():
    """Default-run version (6 grains, 128^2 / 256^2 / 512^2, bands 4.9 voxels at 128^2; ~10 s).
    Measured, top 5 by |jump| against 512^2: paper 3.2 % median, 10.4 % max; full 18 % median at
    128^2 and 5.7 % at 256^2; rank correlation 1.0 for both."""
    rel, rho = _errors("paper", 0, base=128, n_grains=6, n_top=5)
    assert rho >= 0.95
    assert np.median(rel) <= 0.06 and rel.max() <= 0.15
    rel1, rho = _errors("full", 0, base=128, n_grains=6, n_top=5)
    rel2, _ = _errors("full", 0, k=2, base=128, n_grains=6, n_top=5)
    assert rho >= 0.95
    assert np.median(rel1) <= 0.25                       # the under-resolved thin-film jumps, as documented
    assert np.median(rel2) < 0.6 * np.median(rel1)       # and they converge


@pytest.mark.slow
def test_paper_model_gb_jumps_converge():
    rel, rho = _errors("paper", 0)
    assert rho >= 0.95
    assert np.median(rel) <= 0.10 and rel.max() <= 0.15    # measured 4.7 %, 12.1 % (8 of 10 within 10 %)
    rel, rho = _errors("paper", 1)
    assert rho >= 0.95 and rel.max() <= 0.10                          # the blockade indicator


@pytest.mark.slow
def test_full_model_gb_ranking_is_stable():
    for q in (0, 1):
        rel, rho = _errors("full", q)
        assert rho >= 0.95
        assert np.median(rel) <= 0.25                                 # measured 0.20 (jump), 0.12


@pytest.mark.slow
def test_full_model_gb_jumps_converge_once_grains_are_resolved():
    """1024^2 (grains ~216 voxels across, bands 21.6 voxels) against 2048^2: the scheme converges
    to within the goal when the boundary layers are resolved (measured 3.1 % / 5.3 %, rank 0.999);
    512^2 is not there yet (7.5 % median, 18 % max)."""
    rel, rho = _errors("full", 0, k=4, ref=8)
    assert rho >= 0.95
    assert rel.max() <= 0.10
    rel, _ = _errors("full", 0, k=2, ref=8)
    assert np.median(rel) > np.median(_errors("full", 0, k=4, ref=8)[0])   # errors fall with h


@pytest.mark.slow
@pytest.mark.timeout(900)          # a 1024^2 and a 2048^2 thin-film solve: ~3 min on a loaded 2-core machine
def test_refined_full_model_gb_quantities_converge():
    """Issue 14's goal, with the treatment: the 256^2 map solved with sub-voxel GBs and laminate
    tensors on a 4x finer grid (``refine="auto"``: bands 5.4 -> 21.6 voxels) against the same map
    8x refined (h/2): top-10 jumps within 10 % (measured 2.0 % median, 4.5 % max; blockade 0.5 %,
    3.2 %; against 16x: 2.3 % / 5.8 %), rank correlation >= 0.95 (0.9996)."""
    m = voronoi_lamella((N, N), n_grains=20, seed=0)
    assert refine_factor(m, "full", "auto")[0] == 4
    for q in (0, 1):
        rel, rho = _refined_errors(q, 4, 8)
        assert rho >= 0.95
        assert rel.max() <= 0.10


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_refined_solve_closes_most_of_the_gap_to_finer_data():
    """Against the finer data, the 2048^2 lamella (what the 256^2 map's own resolution costs, a
    property of the data): the refined solve of the 256^2 map is 5.2 % / 9.5 % off (top-10 jumps,
    median / max), the unrefined one 22 % / 34 %."""
    rel_refined, _ = _refined_errors(0, 4, None, ref_lamella=8)
    rel_plain, _ = _errors("full", 0, ref=8)
    assert np.median(rel_refined) < 0.5 * np.median(rel_plain)
