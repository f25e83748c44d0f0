"""Filament model and HAADF rendering of the virtual specimen, on small synthetic maps."""
from __future__ import annotations

import numpy as np
import pytest

from insitu.virtual.filaments import FilamentModel, FilamentParams, Sites, geodesic_distance, spaced_points
from insitu.virtual.haadf import Drift, HaadfParams, filament_image, render, static_image


# -- site selection and electron supply ---------------------------------------------------------
def test_spaced_points_respects_spacing_and_priority():
    rng = np.random.default_rng(3)
    mask = rng.random((60, 60)) < 0.3
    pr = rng.random((60, 60))
    y, x = spaced_points(mask, 7.0, priority=pr)
    assert mask[y, x].all()
    d = np.hypot(y[:, None] - y[None], x[:, None] - x[None]) + np.eye(y.size) * 99
    assert d.min() >= 7.0
    # the highest-priority pixel of the mask is always chosen
    ys, xs = np.nonzero(mask)
    k = np.argmax(pr[ys, xs])
    assert (ys[k], xs[k]) in set(zip(y.tolist(), x.tolist()))
    # greedy is maximal: every unchosen mask pixel is closer than the spacing to a chosen one
    dd = np.hypot(ys[:, None] - y[None], xs[:, None] - x[None]).min(axis=1)
    assert (dd < 7.0).all()


def test_geodesic_distance_follows_the_path_and_filaments_are_free():
    passable = np.zeros((20, 20), bool)
    passable[0, :] = True          # along the top
    passable[:, 19] = True         # down the right side: an L-shaped GB
    src = np.zeros_like(passable)
    src[0, 0] = True
    d = geodesic_distance(passable, np.zeros_like(passable), src)
    assert d[0, 10] == pytest.approx(10.0, abs=1e-3)
    # around the corner: 18 steps, one diagonal step across the corner, 18 steps
    assert d[19, 19] == pytest.approx(36 + np.sqrt(2), abs=1e-3)
    assert np.isinf(d[10, 5])      # not on the network
    free = np.zeros_like(passable)
    free[0, 1:15] = True           # a filament covering most of the top branch
    d2 = geodesic_distance(passable, free, src)
    assert d2[0, 16] < 3.0 < d[0, 16]


def _line_world(n_iface=3, n_gb=3, gb_drive=(1.0, 0.5, 0.1)):
    """Electrode along the top row; a vertical GB at x=30 from the electrode down."""
    ny, nx = 80, 60
    electrode = np.zeros((ny, nx), bool)
    electrode[0, :] = True
    gb = np.zeros((ny, nx), bool)
    gb[1:, 30] = True
    ix = np.array([5, 15, 45][:n_iface], float)
    gy = np.array([15, 35, 55][:n_gb], float)
    sites = Sites(x=np.concatenate([ix, np.full(n_gb, 30.0)]), y=np.concatenate([np.full(n_iface, 3.0), gy]),
                  kind=np.array([0] * n_iface + [1] * n_gb), grains=[(1,)] * n_iface + [(1, 2)] * n_gb,
                  drive=np.concatenate([np.ones(n_iface), np.asarray(gb_drive[:n_gb], float)]))
    return sites, gb, electrode


def test_interface_seeds_come_before_gb_seeds_and_supply_decays_along_the_gb():
    """No incubation constant: interface seeds come first because the electrons are there (supply 1)."""
    p = FilamentParams(spacing_px=5, charge_scale_C=1e-4, supply_length_px=12.0)   # reach 40 px
    assert not hasattr(p, "gb_incubation")
    firsts = []
    for seed in range(12):
        sites, gb, el = _line_world()
        m = FilamentModel(sites, gb, el, p, np.random.default_rng(seed))
        sup = m.supply()
        # interface sites touch the electrode; GB supply = exp(-d/λ) with d the distance along the GB,
        # and none beyond the reach (the site at y=55)
        assert np.allclose(sup[:3], 1.0)
        assert sup[3] == pytest.approx(np.exp(-15 / 12.0), rel=0.1)
        assert sup[3] > sup[4] > 0 and sup[5] == 0.0
        for k in range(60):
            m.advance(1e-5, k, 17.0)
        kinds = [s.kind for s in m.seeds]
        assert kinds, "nothing nucleated"
        firsts.append(kinds[0])
    assert firsts.count("interface") >= 8


def test_gb_nucleation_needs_the_bias_above_threshold():
    """drive * V must exceed the threshold (gb_onset_V for drive 1): a bias well below it gives no GB
    seed whatever the charge, while the interface (lower threshold) still nucleates."""
    p = FilamentParams(spacing_px=5, charge_scale_C=1e-4, gb_onset_V=6.0, interface_onset_V=3.0,
                       electron_reach_px=100.0)
    for v, expect_gb in ((5.0, False), (17.0, True)):
        sites, gb, el = _line_world(gb_drive=(1.0, 1.0, 1.0))
        m = FilamentModel(sites, gb, el, p, np.random.default_rng(0))
        assert np.all(m.overdrive(v)[3:] == (0.0 if not expect_gb else 17.0 / 6.0 - 1.0))
        for k in range(200):
            m.advance(1e-5, k, v)
        kinds = [s.kind for s in m.seeds]
        assert ("gb" in kinds) == expect_gb and "interface" in kinds
    m = FilamentModel(*_line_world(), p, np.random.default_rng(0))
    m.advance(1.0, 0.0, -10.0)                       # reverse bias: no nucleation at all
    assert m.seeds == []


def test_far_sites_never_nucleate():
    """A strong GB site beyond the electron reach of the path gets no electrons and never nucleates."""
    p = FilamentParams(spacing_px=5, charge_scale_C=1e-4, electron_reach_px=20.0, k_gb=100.0)
    sites, gb, el = _line_world(n_iface=0, n_gb=3, gb_drive=(0.0, 0.0, 1.0))   # only the far site (y=55) drives
    m = FilamentModel(sites, gb, el, p, np.random.default_rng(0))
    for k in range(100):
        m.advance(1e-4, k, 17.0)
    assert m.seeds == [] and m.supply()[2] == 0.0


def test_a_gb_filament_brings_electrons_to_sites_further_down():
    p = FilamentParams(spacing_px=5, r0_px=4, r_max_px=12, supply_length_px=10.0)
    sites, gb, el = _line_world(n_iface=0, n_gb=3, gb_drive=(1, 1, 1))
    m = FilamentModel(sites, gb, el, p, np.random.default_rng(0))
    before = m.supply()
    assert before[2] == 0.0       # y=55: beyond the reach (40 px) of the electrode
    m._nucleate(0, 0.0)           # a seed at y=15 on the GB
    m._grow(10 * p.charge_scale_C)  # fully grown: covers y = 3..27
    m._update_supply()
    after = m.supply()
    assert after[1] > 3 * before[1]   # site at y=35
    assert after[2] > 0.0             # the filament extends the electron path


def test_growth_with_charge_reverse_shrinks_to_the_floor_and_regrows():
    p = FilamentParams(charge_scale_C=1e-4)
    sites, gb, el = _line_world(n_iface=1, n_gb=0)
    m = FilamentModel(sites, gb, el, p, np.random.default_rng(1))
    s = m._nucleate(0, 0.0)
    assert s.radius_px(p) == pytest.approx(p.r0_px)
    radii = []
    for _ in range(5):
        m.advance(2e-5, 0.0)
        radii.append(s.radius_px(p))
    assert all(b > a for a, b in zip(radii, radii[1:])) and radii[-1] < p.r_max_px
    q_peak = s.q
    m.advance(-1.0, 0.0)          # a lot of reverse charge
    assert s.q == pytest.approx(p.strip_floor * q_peak)
    assert p.r0_px < s.radius_px(p) < radii[-1]
    m.advance(5e-5, 0.0)
    assert s.q > p.strip_floor * q_peak
    assert m.q_reverse == pytest.approx(1.0)


def test_no_charge_no_seeds():
    sites, gb, el = _line_world()
    m = FilamentModel(sites, gb, el, FilamentParams(), np.random.default_rng(0))
    m.advance(0.0, 100.0)
    assert m.seeds == [] and m.conductance_factor() == 1.0


def test_bridging_cluster_is_detected():
    p = FilamentParams(r0_px=7, r_max_px=7)
    ny, nx = 40, 40
    top = np.zeros((ny, nx), bool)
    top[0] = True
    right = np.zeros((ny, nx), bool)
    right[:, -1] = True
    from scipy import ndimage
    dt, dr = ndimage.distance_transform_edt(~top), ndimage.distance_transform_edt(~right)
    sites = Sites(x=np.array([20.0, 31.0, 10.0]), y=np.array([5.0, 8.0, 30.0]), kind=np.array([0, 1, 1]),
                  grains=[(1,), (1, 2), (2, 3)], drive=np.ones(3))
    m = FilamentModel(sites, np.zeros((ny, nx), bool), top, p, np.random.default_rng(0))
    m._nucleate(0, 0)
    assert not m.bridges(dt, dr)           # touches the top only
    m._nucleate(2, 0)
    assert not m.bridges(dt, dr)           # far seed, not connected
    m._nucleate(1, 0)                      # (31,8): overlaps (20,5) and reaches x=39 -> bridge
    assert m.bridges(dt, dr)


# -- HAADF rendering ------------------------------------------------------------------------------
def _phase_map():
    from insitu.virtual.specimen import ELECTRODE, GRAIN, VACUUM, ZRO2

    ph = np.full((64, 64), GRAIN, np.uint8)
    ph[:8] = ELECTRODE
    ph[:, :6] = VACUUM
    ph[30:36, 30:36] = ZRO2
    g = np.where(ph == GRAIN, 1, 0)
    g[:, 40:] = np.where(ph[:, 40:] == GRAIN, 2, 0)
    gb = np.zeros(ph.shape, bool)
    gb[8:, 39:41] = True
    return ph, g, gb


def test_static_contrast_order():
    ph, g, gb = _phase_map()
    p = HaadfParams(blur_px=0, thickness_gradient=0)
    img = static_image(ph, g, {1: 0.0, 2: 0.0}, gb, p)
    vac, grain, zro2, el = img[40, 2], img[50, 20], img[33, 33], img[3, 30]
    assert vac < grain < zro2 < el
    assert img[50, 39] == pytest.approx(p.grain - p.gb_dip)


def test_poisson_counts_follow_dose():
    p = HaadfParams(scanline_noise=0.0, blur_px=0)
    base = np.full((128, 128), 0.4, np.float32)
    f = render(base, [], p=p, rng=np.random.default_rng(0)).astype(float)
    lam = 0.4 * p.probe_current_A * p.dwell_s / 1.602176634e-19 * p.detector_efficiency
    assert f.mean() == pytest.approx(lam, rel=0.01)
    assert f.var() == pytest.approx(lam, rel=0.05)       # Poisson: variance = mean
    p2 = HaadfParams(scanline_noise=0.0, blur_px=0, dwell_s=p.dwell_s * 4)
    f2 = render(base, [], p=p2, rng=np.random.default_rng(0)).astype(float)
    assert f2.mean() == pytest.approx(4 * lam, rel=0.01)


def test_scanline_noise_adds_row_correlated_variance():
    base = np.full((128, 128), 0.4, np.float32)
    rows0 = render(base, [], p=HaadfParams(scanline_noise=0.0), rng=np.random.default_rng(0)).mean(axis=1)
    rows1 = render(base, [], p=HaadfParams(scanline_noise=0.05), rng=np.random.default_rng(0)).mean(axis=1)
    assert rows1.std() > 3 * rows0.std()


def test_filaments_are_brighter_and_drift_moves_them():
    p = HaadfParams(scanline_noise=0.0, dwell_s=1e-3)   # high dose: tiny noise
    base = np.full((64, 64), 0.4, np.float32)
    im = filament_image(base.shape, [20.0], [30.0], [4.0], p)
    assert im[30, 20] == pytest.approx(p.filament)
    assert im[30, 20 + 6] == 0
    small = filament_image(base.shape, [20.0], [30.0], [1.5], p)
    assert 0 < small.max() < im.max()          # early seeds: low contrast
    a = render(base, [(20.0, 30.0, 4.0)], drift_px=(0, 0), p=p, rng=np.random.default_rng(0)).astype(float)
    b = render(base, [(20.0, 30.0, 4.0)], drift_px=(5.0, -3.0), p=p, rng=np.random.default_rng(0)).astype(float)

    def centroid(f):
        w = np.clip(f - np.median(f) - 0.5 * (f.max() - np.median(f)), 0, None)
        yy, xx = np.mgrid[0:64, 0:64]
        return (w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()

    (xa, ya), (xb, yb) = centroid(a), centroid(b)
    assert xa == pytest.approx(20, abs=0.5) and ya == pytest.approx(30, abs=0.5)
    assert xb - xa == pytest.approx(5.0, abs=0.5) and yb - ya == pytest.approx(-3.0, abs=0.5)


def test_drift_is_deterministic_smooth_and_small():
    p = HaadfParams()
    d1, d2 = Drift(p, 4), Drift(p, 4)
    ts = np.linspace(0, 3600, 361)
    a = np.array([d1(t) for t in ts])
    assert np.array_equal(a, np.array([d2(t) for t in ts]))
    assert np.allclose(a[0], 0)
    assert np.abs(np.diff(a, axis=0)).max() < 0.1      # < 0.1 px per 10 s
    assert np.abs(a).max() < 12
