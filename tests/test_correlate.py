"""Correlation statistics on constructed cases where the answer is known."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from insitu.analysis.correlate import (MapTransform, correlate_seeds, electrode_distances, gb_point_table,
                                       jump_statistics, negative_electrode, parse_map_transform, roc_auc)
from insitu.analysis.microstructure import boundary_pixels
from insitu.errors import UserError


def voronoi_map(shape=(160, 160), n=60, seed=0):
    """Grain map (ids 1..n), a GB table with random jumps, electrodes: top rows 'top', right columns 'right'."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    pts = rng.uniform(0, [ny, nx], (n, 2))
    yy, xx = np.mgrid[0:ny, 0:nx]
    _, lab = cKDTree(pts).query(np.column_stack([yy.ravel(), xx.ravel()]))
    grains = (lab.reshape(shape) + 1).astype(np.int32)
    bp = boundary_pixels(grains)
    pairs = sorted(set(zip(bp["grain_a"].tolist(), bp["grain_b"].tolist())))
    a = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    table = dict(grain_a=a, grain_b=b, jump=rng.lognormal(0, 1, len(pairs)), delta_phi=rng.random(len(pairs)),
                 gb_type=np.array(["III a2"] * len(pairs)), blocking=rng.random(len(pairs)) < 0.3)
    top = np.zeros(shape, bool)
    top[:3] = True
    right = np.zeros(shape, bool)
    right[:, -3:] = True
    return grains, table, dict(top=top, right=right), bp


def _population(grains, table, electrodes, bp, neg="top"):
    pts = gb_point_table(bp, table)
    dmap = electrode_distances({neg: electrodes[neg]})[neg]
    d = dmap[np.rint(pts["y"]).astype(int), np.rint(pts["x"]).astype(int)]
    return pts, d


def test_seeds_on_high_jump_boundaries_give_auc_near_one():
    grains, table, el, bp = voronoi_map(seed=1)
    pts, d = _population(grains, table, el, bp)
    rng = np.random.default_rng(0)
    hi = np.flatnonzero(pts["jump"] >= np.quantile(pts["jump"], 0.9))
    pick = rng.choice(hi, 15, replace=False)
    seeds = dict(id=np.arange(1, 16), x_px=pts["x"][pick], y_px=pts["y"][pick])
    cor = correlate_seeds(seeds, grains, table, el, bpix=bp)
    assert cor["on_gb"].all()
    st = jump_statistics(cor["jump"], cor["dist_top_px"], pts["jump"], d, n_perm=1000)
    assert st["auc"] > 0.9
    assert st["p_value"] < 0.01
    assert st["n_seeds"] == 15


def test_seeds_on_random_boundary_points_give_auc_near_half():
    """Over many maps, random seeds give AUC ~0.5 and the p-value is calibrated (few below 0.05)."""
    aucs, ps = [], []
    for seed in range(20):
        grains, table, el, bp = voronoi_map(seed=seed)
        pts, d = _population(grains, table, el, bp)
        rng = np.random.default_rng(seed + 1000)
        pick = rng.choice(len(pts["x"]), 25, replace=False)
        seeds = dict(id=np.arange(1, 26), x_px=pts["x"][pick], y_px=pts["y"][pick])
        cor = correlate_seeds(seeds, grains, table, el, bpix=bp)
        st = jump_statistics(cor["jump"], cor["dist_top_px"], pts["jump"], d, n_perm=300, seed=seed)
        aucs.append(st["auc"])
        ps.append(st["p_value"])
    assert abs(np.mean(aucs) - 0.5) < 0.05
    assert 0.3 < min(aucs) and max(aucs) < 0.7
    assert np.mean(np.array(ps) < 0.05) <= 0.2


def test_distance_matching_removes_the_electrode_effect():
    """Jumps fall with distance from the negative electrode and seeds sit near it, on ordinary GBs for
    their distance. An unmatched comparison would call this a strong effect; matched, it is none."""
    grains, table, el, bp = voronoi_map(seed=5)
    pts, d = _population(grains, table, el, bp)
    rng = np.random.default_rng(1)
    # every GB point's jump: a steep function of its distance plus noise (per point, so ties are rare)
    jump = 100.0 * np.exp(-d / 20.0) + rng.normal(0, 1.0, len(d))
    near = np.flatnonzero(d < 25)
    pick = rng.choice(near, 20, replace=False)
    unmatched = roc_auc(jump[pick], jump)
    st = jump_statistics(jump[pick], d[pick], jump, d, n_perm=1000)
    assert unmatched > 0.85
    assert 0.3 < st["auc"] < 0.7 and st["p_value"] > 0.01


def test_correlate_seeds_reports_the_boundary_and_distances():
    # two grains side by side: boundary between columns 29 and 30; 'top' electrode = row 0
    grains = np.ones((40, 60), np.int32)
    grains[:, 30:] = 2
    table = dict(grain_a=np.array([1]), grain_b=np.array([2]), jump=np.array([7.5]), delta_phi=np.array([0.1]),
                 gb_type=np.array(["II b1"]), blocking=np.array([True]))
    top = np.zeros_like(grains, bool)
    top[0] = True
    seeds = dict(id=[1, 2], x_px=[31.0, 5.0], y_px=[20.0, 10.0])
    cor = correlate_seeds(seeds, grains, table, dict(top=top))
    assert cor["grain_a"].tolist() == [1, 1] and cor["grain_b"].tolist() == [2, 2]
    assert cor["gb_distance_px"] == pytest.approx([1.5, 24.5])
    assert cor["on_gb"].tolist() == [True, False]
    assert cor["jump"].tolist() == [7.5, 7.5] and cor["gb_type"].tolist() == ["II b1", "II b1"]
    assert cor["blocking"].tolist() == [True, True]
    assert cor["dist_top_px"].tolist() == [20.0, 10.0]


def test_map_transform_maps_seeds_into_the_map():
    grains = np.ones((40, 60), np.int32)
    grains[:, 30:] = 2
    table = dict(grain_a=[1], grain_b=[2], jump=[1.0])
    t = MapTransform(scale=2.0, rotation_deg=0.0, offset_x=10.0, offset_y=-4.0)
    # a seed on the boundary in map px (29.5, 20) is at (69, 36) in frame px
    fx, fy = t.to_frame(29.5, 20.0)
    cor = correlate_seeds(dict(x_px=[fx], y_px=[fy]), grains, table, {}, transform=t)
    assert cor["x_map"][0] == pytest.approx(29.5) and cor["gb_distance_px"][0] == pytest.approx(0.0)
    # rotation round trip
    r = MapTransform(1.5, 33.0, -4.0, 7.0)
    x, y = r.to_micro(*r.to_frame(np.array([3.0, -2.0]), np.array([1.0, 8.0])))
    assert np.allclose(x, [3.0, -2.0]) and np.allclose(y, [1.0, 8.0])


def test_parse_map_transform_errors():
    assert parse_map_transform("1,0,0,0").is_identity
    for bad in ("1,2,3", "a,b,c,d", "0,0,0,0"):
        with pytest.raises(UserError, match="map-transform"):
            parse_map_transform(bad)


def test_roc_auc_against_brute_force():
    rng = np.random.default_rng(7)
    p = rng.integers(0, 5, 30).astype(float)
    q = rng.integers(0, 5, 40).astype(float)
    brute = np.mean([[1.0 if a > b else 0.5 if a == b else 0.0 for b in q] for a in p])
    assert roc_auc(p, q) == pytest.approx(brute)
    assert np.isnan(roc_auc([], q))


def test_negative_electrode_and_empty_cases():
    assert negative_electrode({"top": 0.0, "right": 1.0}) == "top"
    assert negative_electrode({"top": -2.0, "right": 0.0}) == "top"
    assert negative_electrode({"top": 1.0, "right": 1.0}) is None
    st = jump_statistics([], [], [1.0, 2.0], [1.0, 2.0])
    assert np.isnan(st["auc"]) and st["n_seeds"] == 0
