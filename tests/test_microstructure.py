"""Microstructure file: round trip, validation errors, boundary faces, the lamella generator."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from insitu.analysis.transport.lamella import voronoi_lamella
from insitu.analysis.transport.microstructure import (
    BACKBONE, ZRO2, Microstructure, boundary_pixels, c_axis_from_euler, read_microstructure, write_microstructure)
from insitu.core.errors import UserError


def _bicrystal(**kw):
    g = np.ones((4, 6), np.int32)
    g[:, 3:] = 2
    top = np.zeros_like(g, bool)
    top[:, 0] = True
    bottom = np.zeros_like(g, bool)
    bottom[:, -1] = True
    return Microstructure(grains=g, grain_ids=[1, 2], c_axis=[[0, 0, 1], [1, 0, 0]],
                          electrodes={"left": top, "right": bottom}, voxel_size_m=1e-8, **kw)


def test_round_trip_keeps_everything(tmp_path):
    m = voronoi_lamella((64, 80), n_grains=12, seed=3, gb_ratio=7.0)
    write_microstructure(tmp_path / "m.h5", m)
    r = read_microstructure(tmp_path / "m.h5")
    np.testing.assert_array_equal(r.grains, m.grains)
    np.testing.assert_array_equal(r.grain_ids, m.grain_ids)
    np.testing.assert_allclose(r.c_axis, m.c_axis)
    np.testing.assert_allclose(r.euler_bunge, m.euler_bunge)
    assert set(r.electrodes) == {"top", "right"}
    for k in m.electrodes:
        np.testing.assert_array_equal(r.electrodes[k], m.electrodes[k])
    assert (r.gb_ratio, r.voxel_size_m, r.thickness_m) == (7.0, m.voxel_size_m, m.thickness_m)


def test_defaults_and_euler_only_file(tmp_path):
    p = tmp_path / "e.h5"
    with h5py.File(p, "w") as f:
        f["grains"] = np.array([[1, 1, 2, 2]], np.int32)
        f["orientations/grain_id"] = np.array([1, 2], np.int32)
        f["orientations/euler_bunge"] = np.array([[0.3, np.pi / 2, 0.1], [0.0, 0.0, 0.0]])
        f["electrodes/a"] = np.array([[1, 0, 0, 0]], bool)
        f["electrodes/b"] = np.array([[0, 0, 0, 1]], bool)
        f.attrs["voxel_size_m"] = 2e-9
    with pytest.warns(UserWarning, match="no thickness_m attribute; the lamella is taken to be one voxel"):
        m = read_microstructure(p)              # not silently
    assert m.thickness_m == 2e-9 and m.sigma_ip == 1.0 and m.anisotropy == 1000.0
    assert m.gb_ratio == 20.0 and m.gb_thickness_m == 1e-9 and m.backbone_ratio == 250.0
    np.testing.assert_allclose(m.c_axis[0], [np.sin(0.3), -np.cos(0.3), 0.0], atol=1e-12)
    np.testing.assert_allclose(m.c_axis[1], [0, 0, 1], atol=1e-12)


@pytest.mark.parametrize("drop, message", [("grains", "/grains"), ("orientations/grain_id", "grain_id"),
                                           ("orientations/c_axis", "c_axis"), ("electrodes", "/electrodes")])
def test_missing_datasets_named(tmp_path, drop, message):
    p = tmp_path / "m.h5"
    write_microstructure(p, _bicrystal())
    with h5py.File(p, "a") as f:
        del f[drop]
    with pytest.raises(UserError, match=message):
        read_microstructure(p)


def test_missing_voxel_size(tmp_path):
    p = tmp_path / "m.h5"
    write_microstructure(p, _bicrystal())
    with h5py.File(p, "a") as f:
        del f.attrs["voxel_size_m"]
    with pytest.raises(UserError, match="voxel_size_m"):
        read_microstructure(p)


def test_validation_messages():
    m = _bicrystal()
    m.grains[0, 0] = 7
    with pytest.raises(UserError, match=r"grain ids \[7\].*no orientation"):
        m.validate()
    m = _bicrystal()
    m.c_axis[1] = [1, 1, 0]
    with pytest.raises(UserError, match="grain 2 is not a unit vector"):
        m.validate()
    m = _bicrystal()
    m.electrodes["right"][:, 0] = True
    with pytest.raises(UserError, match="overlap"):
        m.validate()
    m = _bicrystal()
    m.grains[:, 1] = ZRO2
    with pytest.raises(UserError, match="electrode 'left' touches no conducting"):
        m.validate()
    m = _bicrystal()
    m.electrodes["left"][:] = False
    with pytest.raises(UserError, match="'left' is empty"):
        m.validate()


def test_boundary_pixels_faces():
    g = np.array([[1, 1, 2],
                  [1, 3, 2],
                  [0, 3, 3]])
    bp = boundary_pixels(g)
    pairs = sorted(zip(bp["grain_a"].tolist(), bp["grain_b"].tolist(), bp["y"].tolist(), bp["x"].tolist()))
    assert pairs == [(1, 2, 0.0, 1.5), (1, 3, 0.5, 1.0), (1, 3, 1.0, 0.5), (2, 3, 1.0, 1.5), (2, 3, 1.5, 2.0)]
    # the a-side voxel really holds grain_a, the b side grain_b
    assert np.all(g[bp["ya"], bp["xa"]] == bp["grain_a"]) and np.all(g[bp["yb"], bp["xb"]] == bp["grain_b"])


def test_euler_formula_is_third_row_of_bunge_matrix():
    rng = np.random.default_rng(0)
    e = rng.uniform(0, 2 * np.pi, (5, 3))
    for (p1, P, p2), c in zip(e, c_axis_from_euler(e)):
        rz = lambda a: np.array([[np.cos(a), np.sin(a), 0], [-np.sin(a), np.cos(a), 0], [0, 0, 1]])
        rx = np.array([[1, 0, 0], [0, np.cos(P), np.sin(P)], [0, -np.sin(P), np.cos(P)]])
        g = rz(p2) @ rx @ rz(p1)  # sample -> crystal (Bunge)
        np.testing.assert_allclose(g.T @ [0, 0, 1], c, atol=1e-12)


def test_lamella_layout_is_paper_like_and_reproducible():
    m = voronoi_lamella((128, 160), n_grains=20, seed=5)
    m2 = voronoi_lamella((128, 160), n_grains=20, seed=5)
    np.testing.assert_array_equal(m.grains, m2.grains)
    assert 15 <= m.grain_ids.size <= 20
    assert (m.grains == ZRO2).any() and (m.grains == BACKBONE).any()
    top, right = m.electrodes["top"], m.electrodes["right"]
    assert top[0].sum() > 100 and right[:, -1].sum() > 100 and not (top & right).any()
    # the electrodes do not touch each other (no 4-neighbour contact)
    grown = top.copy()
    grown[1:] |= top[:-1]
    grown[:, 1:] |= top[:, :-1]
    grown[:, :-1] |= top[:, 1:]
    assert not (grown & right).any()
    np.testing.assert_allclose(np.linalg.norm(m.c_axis, axis=1), 1.0)
    m.validate()
