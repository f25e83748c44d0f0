"""Independent implementations of the transport network, for the tests only (test oracles).

The simulator's kernels (``insitu.analysis.transport.network``) are compiled numba loops. These are
the same quantities computed another way, as whole-array numpy on a padded grid or link by link with
scipy.sparse, so that a test can compare the two:

* :func:`voxel_properties` - per-voxel tensors by sorted look-up (``np.searchsorted``);
* :func:`face_conductances`, :func:`assemble_five`, :func:`fluxes_five` - the paper's 5-point network
  (the same arithmetic as the compiled kernels: equal to the last bit);
* :func:`corner_inverses`, :func:`assemble_corners`, :func:`fluxes_corners` - the MFMFE corner scheme,
  each corner's local matrix M' inverted by LAPACK (``np.linalg.inv``), not by the kernels' Schur
  complement;
* :func:`link_network` - the paper's network as a scipy matrix over all voxels, one link at a time.

They moved here from the production module (issue 17): nothing but the tests and the benchmark's
baseline uses them.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from insitu.analysis.transport.microstructure import BACKBONE
from insitu.analysis.transport.network import FORWARD, Voxels, grain_conductivity


def gb_resistance(m) -> float:
    """2 r_GB / h (Ohm m): a face's GB resistor as a resistivity over half a voxel on each side."""
    return 2.0 * (m.gb_thickness_m / (m.sigma_ip / m.gb_ratio)) / m.voxel_size_m


def voxel_properties(m, model: str = "full") -> Voxels:
    """Per-voxel tensors with whole-array look-ups (sorted ids, ``np.searchsorted``)."""
    g = m.grains
    names = list(m.electrodes)
    electrode = np.full(g.shape, -1, np.int16)
    for i, name in enumerate(names):
        electrode[m.electrodes[name]] = i
    ids = np.asarray(m.grain_ids)
    sig = grain_conductivity(m.c_axis, m.sigma_ip, m.anisotropy, model)
    is_el = electrode >= 0
    grain = (g > 0) & ~is_el
    backbone = (g == BACKBONE) & ~is_el
    conducting = grain | backbone
    s = np.zeros(g.shape + (3,))
    if ids.size:
        order = np.argsort(ids)
        s[grain] = sig[order[np.searchsorted(ids[order], g[grain])]]
    sb = m.sigma_ip / m.backbone_ratio
    s[backbone] = (sb, sb, 0.0)
    sxx, syy, sxy = s[..., 0], s[..., 1], s[..., 2]
    det = sxx * syy - sxy ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        rxx = np.where(conducting, syy / det, 0.0)
        ryy = np.where(conducting, sxx / det, 0.0)
        rxy = np.where(conducting, -sxy / det, 0.0)
    label = np.where(grain, g, 0).astype(np.int32)
    return Voxels(conducting, electrode, rxx, ryy, rxy, sxx, syy, sxy, label, names)


def _open_faces(alive, el, label, gb_res):
    """Open masks and GB resistances of x-faces (i,j)|(i,j+1) and y-faces (i,j)|(i+1,j)."""
    ox = alive[:, :-1] & alive[:, 1:] & ~(el[:, :-1] & el[:, 1:])
    oy = alive[:-1, :] & alive[1:, :] & ~(el[:-1, :] & el[1:, :])
    gx = np.where((label[:, :-1] > 0) & (label[:, 1:] > 0) & (label[:, :-1] != label[:, 1:]), gb_res, 0.0)
    gy = np.where((label[:-1, :] > 0) & (label[1:, :] > 0) & (label[:-1, :] != label[1:, :]), gb_res, 0.0)
    return ox, oy, gx, gy


def face_conductances(v: Voxels, m):
    """Diagonal tensors: conductance (S) of every x-face (ny, nx-1) and y-face (ny-1, nx),
    G = 1 / (h/(2 s_p A) + h/(2 s_q A) + [GB] t_GB/(s_GB A)) = 2t / (rho_p + rho_q + 2 r_GB/h)."""
    t = m.thickness_m
    el = v.electrode >= 0
    ox, oy, gx, gy = _open_faces(v.conducting | el, el, v.label, gb_resistance(m))
    rxx, ryy = v.rxx, v.ryy
    with np.errstate(divide="ignore"):
        Gx = np.where(ox, 2.0 * t / np.where(ox, rxx[:, :-1] + rxx[:, 1:] + gx, 1.0), 0.0)
        Gy = np.where(oy, 2.0 * t / np.where(oy, ryy[:-1, :] + ryy[1:, :] + gy, 1.0), 0.0)
    return Gx, Gy


def assemble_five(v: Voxels, m) -> dict:
    """The 5-point stencil from :func:`face_conductances` (C, (0, 1), (1, 0))."""
    Gx, Gy = face_conductances(v, m)
    C = np.zeros(v.rxx.shape)
    C[:, :-1] += Gx
    C[:, 1:] += Gx
    C[:-1, :] += Gy
    C[1:, :] += Gy
    Ex = np.zeros(C.shape)
    Ex[:, :-1] = -Gx
    Sy = np.zeros(C.shape)
    Sy[:-1, :] = -Gy
    return {"C": C, (0, 1): Ex, (1, 0): Sy}


def fluxes_five(v: Voxels, m, phi) -> dict:
    """Face and voxel current densities (A/m^2) of the 5-point network (NaN potentials read as 0)."""
    Gx, Gy = face_conductances(v, m)
    ph = np.where(v.conducting | (v.electrode >= 0), np.nan_to_num(phi), 0.0)
    area = m.voxel_size_m * m.thickness_m
    fx = Gx * (ph[:, :-1] - ph[:, 1:]) / area
    fy = Gy * (ph[:-1, :] - ph[1:, :]) / area
    jx = np.zeros(ph.shape)
    jy = np.zeros(ph.shape)
    jx[:, :-1] += fx
    jx[:, 1:] += fx
    jy[:-1, :] += fy
    jy[1:, :] += fy
    return dict(jx=jx / 2.0, jy=jy / 2.0, fx=fx, fy=fy)


#: faces of a corner in the order of the local matrices: U, L (x-faces), W, E (y-faces)
FACES = ("U", "L", "W", "E")


def corner_inverses(v: Voxels, m):
    """M'^-1 (4 x 4, faces :data:`FACES`) of every corner of the padded grid, by ``np.linalg.inv``.

    Padded corner (a, b) joins padded cells UL (a, b), UR (a, b+1), LL (a+1, b), LR (a+1, b+1);
    U = UL|UR, L = LL|LR, W = UL|LL, E = UR|LR. M' = sum over the cells of their resistivity on the
    faces they touch, plus the GB resistors on the diagonal; closed faces get zero rows and columns.
    Returns Minv, shape (ny+1, nx+1, 4, 4).
    """
    pad = lambda a, val=0: np.pad(a, 1, constant_values=val)
    el = pad(v.electrode >= 0, False)
    alive = pad(v.conducting | (v.electrode >= 0), False)
    rxx, ryy, rxy, lab = pad(v.rxx), pad(v.ryy), pad(v.rxy), pad(v.label)
    ox, oy, gx, gy = _open_faces(alive, el, lab, gb_resistance(m))
    UL, UR, LL, LR = ((slice(0, -1), slice(0, -1)), (slice(0, -1), slice(1, None)),
                      (slice(1, None), slice(0, -1)), (slice(1, None), slice(1, None)))
    o = np.stack([ox[:-1, :], ox[1:, :], oy[:, :-1], oy[:, 1:]], axis=-1)       # U, L, W, E open
    M = np.zeros(o.shape + (4,))
    M[..., 0, 0] = rxx[UL] + rxx[UR] + gx[:-1, :]
    M[..., 1, 1] = rxx[LL] + rxx[LR] + gx[1:, :]
    M[..., 2, 2] = ryy[UL] + ryy[LL] + gy[:, :-1]
    M[..., 3, 3] = ryy[UR] + ryy[LR] + gy[:, 1:]
    for f1, f2, cell in ((0, 2, UL), (0, 3, UR), (1, 2, LL), (1, 3, LR)):   # the cell both faces touch
        M[..., f1, f2] = M[..., f2, f1] = rxy[cell]
    both = o[..., :, None] & o[..., None, :]
    M = np.where(both, M, 0.0)
    idx = np.arange(4)
    M[..., idx, idx] = np.where(o, M[..., idx, idx], 1.0)      # closed faces: identity, zeroed after
    Minv = np.linalg.inv(M)
    return np.where(both, Minv, 0.0)


#: g vectors (components on U, L, W, E) of the corner's cells: UL = U + W, UR = -U + E, LL = L - W, LR = -L - E
G_CELLS = {"UL": np.array([1.0, 0, 1, 0]), "UR": np.array([-1.0, 0, 0, 1]),
           "LL": np.array([0.0, 1, -1, 0]), "LR": np.array([0.0, -1, 0, -1])}


def assemble_corners(v: Voxels, m) -> dict:
    """The MFMFE stencil, A[c1, c2] = t g1^T M'^-1 g2 summed over the corners (whole arrays)."""
    t = m.thickness_m
    Minv = corner_inverses(v, m)
    q = lambda c1, c2: t * np.einsum("i,abij,j->ab", G_CELLS[c1], Minv, G_CELLS[c2])
    Ny, Nx = Minv.shape[0] + 1, Minv.shape[1] + 1
    C = np.zeros((Ny, Nx))
    st = {o: np.zeros((Ny, Nx)) for o in FORWARD}
    C[:-1, :-1] += q("UL", "UL")
    C[:-1, 1:] += q("UR", "UR")
    C[1:, :-1] += q("LL", "LL")
    C[1:, 1:] += q("LR", "LR")
    st[(0, 1)][:-1, :-1] += q("UL", "UR")
    st[(0, 1)][1:, :-1] += q("LL", "LR")
    st[(1, 0)][:-1, :-1] += q("UL", "LL")
    st[(1, 0)][:-1, 1:] += q("UR", "LR")
    st[(1, 1)][:-1, :-1] += q("UL", "LR")
    st[(1, -1)][:-1, 1:] += q("UR", "LL")
    out = {"C": C[1:-1, 1:-1]}
    for o, arr in st.items():
        a = arr[1:-1, 1:-1]
        if np.any(a != 0.0):
            out[o] = a
    return out


def fluxes_corners(v: Voxels, m, phi) -> dict:
    """Current densities of the corner scheme: half-face fluxes (2/h) M'^-1 G^T phi of every corner,
    each voxel the mean of its 4 corners' fluxes, each face the sum of its two half faces / 2."""
    Minv = corner_inverses(v, m)
    ph = np.pad(np.where(v.conducting | (v.electrode >= 0), np.nan_to_num(phi), 0.0), 1)
    pUL, pUR, pLL, pLR = ph[:-1, :-1], ph[:-1, 1:], ph[1:, :-1], ph[1:, 1:]
    d = np.stack([pUL - pUR, pLL - pLR, pUL - pLL, pUR - pLR], axis=-1)          # G^T phi on U, L, W, E
    f = (2.0 / m.voxel_size_m) * np.einsum("abij,abj->abi", Minv, d)
    fU, fL, fW, fE = f[..., 0], f[..., 1], f[..., 2], f[..., 3]
    Ny, Nx = ph.shape
    jx, jy = np.zeros((Ny, Nx)), np.zeros((Ny, Nx))
    fxf, fyf = np.zeros((Ny, Nx - 1)), np.zeros((Ny - 1, Nx))
    jx[:-1, :-1] += fU
    jx[:-1, 1:] += fU
    jx[1:, :-1] += fL
    jx[1:, 1:] += fL
    jy[:-1, :-1] += fW
    jy[1:, :-1] += fW
    jy[:-1, 1:] += fE
    jy[1:, 1:] += fE
    fxf[:-1, :] += 0.5 * fU
    fxf[1:, :] += 0.5 * fL
    fyf[:, :-1] += 0.5 * fW
    fyf[:, 1:] += 0.5 * fE
    return dict(jx=jx[1:-1, 1:-1] / 4.0, jy=jy[1:-1, 1:-1] / 4.0, fx=fxf[1:-1, 1:-1], fy=fyf[1:-1, 1:-1])


def link_network(v: Voxels, m) -> sp.csr_matrix:
    """The paper's 5-point network over all voxels (S), assembled one link at a time (scipy COO).

    Link resistance between neighbours p, q along axis k: h/(2 sigma_p,kk A) + h/(2 sigma_q,kk A)
    + [different grains] t_GB/(sigma_GB A), A = h t (electrode halves ideal).
    """
    ny, nx = v.conducting.shape
    h, t = m.voxel_size_m, m.thickness_m
    r_gb = m.gb_thickness_m / (m.sigma_ip / m.gb_ratio) / (h * t)
    el = v.electrode >= 0
    alive = v.conducting | el
    idx = np.arange(ny * nx).reshape(ny, nx)
    rows, cols, vals = [], [], []
    for axis, s in ((1, v.sxx), (0, v.syy)):
        if axis == 1:
            p, q = (slice(None), slice(0, nx - 1)), (slice(None), slice(1, nx))
        else:
            p, q = (slice(0, ny - 1), slice(None)), (slice(1, ny), slice(None))
        ok = alive[p] & alive[q] & ~(el[p] & el[q])
        with np.errstate(divide="ignore"):
            half_p = np.where(el[p], 0.0, 1.0 / (2 * s[p] * t))
            half_q = np.where(el[q], 0.0, 1.0 / (2 * s[q] * t))
        lp, lq = v.label[p], v.label[q]
        R = half_p + half_q + np.where((lp > 0) & (lq > 0) & (lp != lq), r_gb, 0.0)
        g = 1.0 / R[ok]
        i, j = idx[p][ok], idx[q][ok]
        rows += [i, j, i, j]
        cols += [i, j, j, i]
        vals += [g, g, -g, -g]
    return sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(ny * nx, ny * nx)).tocsr()


def reference_solver(p, info: dict) -> np.ndarray:
    """The benchmark baseline as a linear solver of ``simulator.SOLVERS`` (paper model only):
    :func:`link_network` over all voxels, the unknowns' block and the electrodes' couplings taken
    out of it, pyamg Ruge-Stueben + CG to ``p.rtol``. The given stencil is not used."""
    import pyamg

    if p.model != "paper":
        raise ValueError("the reference solver implements the paper model only")
    v = p.voxels
    A_all = link_network(v, p.micro)
    u = np.flatnonzero(v.conducting.ravel())
    f = np.flatnonzero((v.electrode >= 0).ravel())
    A = A_all[u][:, u]
    b = -(A_all[u][:, f] @ p.fixed.ravel()[f])
    res = []
    x = pyamg.ruge_stuben_solver(A).solve(b, tol=p.rtol, accel="cg", residuals=res)
    info.update(method="reference", iterations=len(res) - 1, nnz=int(A.nnz),
                residual=float(np.linalg.norm(b - A @ x) / max(np.linalg.norm(b), 1e-300)))
    out = np.zeros(v.conducting.shape)
    out.ravel()[u] = x
    return out
