"""Correlation statistics on constructed cases where the answer is known, and their calibration.

The calibration and power tests print their rates with a 95 % Clopper-Pearson interval (``pytest -s``).
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from insitu.analysis.correlate import (MapTransform, correlate_seeds, electrode_distances, face_driving_force,
                                       gb_population, gb_statistics, negative_electrode, parse_map_transform,
                                       roc_auc, stratified_rank_test)
from insitu.analysis.transport.microstructure import boundary_pixels
from insitu.core.errors import UserError


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


def current_field(grains, seed=0):
    """A current density (A/m²) uniform inside each grain: a random vector per grain."""
    rng = np.random.default_rng(seed)
    n = int(grains.max()) + 1
    mag = rng.lognormal(0.0, 0.7, n)
    ang = rng.uniform(0, 2 * np.pi, n)
    j = np.stack([mag * np.cos(ang), mag * np.sin(ang)], axis=-1)
    return j[grains]


_MAPS = {}


def synthetic(k):
    """Map k (cached): grains, table, electrodes, boundary points, current density, GB population."""
    if k not in _MAPS:
        grains, table, el, bp = voronoi_map(seed=k)
        jd = current_field(grains, seed=k)
        pop = gb_population(bp, table, el, "top", current_density=jd, interface_px=INTERFACE_PX)
        _MAPS[k] = (grains, table, el, bp, jd, pop)
    return _MAPS[k]


INTERFACE_PX = 7.0
#: the demo's seed numbers: GB seeds (spread over GBs) and interface seeds
N_GB_SEEDS, N_IFACE_SEEDS = 7, 5


def interface_seeds(rng, n=N_IFACE_SEEDS, nx=160):
    return rng.uniform(10, nx - 10, n), np.full(n, 4.0)


def run_test(k, x, y, transform=None):
    grains, table, el, bp, jd, pop = synthetic(k)
    if transform is not None:
        x, y = transform.to_frame(x, y)
    cor = correlate_seeds(dict(x_px=x, y_px=y), grains, table, el, transform=transform, bpix=bp)
    return gb_statistics(cor, pop)


def random_gb_seeds(k, rng, n=N_GB_SEEDS):
    """Seeds at random GB points (uniform over boundary length) outside the interface zone."""
    grains, table, el, bp, jd, pop = synthetic(k)
    pts = pop["_points"]
    d = electrode_distances(dict(top=el["top"]))["top"][np.rint(pts["y"]).astype(int), np.rint(pts["x"]).astype(int)]
    cand = np.flatnonzero((pts["row"] >= 0) & (d > INTERFACE_PX + 1))
    pick = rng.choice(cand, n, replace=False)
    return pts["x"][pick], pts["y"][pick]


def top_gb_seeds(k, rng, n=N_GB_SEEDS, n_gbs=4, top=0.25):
    """Seeds on ``n_gbs`` GBs drawn from the top ``top`` fraction by the GB driving force."""
    grains, table, el, bp, jd, pop = synthetic(k)
    pts = pop["_points"]
    f = pop["force_max"]
    ok = np.flatnonzero(pop["stratum"] >= 0)
    best = ok[f[ok] >= np.quantile(f[ok], 1 - top)]
    gbs = rng.choice(best, n_gbs, replace=False)
    rows = np.concatenate([gbs, rng.choice(gbs, n - n_gbs)])
    d = electrode_distances(dict(top=el["top"]))["top"][np.rint(pts["y"]).astype(int), np.rint(pts["x"]).astype(int)]
    xs, ys = [], []
    for r in rows:
        cand = np.flatnonzero((pts["row"] == r) & (d > INTERFACE_PX + 1))
        i = rng.choice(cand)
        xs.append(pts["x"][i])
        ys.append(pts["y"][i])
    return np.array(xs), np.array(ys)


def rate_line(label, hits, n):
    from scipy.stats import binomtest

    ci = binomtest(int(hits), int(n)).proportion_ci(0.95)
    line = f"{label}: p < 0.05 in {hits}/{n} = {hits / n:.1%} (95 % CI {ci.low:.1%}-{ci.high:.1%})"
    print(line)
    return ci


def with_interface(rng, x, y):
    ix, iy = interface_seeds(rng)
    return np.concatenate([x, ix]), np.concatenate([y, iy])


def test_calibration_random_seed_placements():
    """Seeds at random GB points (plus interface seeds): false-positive rate ≤ ~5 % over 240 trials."""
    rng = np.random.default_rng(11)
    ps = []
    for t in range(240):
        k = t % 12
        st, _, _ = run_test(k, *with_interface(rng, *random_gb_seeds(k, rng)))
        assert st["interface_seeds"] == N_IFACE_SEEDS and st["seeds_on_gb"] == N_GB_SEEDS
        ps.append(st["p_value"] if st["p_value"] is not None else 1.0)
    hits = int(np.sum(np.array(ps) < 0.05))
    ci = rate_line("random placements", hits, len(ps))
    assert ci.low < 0.05 and hits / len(ps) <= 0.075


def test_calibration_unrelated_and_rotated_microstructures():
    """Seeds that really sit on the top-jump GBs of one map, tested against another map (unrelated) or
    against the same map placed at 90°, 180°, 270° (rotated): ≤ ~5 % significant."""
    rng = np.random.default_rng(12)
    unrelated, rotated = [], []
    for t in range(240):
        a = t % 12
        b = (a + 1 + t // 12 % 11) % 12                  # another map
        x, y = with_interface(rng, *top_gb_seeds(a, rng))
        st, _, _ = run_test(b, x, y)
        unrelated.append(st["p_value"] if st["p_value"] is not None else 1.0)
        if t < 80:
            for rot in (90.0, 180.0, 270.0):
                c, s_ = np.cos(np.radians(rot)), np.sin(np.radians(rot))
                # rotate the map about its centre (79.5, 79.5) onto the frame
                tr = MapTransform(1.0, rot, 79.5 - (c * 79.5 - s_ * 79.5), 79.5 - (s_ * 79.5 + c * 79.5))
                mx, my = tr.to_micro(x, y)
                st, _, _ = run_test(a, mx, my, transform=tr)
                rotated.append(st["p_value"] if st["p_value"] is not None else 1.0)
    hits = int(np.sum(np.array(unrelated) < 0.05))
    ci = rate_line("unrelated maps", hits, len(unrelated))
    assert ci.low < 0.05 and hits / len(unrelated) <= 0.075
    # the same map rotated keeps its spatial correlation (neighbouring GBs share a grain, so similar
    # jumps) and the seeds stay clustered: measured 6-8 % at alpha = 0.05 (documented as not controlled)
    hits = int(np.sum(np.array(rotated) < 0.05))
    ci = rate_line("rotated maps", hits, len(rotated))
    assert ci.low < 0.05 and hits / len(rotated) <= 0.10


def test_power_seeds_on_the_top_jump_gbs():
    """7 GB seeds on 4 GBs from the top quarter by driving force (and 5 interface seeds): p < 0.05 in ≥ 80 %."""
    rng = np.random.default_rng(13)
    ps, aucs = [], []
    for t in range(200):
        k = t % 12
        st, _, _ = run_test(k, *with_interface(rng, *top_gb_seeds(k, rng)))
        ps.append(st["p_value"] if st["p_value"] is not None else 1.0)
        aucs.append(st["auc"])
    hits = int(np.sum(np.array(ps) < 0.05))
    rate_line("seeds on top-jump GBs (power)", hits, len(ps))
    assert hits / len(ps) >= 0.8 and np.mean(aucs) > 0.8


def test_stratified_rank_test_is_exact():
    """The exact p-value equals the fraction of all relabellings (within strata) at least as extreme."""
    from itertools import combinations

    rng = np.random.default_rng(3)
    v = rng.integers(0, 6, 11).astype(float)            # ties on purpose
    strata = np.array([0] * 6 + [1] * 5)
    seeded = np.zeros(11, bool)
    seeded[[1, 4, 7, 9]] = True
    res = stratified_rank_test(v, seeded, strata)

    def stat(sd):
        from scipy.stats import rankdata
        return sum(rankdata(v[strata == s])[sd[strata == s]].sum() for s in (0, 1))

    obs = stat(seeded)
    count = total = 0
    for a in combinations(range(6), 2):
        for b in combinations(range(6, 11), 2):
            sd = np.zeros(11, bool)
            sd[list(a) + list(b)] = True
            total += 1
            count += stat(sd) >= obs - 1e-9
    assert res["p_value"] == pytest.approx(count / total)
    pairs = [(v[i] > v[j]) + 0.5 * (v[i] == v[j]) for s in (0, 1) for i in np.flatnonzero(seeded & (strata == s))
             for j in np.flatnonzero(~seeded & (strata == s))]
    assert res["auc"] == pytest.approx(np.mean(pairs))
    assert res["n_seeded"] == 4 and res["n_controls"] == 7 and res["n_strata"] == 2


def test_weighted_rank_test_is_exact_and_agrees_with_monte_carlo():
    """Length-weighted null (successive sampling): the exact p equals a brute-force sum over every ordered
    draw, each with its probability w_i1/W * w_i2/(W - w_i1) * ..., and a Monte Carlo estimate (Gumbel-top-k,
    forced by ``max_exact_draws=0``) agrees within 4 standard errors."""
    from itertools import permutations

    from scipy.stats import rankdata

    rng = np.random.default_rng(5)
    v = rng.integers(0, 7, 13).astype(float)            # ties on purpose
    w = rng.lognormal(0.0, 1.0, 13)
    strata = np.array([0] * 7 + [1] * 6)
    seeded = np.zeros(13, bool)
    seeded[[2, 5, 9]] = True                            # 2 of 7, 1 of 6
    exact = stratified_rank_test(v, seeded, strata, weights=w)

    def rank_sum(idx, s):
        r = rankdata(v[strata == s])
        return r[list(idx)].sum()

    per = []
    for s, k in ((0, 2), (1, 1)):
        ws = w[strata == s]
        dist = {}
        for order in permutations(range(len(ws)), k):
            pr, left = 1.0, ws.sum()
            for i in order:
                pr *= ws[i] / left
                left -= ws[i]
            key = rank_sum(order, s)
            dist[key] = dist.get(key, 0.0) + pr
        per.append(dist)
    obs = sum(rank_sum(np.flatnonzero(seeded[strata == s]), s) for s in (0, 1))
    p_brute = sum(pa * pb for a, pa in per[0].items() for b, pb in per[1].items() if a + b >= obs - 1e-9)
    assert exact["p_value"] == pytest.approx(p_brute, rel=1e-9)
    mc = stratified_rank_test(v, seeded, strata, weights=w, n_draws=40000, max_exact_draws=0)
    se = np.sqrt(p_brute * (1 - p_brute) / 40000)
    assert abs(mc["p_value"] - p_brute) < 4 * se + 1e-4
    assert mc["auc"] == exact["auc"]


def test_several_seeds_on_one_gb_count_once():
    """Pseudo-replication: piling seeds onto one GB adds no evidence."""
    rng = np.random.default_rng(4)
    x, y = top_gb_seeds(2, rng, n=4, n_gbs=4)
    one, _, _ = run_test(2, x, y)
    xs, ys = np.concatenate([x, x + 0.0, x]), np.concatenate([y, y, y])
    many, per_seed, gbs = run_test(2, xs, ys)
    assert many["seeds_on_gb"] == 12 and many["gbs_with_seeds"] == one["gbs_with_seeds"] == 4
    assert many["p_value"] == one["p_value"] and many["auc"] == one["auc"]
    assert gbs["n_seeds"].sum() == 12


def test_interface_seeds_are_a_class_apart():
    grains, table, el, bp, jd, pop = synthetic(1)
    rng = np.random.default_rng(5)
    gx, gy = top_gb_seeds(1, rng, n=4, n_gbs=4)
    ix, iy = interface_seeds(rng, 6)
    st0, _, _ = run_test(1, gx, gy)
    st, per_seed, _ = run_test(1, np.concatenate([gx, ix]), np.concatenate([gy, iy]))
    assert per_seed["seed_class"].tolist() == ["gb"] * 4 + ["interface"] * 6
    assert st["interface_seeds"] == 6 and st["seeds_on_gb"] == 4
    assert (st["auc"], st["p_value"]) == (st0["auc"], st0["p_value"])     # kept out of the test
    assert np.all(per_seed["gb_row"][4:] == -1)


def test_stratification_removes_the_electrode_effect():
    """The driving force falls with distance from the negative electrode and seeds sit near it, on GBs
    ordinary for their distance. An unstratified comparison calls this strong; stratified, it is not."""
    grains, table, el, bp = voronoi_map(seed=5)
    yy = np.mgrid[0:160, 0:160][0]
    rng = np.random.default_rng(1)
    jd = current_field(grains, seed=5) * (1.0 + 30.0 * np.exp(-yy / 15.0))[..., None]
    pop = gb_population(bp, table, el, "top", current_density=jd, interface_px=INTERFACE_PX)
    ok = pop["stratum"] >= 0
    hits, aucs = 0, []
    for t in range(60):
        near = np.flatnonzero(ok & (pop["hops"] == 0))           # GBs that touch the electrode
        gbs = rng.choice(near, 4, replace=False)
        seeded = np.isin(np.arange(len(ok)), gbs)
        aucs.append(roc_auc(pop["force_max"][seeded & ok], pop["force_max"][~seeded & ok]))
        res = stratified_rank_test(pop["force_max"][ok], seeded[ok], pop["stratum"][ok])
        hits += res["p_value"] < 0.05
    assert np.mean(aucs) > 0.75                                  # unstratified: "significant"
    assert hits <= 8                                              # stratified: ~5 % of 60


def test_gb_hops_count_triple_junctions():
    # three grains in a row under a top electrode row (GBs 1/2 and 2/3 touch it); below them grains 4 and 5
    # (GBs 1/4, 2/4, 2/5, 3/5 meet 1/2 or 2/3 at a triple junction; 4/5 meets only those), then grain 6
    g = np.zeros((30, 30), np.int32)
    g[:, :10], g[:, 10:20], g[:, 20:] = 1, 2, 3
    g[20:, :15], g[20:, 15:] = 4, 5
    g[27:, :] = 6
    bp = boundary_pixels(g)
    pairs = sorted(set(zip(bp["grain_a"].tolist(), bp["grain_b"].tolist())))
    table = dict(grain_a=[p[0] for p in pairs], grain_b=[p[1] for p in pairs], jump=np.ones(len(pairs)))
    top = np.zeros(g.shape, bool)
    top[0] = True
    pop = gb_population(bp, table, dict(top=top), "top", quantity="jump", interface_px=2.0)
    hops = dict(zip(pairs, pop["hops"].tolist()))
    assert hops[(1, 2)] == hops[(2, 3)] == 0
    assert hops[(1, 4)] == hops[(2, 4)] == hops[(2, 5)] == hops[(3, 5)] == 1
    assert hops[(4, 5)] == 2 and hops[(4, 6)] == hops[(5, 6)] == 3
    assert set(pop["stratum"][[pairs.index((1, 2)), pairs.index((2, 3))]] // 10) == {0}


def test_local_jump_is_the_current_density_step_at_the_point():
    g = np.ones((40, 40), np.int32)
    g[:, 20:] = 2
    jd = np.zeros((40, 40, 2))
    jd[:, :20, 1] = 3.0
    jd[:, 20:, 1] = 1.0 + np.arange(40)[:, None] / 10.0            # the step shrinks down the GB
    bp = boundary_pixels(g)
    f = face_driving_force(bp, dict(grain_a=[1], grain_b=[2], jump=[9.0]), jd, window_px=0.5)
    assert np.allclose(f, np.abs(3.0 - (1.0 + bp["y"] / 10.0)))
    fc = face_driving_force(bp, dict(grain_a=[1], grain_b=[2], jump=[-9.0]), jd, quantity="jump")
    assert np.all(fc == 9.0)
    with pytest.raises(UserError, match="blockade"):
        face_driving_force(bp, dict(grain_a=[1], grain_b=[2], jump=[9.0]), jd, quantity="blockade")


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
    st = stratified_rank_test([1.0, 2.0], [False, False], [0, 0])
    assert np.isnan(st["auc"]) and st["n_seeded"] == 0


def test_calibration_random_placements_on_simulated_lamellae():
    """The same on two virtual lamellae with their transport simulation (local jumps, where GB length and
    position matter): 8 seeds at random GB points, 600 trials (300 per lamella). Without the length-weighted
    null this gave ~10 % (59/600 on six lamellae). 200 trials are too few to tell 5 % from 9 %: 100 per
    lamella gave 18/200, 400 per lamella with the same generator 25/800 = 3.1 %."""
    from insitu.virtual.specimen import VirtualSpecimen

    rng = np.random.default_rng(14)
    ps = []
    for seed in (0, 4):
        sp = VirtualSpecimen(seed=seed)
        m, sim = sp.microstructure, sp.simulation
        bp = boundary_pixels(m.grains)
        ipx = 150e-9 / m.voxel_size_m
        pop = gb_population(bp, sim.gb_table, m.electrodes, "top", current_density=sim.current_density,
                            interface_px=ipx)
        pts = pop["_points"]
        d = sp.dist_top[np.rint(pts["y"]).astype(int), np.rint(pts["x"]).astype(int)]
        cand = np.flatnonzero((pts["row"] >= 0) & (d > ipx + 1))
        for t in range(300):
            pick = rng.choice(cand, 8, replace=False)
            cor = correlate_seeds(dict(x_px=pts["x"][pick], y_px=pts["y"][pick]), m.grains, sim.gb_table,
                                  m.electrodes, bpix=bp)
            st, _, _ = gb_statistics(cor, pop)
            ps.append(st["p_value"] if st["p_value"] is not None else 1.0)
    hits = int(np.sum(np.array(ps) < 0.05))
    ci = rate_line("random placements, simulated lamellae", hits, len(ps))
    # measured 24/600 = 4.0 % (2.6-5.9 %); random placements are independent of the GB values, so the rate is
    # nominal up to sampling error (the 200-trial version's 18/200 was sampling error)
    assert ci.low < 0.05 and hits / len(ps) <= 0.10
