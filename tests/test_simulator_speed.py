"""The compiled kernels of the simulator give the same answers as independent implementations
(tests/network_oracles.py)."""
from __future__ import annotations

import network_oracles as oracle
import numpy as np
import pytest

from insitu.analysis.transport import network
from insitu.analysis.transport.lamella import voronoi_lamella
from insitu.analysis.transport.simulator import simulate


def test_compiled_full_tensor_assembly_and_fluxes_equal_lapack_corner_inverses():
    m = voronoi_lamella((45, 58), n_grains=9, seed=11)      # oblique c-axes: full 9-point stencil
    v = network.voxel_properties(m, "full")
    fast, slow = network.assemble(v, m), oracle.assemble_corners(v, m)
    assert set(fast) == set(slow) and (1, 1) in fast and (1, -1) in fast
    scale = np.abs(slow["C"]).max()
    for k in slow:
        np.testing.assert_allclose(fast[k], slow[k], rtol=1e-12, atol=1e-13 * scale)
    phi = np.random.default_rng(0).normal(size=m.shape)
    a, b = network.fluxes(v, m, phi), oracle.fluxes_corners(v, m, phi)
    for k in ("jx", "jy", "fx", "fy"):
        np.testing.assert_allclose(a[k], b[k], rtol=1e-12, atol=1e-13 * np.abs(b[k]).max())


@pytest.mark.parametrize("model", ["full", "paper"])
def test_default_multigrid_tolerance_is_accurate_to_1e_6(model):
    """rtol 1e-8 with the float32 multigrid preconditioner: potential and electrode current within
    1e-6 (relative to the bias) of the sparse direct solution."""
    m = voronoi_lamella((150, 170), n_grains=16, seed=12)
    pots = {"top": 0.0, "right": 1.0}
    ref = simulate(m, pots, model=model, solver="direct")
    r = simulate(m, pots, model=model, solver="mg")
    assert r.info["method"] == "mg" and r.info["residual"] <= 1e-8
    ok = np.isfinite(ref.potential)
    np.testing.assert_array_equal(np.isfinite(r.potential), ok)
    assert np.max(np.abs(r.potential[ok] - ref.potential[ok])) < 1e-6 * 1.0
    for name in pots:
        assert r.electrode_current[name] == pytest.approx(ref.electrode_current[name], rel=1e-6)
    np.testing.assert_allclose(r.current_density, ref.current_density, rtol=0,
                               atol=1e-6 * np.abs(ref.current_density).max())


def _mixed_lamella():
    """Grains, backbone, ZrO2, vacuum, two electrodes and a floating island (grain 999 in vacuum)."""
    m = voronoi_lamella((61, 74), n_grains=9, seed=3, zro2=3, backbone_width=2)
    g = m.grains.copy()
    g[30:34, 20:25] = 0
    g[31:33, 21:24] = 999
    return type(m)(grains=g, grain_ids=np.append(m.grain_ids, 999), c_axis=np.vstack([m.c_axis, [[0.6, 0.0, 0.8]]]),
                   electrodes=m.electrodes, voxel_size_m=m.voxel_size_m, thickness_m=m.thickness_m)


@pytest.mark.parametrize("model, dense", [("full", True), ("paper", True), ("full", False)])
def test_compiled_voxel_maps_equal_numpy_lookups(model, dense, monkeypatch):
    """Both look-ups of the compiled path: a dense table of ids, and sorted ids (sparse ids)."""
    m = _mixed_lamella()
    if not dense:
        monkeypatch.setattr(network, "DENSE_ID_MAX", 0)
    a, b = network.voxel_properties(m, model), oracle.voxel_properties(m, model)
    for k in ("conducting", "electrode", "rxx", "ryy", "rxy", "sxx", "syy", "sxy", "label"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    assert a.names == b.names
    assert (a.label == 999).sum() == 6 and not a.conducting[m.grains == -1].any()


def test_compiled_five_point_assembly_and_fluxes_equal_numpy_bit_for_bit():
    m = _mixed_lamella()
    v = network.voxel_properties(m, "paper")
    fast, slow = network.assemble(v, m), oracle.assemble_five(v, m)
    assert set(fast) == set(slow) == {"C", (0, 1), (1, 0)}
    for k in slow:
        np.testing.assert_array_equal(fast[k], slow[k])
    phi = np.random.default_rng(1).normal(size=m.shape)
    phi[::7, ::5] = np.nan                                    # NaN is read as 0, as np.nan_to_num
    for st in (None, fast):
        a, b = network.fluxes(v, m, phi, stencil=st), oracle.fluxes_five(v, m, phi)
        for k in ("jx", "jy", "fx", "fy"):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_full_assembly_independent_of_row_blocks_and_matches_numpy_on_mixed_lamella():
    m = _mixed_lamella()
    v = network.voxel_properties(m, "full")
    el = v.electrode >= 0
    args = (v.rxx, v.ryy, v.rxy, v.conducting | el, el, v.label, 0.37, 2.5e-8)

    def blocks(nb):
        out = [np.zeros(m.shape) for _ in range(5)]
        network._assemble_full(*args, nb, *out)
        return out

    one = blocks(1)
    for nb in (2, 5, 62):                        # 62 blocks = one corner row each
        for x, y in zip(one, blocks(nb)):
            np.testing.assert_array_equal(x, y)
    fast, slow = network.assemble(v, m), oracle.assemble_corners(v, m)
    for k in slow:
        np.testing.assert_allclose(fast[k], slow[k], rtol=1e-12, atol=1e-13 * np.abs(slow["C"]).max())
    phi = np.random.default_rng(2).normal(size=m.shape)
    phi[::5, ::3] = np.nan                                    # read as 0, as np.nan_to_num
    a, b = network.fluxes(v, m, phi), oracle.fluxes_corners(v, m, phi)
    for k in ("jx", "jy", "fx", "fy"):
        np.testing.assert_allclose(a[k], b[k], rtol=1e-12, atol=1e-13 * np.abs(b[k]).max())


def test_connected_to_equals_labelled_components():
    from scipy import ndimage

    rng = np.random.default_rng(4)
    for p in (0.45, 0.6, 0.75):
        alive = rng.random((50, 63)) < p
        seed = np.zeros_like(alive)
        seed[0, :] = True
        seed[rng.integers(0, 50, 5), rng.integers(0, 63, 5)] = True
        lab, n = ndimage.label(alive)
        ref = np.isin(lab, np.unique(lab[seed & alive])) & alive
        np.testing.assert_array_equal(network.connected_to(alive, seed), ref)


def test_current_field_potential_and_electrode_currents_equal_whole_array_numpy():
    m = _mixed_lamella()
    v = network.voxel_properties(m, "full")
    st = network.assemble(v, m)
    rng = np.random.default_rng(5)
    phi = np.where(v.conducting | (v.electrode >= 0), rng.normal(size=m.shape), np.nan)
    alive = v.conducting | (v.electrode >= 0)
    phi0 = np.where(alive, np.nan_to_num(phi), 0.0)
    fl = network.fluxes(v, m, phi0)
    j, E = network.current_and_field(v, fl)
    dead = ~alive
    jx, jy = np.where(dead, 0.0, fl["jx"]), np.where(dead, 0.0, fl["jy"])
    np.testing.assert_array_equal(j, np.stack([jx, jy], axis=-1))
    Ex = np.where(v.conducting, v.rxx * jx + v.rxy * jy, np.nan)
    Ey = np.where(v.conducting, v.rxy * jx + v.ryy * jy, np.nan)
    Ex[~dead & ~v.conducting] = 0.0
    Ey[~dead & ~v.conducting] = 0.0
    np.testing.assert_array_equal(E, np.stack([Ex, Ey], axis=-1))
    buf = np.full(m.shape + (2,), 7.0)                       # in place: j made over the stored (jx, jy)
    fl2 = network.fluxes(v, m, phi0, out=buf)
    j2, E2 = network.current_and_field(v, fl2, out=buf)
    assert j2 is buf
    np.testing.assert_array_equal(j2, j)
    np.testing.assert_array_equal(E2, E)
    whole = network.apply(st, phi0)
    cur = network.electrode_currents(st, phi0, v.electrode, v.names)
    assert cur == {n: float(whole[v.electrode == i].sum()) for i, n in enumerate(v.names)}
    assert abs(sum(cur.values())) > 0                 # not trivially zero


def test_values_present_run_starts_equal_unique():
    from insitu.analysis.transport.microstructure import _values_present

    rng = np.random.default_rng(6)
    for n in (0, 1, 2, 17, 300):
        a = rng.integers(-2, 7, size=n)
        np.testing.assert_array_equal(_values_present(a), np.unique(a))
    runs = np.repeat(rng.integers(-2, 40, 60), rng.integers(1, 30, 60)).astype(np.int32)
    np.testing.assert_array_equal(_values_present(runs[: runs.size // 7 * 7].reshape(7, -1)), np.unique(runs[: runs.size // 7 * 7]))


def test_potential_maps_equal_numpy_composition():
    m = _mixed_lamella()
    v = network.voxel_properties(m, "full")
    el = v.electrode >= 0
    rng = np.random.default_rng(7)
    x = rng.normal(size=m.shape)
    x[::9, ::4] = np.nan
    x[1, ::7] = np.inf
    x[2, ::5] = -np.inf
    fixed = np.where(el, rng.normal(size=m.shape), np.nan)
    phi, phi0 = network.potential_maps(x, v.conducting, el, fixed)
    ref = np.where(v.conducting, x, np.nan)
    ref[el] = fixed[el]
    np.testing.assert_array_equal(phi, ref)
    np.testing.assert_array_equal(phi0, np.where(v.conducting | el, np.nan_to_num(ref), 0.0))
