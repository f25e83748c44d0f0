"""GB classification (paper's Figure 5) on constructed bicrystals, and misorientation vs orix."""
from __future__ import annotations

import numpy as np
import pytest

from insitu.analysis.transport.gb import classify, plane_angle_deg, trace_angle_deg
from insitu.analysis.transport.microstructure import Microstructure
from insitu.analysis.transport.orientation import misorientation_deg
from insitu.analysis.transport.simulator import simulate


def c_for_trace(theta_deg):
    """In-plane c-axis whose basal-plane trace runs at theta (deg)."""
    t = np.radians(theta_deg)
    return [np.sin(t), -np.cos(t), 0.0]


# GB horizontal: grain a above (smaller row), b below, so the normal a -> b points along +y (90 deg).
ALONG, ACROSS = 0.0, 90.0


@pytest.mark.parametrize("ta, tb, field, expected", [
    (0, 0, ALONG, "I a2"), (0, 5, ACROSS, "I a1"),             # planes along the GB (spinel layer)
    (90, 90, ACROSS, "I b1"), (88, 95, ALONG, "I b2"),         # planes cross the GB, connected
    (90, 0, ACROSS, "II b1"), (0, 90, ALONG, "II b2"),         # one grain's planes along the GB
    (45, 135, ACROSS, "II a1"), (45, 135, ALONG, "II a2"),     # both at 45 deg
    (30, 150, ALONG, "III a2"), (30, 150, 180.0, "III b2"),    # chevron: converging / diverging
    (30, 60, ALONG, "III b2"),                                 # same tilt: not converging
    (30, 150, ACROSS, "III a1"), (30, 60, ACROSS, "III b1"),
])
def test_every_type(ta, tb, field, expected):
    t, blocking = classify([ta], [tb], [90.0], [field])
    assert t[0] == expected
    assert blocking[0] == (expected in ("II b1", "III a2"))


def test_rotation_invariance_and_tolerance():
    rot = 37.0
    t, _ = classify([30 + rot], [150 + rot], [90 + rot], [rot])
    assert t[0] == "III a2"
    assert classify([0], [20], [90], [0])[0][0].startswith("III ")
    assert classify([0], [20], [90], [0], tol_deg=25)[0][0].startswith("I ")


def test_c_near_the_beam_has_no_trace_and_never_blocks():
    th = trace_angle_deg([[0, 0, 1], [1, 0, 0], [0, 1, 0]])
    assert np.isnan(th[0]) and th[1] == 90.0 and th[2] == 0.0
    t3 = np.radians(3.0)
    c3 = [[np.sin(t3), 0.0, np.cos(t3)]]                       # 3 deg off the beam
    assert trace_angle_deg(c3)[0] == pytest.approx(90.0)        # a trace exists geometrically ...
    assert np.isnan(trace_angle_deg(c3, beam_tol_deg=15.0)[0])  # ... but not within the tolerance
    t, blocking = classify([np.nan, 0.0], [0.0, np.nan], [90.0, 90.0], [ACROSS, ALONG])
    assert list(t) == ["no trace", "no trace"] and not blocking.any()


def test_grain_three_degrees_off_the_beam_gives_no_blocking_label():
    # it would have had a trace along y and made a "II b1" with a grain whose planes run along x
    t3 = np.radians(3.0)
    m = _bicrystal(True, c_for_trace(0), [np.sin(t3), 0.0, np.cos(t3)])
    gt = simulate(m, {"left": 1.0, "right": 0.0}).gb_table
    assert gt["gb_type"][0] == "no trace" and not gt["blocking"][0]
    gt0 = simulate(m, {"left": 1.0, "right": 0.0}, beam_tol_deg=0.0).gb_table
    assert gt0["gb_type"][0] == "II b1"                          # what the old rule said


def test_plane_angle_and_misorientation_differ():
    # a rotation about the c-axis changes the orientation but not the conduction planes
    e1 = np.array([[0.2, 0.5, 0.0]])
    e2 = np.array([[0.2, 0.5, 0.7]])
    assert misorientation_deg(e1, e2)[0] == pytest.approx(np.degrees(0.7), abs=1e-9)
    from insitu.analysis.transport.microstructure import c_axis_from_euler
    assert plane_angle_deg(c_axis_from_euler(e1), c_axis_from_euler(e2))[0] == pytest.approx(0.0, abs=1e-6)
    assert plane_angle_deg([[0, 0, 1]], [[0, 1, 1] / np.sqrt(2)])[0] == pytest.approx(45.0)


def test_misorientation_matches_orix():
    from orix.quaternion import Orientation, symmetry

    rng = np.random.default_rng(7)
    ea, eb = rng.uniform(0, 2 * np.pi, (50, 3)), rng.uniform(0, 2 * np.pi, (50, 3))
    ref = Orientation.from_euler(ea, symmetry.D3d).angle_with(Orientation.from_euler(eb, symmetry.D3d), degrees=True)
    np.testing.assert_allclose(misorientation_deg(ea, eb), ref, atol=1e-8)


def _bicrystal(vertical_gb: bool, ca, cb, n=24):
    g = np.ones((n, n + 2), np.int32)
    if vertical_gb:
        g[:, (n + 2) // 2:] = 2
    else:
        g[n // 2:, :] = 2
    left = np.zeros(g.shape, bool)
    left[:, 0] = True
    right = np.zeros(g.shape, bool)
    right[:, -1] = True
    return Microstructure(grains=g, grain_ids=[1, 2], c_axis=[ca, cb], electrodes={"left": left, "right": right},
                          voxel_size_m=1e-8)


@pytest.mark.parametrize("model", ["full", "paper"])
def test_simulated_bicrystal_ii_b1_blocks(model):
    # field across a vertical GB; grain 1 planes point at the GB, grain 2 planes run along it
    m = _bicrystal(True, c_for_trace(0), c_for_trace(90))
    r = simulate(m, {"left": 1.0, "right": 0.0}, model=model)
    gt = r.gb_table
    assert gt["gb_type"][0] == "II b1" and gt["blocking"][0]
    assert gt["plane_angle_deg"][0] == pytest.approx(90.0)
    assert gt["delta_phi"][0] > 0                    # potential drops from grain 1 into grain 2


def test_simulated_bicrystal_iii_a2_converging_depends_on_field_sense():
    m = _bicrystal(False, c_for_trace(30), c_for_trace(150))
    r = simulate(m, {"left": 1.0, "right": 0.0})       # field along +x
    assert r.gb_table["gb_type"][0] == "III a2" and r.gb_table["blocking"][0]
    rev = simulate(m, {"left": 0.0, "right": 1.0})
    assert rev.gb_table["gb_type"][0] == "III b2" and not rev.gb_table["blocking"][0]
    # and the linear rescaling to the reversed bias reclassifies the same way
    assert r.scaled(-1.0, 1.0).gb_table["gb_type"][0] == "III b2"


def _top_bottom(m):
    """The same grains with the electrodes on the first and last rows instead."""
    top = np.zeros(m.shape, bool)
    top[0, :] = True
    bottom = np.zeros(m.shape, bool)
    bottom[-1, :] = True
    return Microstructure(grains=m.grains, grain_ids=m.grain_ids, c_axis=m.c_axis,
                          electrodes={"top": top, "bottom": bottom}, voxel_size_m=m.voxel_size_m)


def test_classification_uses_the_applied_field_not_the_local_one():
    # same-tilt bicrystal, field along the GB: the local field in the boundary voxels is ~45 deg
    # off (the across-plane component of the tilted grains); the applied field is along x
    m = _bicrystal(False, c_for_trace(30), c_for_trace(60), n=48)
    gt = simulate(m, {"left": 1.0, "right": 0.0}).gb_table
    assert abs(gt["applied_field_deg"][0]) < 1e-6
    assert abs(gt["local_field_deg"][0]) > 30.0
    assert gt["gb_type"][0] == "III b2"
    # chevron: field along the GB -> III a2 (blocking); field across it -> III a1
    m = _bicrystal(False, c_for_trace(30), c_for_trace(150))
    assert simulate(m, {"left": 1.0, "right": 0.0}).gb_table["gb_type"][0] == "III a2"
    across = simulate(_top_bottom(m), {"top": 1.0, "bottom": 0.0}).gb_table
    assert abs(across["applied_field_deg"][0] - 90.0) < 1e-6
    assert across["gb_type"][0] == "III a1" and not across["blocking"][0]
    # series II b1 (field across the vertical GB) -> II b2 with the field along it
    m = _bicrystal(True, c_for_trace(0), c_for_trace(90))
    along = simulate(_top_bottom(m), {"top": 1.0, "bottom": 0.0}).gb_table
    assert along["gb_type"][0] == "II b2" and not along["blocking"][0]


@pytest.mark.parametrize("n", [24, 48])
def test_blockade_indicator_on_constructed_bicrystals(n):
    """blockade = (E_b - E_a) . n / |E_applied|: the field's divergence at the GB (ions pile up
    where it is > 0). The current-density jump is ~0 for all of these."""
    def run(vertical, ta, tb, model="full", pots=None):
        m = _bicrystal(vertical, c_for_trace(ta), c_for_trace(tb), n=n)
        r = simulate(m, pots or {"left": 1.0, "right": 0.0}, model=model)
        return r.gb_table, np.nanmean(r.j_abs)

    chevron, jm = run(False, 30, 150)                 # symmetric III a2: converging along the GB
    assert chevron["gb_type"][0] == "III a2"
    assert abs(chevron["jump"][0]) < 1e-9 * jm         # the jump cannot see it ...
    assert chevron["blockade"][0] > 2.0                # ... the indicator does (3.40 measured)
    diverging, _ = run(False, 30, 150, pots={"left": 0.0, "right": 1.0})
    assert diverging["gb_type"][0] == "III b2" and diverging["blockade"][0] < -2.0
    series, jm = run(True, 0, 90)                      # II b1: ions from grain 1 into grain 2's planes
    assert series["gb_type"][0] == "II b1"
    assert abs(series["jump"][0]) < 1e-9 * jm and abs(series["jump_flow"][0]) < 1e-9 * jm
    # a grain of sigma_op across in series with sigma_ip: E jumps by ~ (1 - 1/1000) * 2 E_applied
    assert series["blockade"][0] == pytest.approx(2.0, rel=0.01)
    back, _ = run(True, 90, 0)                         # leaving the blocking grain: depletion
    assert back["blockade"][0] == pytest.approx(-2.0, rel=0.01)
    ib, _ = run(True, 0, 0)                            # I b1: planes cross the GB, connected
    assert ib["gb_type"][0] == "I b1" and abs(ib["blockade"][0]) < 1e-6
    ib5, _ = run(True, 0, 5)                           # 5 deg apart: still small
    assert ib5["gb_type"][0] == "I b1" and abs(ib5["blockade"][0]) < 0.2
    ia, _ = run(True, 90, 90)                          # I a1: planes along the GB on both sides
    assert ia["gb_type"][0] == "I a1" and abs(ia["blockade"][0]) < 1e-6
    # the paper's diagonal model has no sigma_xy: it cannot drive ions along tilted planes into a GB
    chevron_paper, _ = run(False, 30, 150, model="paper")
    assert abs(chevron_paper["blockade"][0]) < 1e-6


def test_jump_flow_is_upstream_minus_downstream():
    # parallel-ish grains along the field: the upstream grain is the one the applied field leaves
    m = _bicrystal(True, c_for_trace(0), c_for_trace(60))
    fwd = simulate(m, {"left": 1.0, "right": 0.0}).gb_table       # field +x: grain 1 (left) upstream
    rev = simulate(m, {"left": 0.0, "right": 1.0}).gb_table       # grain 2 upstream
    assert fwd["jump_flow"][0] == pytest.approx(fwd["j_a"][0] - fwd["j_b"][0])
    assert rev["jump_flow"][0] == pytest.approx(rev["j_b"][0] - rev["j_a"][0])


@pytest.mark.parametrize("angle_deg", [0.0, 7.5, 18.4, 30.0, 45.0, 63.4, 80.0, 112.5, 150.0])
def test_gb_length_and_normal_of_straight_oblique_gbs(angle_deg):
    """Staircase GBs are up to 1.41x too long; the smoothed boundary gives the true length."""
    from insitu.analysis.transport.gb import boundary_geometry
    from insitu.analysis.transport.microstructure import boundary_pixels

    n = 160
    yy, xx = np.mgrid[:n, :n] + 0.5
    a = np.radians(angle_deg)
    g = np.where((xx - n / 2) * np.cos(a) + (yy - n / 2) * np.sin(a) < 0, 1, 2)
    bp = boundary_pixels(g)
    length, normal = boundary_geometry(bp, np.zeros(bp["x"].size, int), 1)
    t = np.array([-np.sin(a), np.cos(a)])                       # the line through the centre
    exact = n / np.abs(t[np.abs(t) > 1e-12]).max()
    assert length[0] == pytest.approx(exact, rel=0.03)
    assert abs((normal[0] - angle_deg + 180.0) % 360.0 - 180.0) < 1.0
    staircase = bp["x"].size / exact
    assert staircase > 1.1 or angle_deg % 90 < 10 or angle_deg % 90 > 80


def test_gb_length_in_the_simulated_table_is_the_smoothed_one():
    # a circular grain of radius 30 voxels inside another: perimeter 2 pi r (staircase: 8 r)
    n = 80
    yy, xx = np.mgrid[:n, :n] + 0.5
    g = np.where(np.hypot(xx - 40, yy - 40) < 30, 2, 1).astype(np.int32)
    left, right = np.zeros(g.shape, bool), np.zeros(g.shape, bool)
    left[:, 0] = right[:, -1] = True
    m = Microstructure(grains=g, grain_ids=[1, 2], c_axis=[[0, 0, 1.0], [0, 0, 1.0]],
                       electrodes={"left": left, "right": right}, voxel_size_m=1e-8)
    gt = simulate(m, {"left": 1.0, "right": 0.0}).gb_table
    assert gt["length_m"][0] == pytest.approx(2 * np.pi * 30 * 1e-8, rel=0.03)
