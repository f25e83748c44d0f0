"""GB classification (paper's Figure 5) on constructed bicrystals, and misorientation vs orix."""
from __future__ import annotations

import numpy as np
import pytest

from insitu.analysis.gb import classify, plane_angle_deg, trace_angle_deg
from insitu.analysis.microstructure import Microstructure
from insitu.analysis.orientation import misorientation_deg
from insitu.analysis.simulator import simulate


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


def test_c_along_beam_conducts_along_the_field():
    th = trace_angle_deg([[0, 0, 1], [1, 0, 0], [0, 1, 0]])
    assert np.isnan(th[0]) and th[1] == 90.0 and th[2] == 0.0
    assert classify([np.nan], [0.0], [90.0], [ACROSS])[0][0] == "II b1"


def test_plane_angle_and_misorientation_differ():
    # a rotation about the c-axis changes the orientation but not the conduction planes
    e1 = np.array([[0.2, 0.5, 0.0]])
    e2 = np.array([[0.2, 0.5, 0.7]])
    assert misorientation_deg(e1, e2)[0] == pytest.approx(np.degrees(0.7), abs=1e-9)
    from insitu.analysis.microstructure import c_axis_from_euler
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


@pytest.mark.parametrize("model", ["full", "diagonal"])
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
