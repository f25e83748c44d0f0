"""The fast paths of the simulator give the same answers as the slow, independent ones."""
from __future__ import annotations

import numpy as np
import pytest

from insitu.analysis import network
from insitu.analysis.lamella import voronoi_lamella
from insitu.analysis.simulator import simulate


def test_compiled_full_tensor_assembly_and_fluxes_equal_vectorised():
    m = voronoi_lamella((45, 58), n_grains=9, seed=11)      # oblique c-axes: full 9-point stencil
    v = network.voxel_properties(m, "full")
    fast, slow = network.assemble(v, m), network.assemble(v, m, vectorised=True)
    assert set(fast) == set(slow) and (1, 1) in fast and (1, -1) in fast
    scale = np.abs(slow["C"]).max()
    for k in slow:
        np.testing.assert_allclose(fast[k], slow[k], rtol=1e-12, atol=1e-13 * scale)
    phi = np.random.default_rng(0).normal(size=m.shape)
    a, b = network.fluxes(v, m, phi), network.fluxes(v, m, phi, vectorised=True)
    for k in ("jx", "jy", "fx", "fy"):
        np.testing.assert_allclose(a[k], b[k], rtol=1e-12, atol=1e-13 * np.abs(b[k]).max())


@pytest.mark.parametrize("model", ["full", "diagonal"])
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
