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
10 % for all ten; docs/simulator.md says what would. The 10 % goal at 256^2 is kept below as a
strict xfail, so that it shows when the scheme gets there.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import spearmanr

from insitu.analysis.transport.lamella import voronoi_lamella
from insitu.analysis.transport.simulator import simulate

N = 256
_cache = {}


def _table(model, k, base=N, n_grains=20):
    """GB table of the lamella at (base k)^2: {(grain_a, grain_b): (jump, blockade, length_m)}, and
    the band width (m)."""
    if (model, k, base, n_grains) not in _cache:
        m = voronoi_lamella((base * k, base * k), n_grains=n_grains, seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = simulate(m, {"top": 0.0, "right": 1.0}, model=model)
        g = r.gb_table
        _cache[model, k, base, n_grains] = ({(int(a), int(b)): (j, bl, le) for a, b, j, bl, le in
                                             zip(g["grain_a"], g["grain_b"], g["jump"], g["blockade"], g["length_m"])},
                                            r.info["gb_band_m"])
    return _cache[model, k, base, n_grains]


def _errors(model, q, k=1, ref=4, base=N, n_grains=20, n_top=10):
    """Relative errors of the top-``n_top`` GBs by |quantity q| at (base k)^2 against (base ref)^2,
    and the rank correlation of all GBs between (base k)^2 and (2 base k)^2. GBs shorter than their
    band (at the reference grid) are left out: the 20-grain lamella has four such stubs at
    near-fourfold Voronoi vertices (0.2-2 % of a grain diameter at 2048^2), which come and go with
    the voxelisation."""
    t = {n: _table(model, n, base, n_grains)[0] for n in sorted({k, 2 * k, ref})}
    band_m = _table(model, ref, base, n_grains)[1]
    keys = [key for key in t[k] if all(key in t[n] for n in t)]
    assert len(keys) >= 0.9 * len(t[k])              # the same GBs at every resolution
    keys = [key for key in keys if t[ref][key][2] >= band_m]
    assert len(keys) >= 0.85 * len(t[k])
    a, b, c = (np.array([t[n][key][q] for key in keys]) for n in (k, 2 * k, ref))
    top = np.argsort(-np.abs(a))[:n_top]
    rel = np.abs(a[top] - c[top]) / np.abs(c[top])
    return rel, spearmanr(a, b)[0]


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
@pytest.mark.xfail(strict=True, reason="thin-film tensor at 256^2 (grains ~54 voxels): top-10 jumps 20 % (median), "
                                       "32 % (max) off the 4x solve; within 10 % from ~200 voxels per grain")
def test_full_model_top_jumps_within_10_percent_of_4x():
    rel, _ = _errors("full", 0)
    assert rel.max() <= 0.10
