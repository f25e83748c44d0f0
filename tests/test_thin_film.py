"""The two conductivity models against independent references written here.

* ``model="full"``: the thin-film tensor (J_z = 0), checked against bilinear finite elements of the
  Schur complement computed here from the 3x3 tensor, for a c-axis tilted out of the lamella.
* ``model="paper"``: the seed paper's sigma_x, sigma_y from the trace angle, checked against a
  link-by-link resistor network assembled here from the formula.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spl
from scipy.sparse.csgraph import connected_components

from insitu.analysis.transport import network
from insitu.analysis.transport.lamella import voronoi_lamella
from insitu.analysis.transport.microstructure import BACKBONE
from insitu.analysis.transport.simulator import simulate
from test_simulator import _q1_fem_conductance, lr_micro


def c_axis(beam_deg, azimuth_deg):
    """Unit c-axis at ``beam_deg`` from the beam (z), its projection at ``azimuth_deg`` from +x."""
    p, a = np.radians(beam_deg), np.radians(azimuth_deg)
    return np.array([np.sin(p) * np.cos(a), np.sin(p) * np.sin(a), np.cos(p)])


def sigma_3d(c, sigma_ip, anisotropy):
    c = np.asarray(c, float)
    return sigma_ip * (np.eye(3) - np.outer(c, c)) + sigma_ip / anisotropy * np.outer(c, c)


def thin_film_tensor(c, sigma_ip, anisotropy):
    """J_z = 0 eliminates E_z: sigma_pp - sigma_pz sigma_zp / sigma_zz (3x3 algebra, no shortcut)."""
    s = sigma_3d(c, sigma_ip, anisotropy)
    return s[:2, :2] - np.outer(s[:2, 2], s[2, :2]) / s[2, 2]


@pytest.mark.parametrize("beam_deg, azimuth_deg", [(80, 20), (45, 0), (30, 65), (0, 0), (90, 30)])
def test_thin_film_tensor_is_the_schur_complement(beam_deg, azimuth_deg):
    c = c_axis(beam_deg, azimuth_deg)
    got = network.grain_conductivity([c], 2.0, 1000.0)[0]
    ref = thin_film_tensor(c, 2.0, 1000.0)
    np.testing.assert_allclose(got, [ref[0, 0], ref[1, 1], ref[0, 1]], rtol=1e-10, atol=1e-13)
    # = the inverse of the in-plane block of the resistivity
    rho = np.linalg.inv(sigma_3d(c, 2.0, 1000.0))[:2, :2]
    np.testing.assert_allclose(np.linalg.inv(rho), ref, rtol=1e-9, atol=1e-12)


def test_full_model_equals_fem_of_the_thin_film_tensor_for_a_tilted_c_axis():
    c = c_axis(80.0, 20.0)                           # 10 deg out of the lamella, oblique in it
    aniso, size, t = 1000.0, 1e-6, 1e-7              # a 1 um square between two electrodes
    K = thin_film_tensor(c, 1.0, aniso)
    ref = _q1_fem_conductance(K, 256, 256, size / 256, t)     # conforming: an upper bound
    n = 64
    m = lr_micro(np.ones((n, n + 2)), {1: c}, anisotropy=aniso, voxel_size_m=size / n, thickness_m=t)
    got = simulate(m, {"left": 1.0, "right": 0.0}, model="full").conductance_S
    assert got == pytest.approx(ref, rel=0.05)       # measured: 0.966 ref (Q1 itself 2.4 % high at 128^2)
    assert got < ref
    # the in-plane block of sigma (E_z = 0, a thick sample) is another material altogether
    s = sigma_3d(c, 1.0, aniso)
    thick = _q1_fem_conductance(s[:2, :2], 64, 64, size / 64, t)
    assert thick / ref > 15.0                         # measured 25x


def _paper_network(m):
    """The paper's network built link by link from the formula (no simulator code): returns the
    potential (NaN where nothing conducts) and the current leaving each electrode."""
    sip, sop = m.sigma_ip, m.sigma_ip / m.anisotropy
    sig = {}
    for gid, c in zip(m.grain_ids.tolist(), m.c_axis):
        r = np.hypot(c[0], c[1])
        if r < 1e-12:
            sig[gid] = (sip, sip)
        else:
            tx, ty = c[1] / r, -c[0] / r
            sig[gid] = (sip * tx ** 2 + sop * ty ** 2, sip * ty ** 2 + sop * tx ** 2)
    g = m.grains
    ny, nx = g.shape
    h, t = m.voxel_size_m, m.thickness_m
    area = h * t
    r_gb = m.gb_thickness_m / (m.sigma_ip / m.gb_ratio) / area
    el = np.full(g.shape, -1)
    names = list(m.electrodes)
    for k, name in enumerate(names):
        el[m.electrodes[name]] = k
    sb = m.sigma_ip / m.backbone_ratio
    sxx, syy = np.zeros(g.shape), np.zeros(g.shape)
    for y in range(ny):
        for x in range(nx):
            if el[y, x] >= 0:
                continue
            if g[y, x] > 0:
                sxx[y, x], syy[y, x] = sig[int(g[y, x])]
            elif g[y, x] == BACKBONE:
                sxx[y, x] = syy[y, x] = sb
    cond = (sxx > 0)
    rows, cols, vals = [], [], []
    for y in range(ny):
        for x in range(nx):
            for dy, dx, s in ((0, 1, sxx), (1, 0, syy)):
                y2, x2 = y + dy, x + dx
                if y2 >= ny or x2 >= nx:
                    continue
                p, q = (y, x), (y2, x2)
                if not ((cond[p] or el[p] >= 0) and (cond[q] or el[q] >= 0)) or (el[p] >= 0 and el[q] >= 0):
                    continue
                R = 0.0
                for v in (p, q):
                    if cond[v]:
                        R += h / (2 * s[v] * area)
                if cond[p] and cond[q] and g[p] > 0 and g[q] > 0 and g[p] != g[q]:
                    R += r_gb
                i, j = p[0] * nx + p[1], q[0] * nx + q[1]
                rows += [i, j, i, j]
                cols += [i, j, j, i]
                vals += [1 / R, 1 / R, -1 / R, -1 / R]
    L = sp.csr_matrix((vals, (rows, cols)), shape=(ny * nx, ny * nx))
    return L, cond, el, names


def test_paper_model_equals_an_independent_network_of_the_formula():
    m = voronoi_lamella((40, 48), n_grains=10, seed=2)
    # a grain along the beam (isotropic) and one with c in the plane, to cover both branches
    m.c_axis[0] = [0.0, 0.0, 1.0]
    m.c_axis[1] = [0.6, 0.8, 0.0]
    pots = {"top": 0.0, "right": 1.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # floating clusters, if any, are excluded by both
        r = simulate(m, pots, model="paper", solver="direct")
    L, cond, el, names = _paper_network(m)
    fixed = np.zeros(L.shape[0])
    for k, name in enumerate(names):
        fixed[(el == k).ravel()] = pots[name]
    # unknowns: conducting voxels connected to an electrode through the network
    _, comp = connected_components(L, directed=False)
    el_flat = (el >= 0).ravel()
    live = np.isin(comp, np.unique(comp[el_flat])) & cond.ravel()
    u, f = np.flatnonzero(live), np.flatnonzero(el_flat)
    x = spl.spsolve(L[u][:, u].tocsc(), -L[u][:, f] @ fixed[f])
    np.testing.assert_allclose(r.potential.ravel()[u], x, rtol=1e-5, atol=1e-9)
    assert np.all(np.isnan(r.potential.ravel()[cond.ravel() & ~live]))
    phi = fixed.copy()
    phi[u] = x
    out = L @ phi
    for k, name in enumerate(names):
        assert r.electrode_current[name] == pytest.approx(out[(el == k).ravel()].sum(), rel=1e-5)


def test_diagonal_is_a_deprecated_alias_of_paper():
    m = voronoi_lamella((32, 32), n_grains=6, seed=1)
    with pytest.warns(DeprecationWarning, match="'paper'"):
        a = simulate(m, {"top": 0.0, "right": 1.0}, model="diagonal")
    b = simulate(m, {"top": 0.0, "right": 1.0}, model="paper")
    assert a.model == b.model == "paper"
    np.testing.assert_array_equal(a.potential, b.potential)
