"""Assembly of the voxel resistor network (diagonal, 5-point) and the full-tensor scheme (9-point).

Both models share one discretisation: the multipoint-flux mixed finite element method (Wheeler &
Yotov, SIAM J. Numer. Anal. 44, 2006) on the voxel grid. Around every voxel corner the four half-face
fluxes are eliminated locally from

    M' f = G^T phi,     M' = sum_cells P_c^T rho_c P_c + diag(2 r_GB / h  on GB half-faces),

with rho_c = (in-plane conductivity block)^-1 of each voxel (0 for electrodes, whose faces are ideal),
and the half-face current F = t M'^-1 G^T phi. The cell-centred matrix A = t G M'^-1 G^T is symmetric
positive (semi-)definite.

* For a diagonal tensor (``model="paper"``: the paper's sigma_xx, sigma_yy only) M' is diagonal and
  the scheme is exactly the paper's network: link resistance between neighbours p, q along axis k
  R = h/(2 sigma_p,kk A) + h/(2 sigma_q,kk A) + [different grains] t_GB/(sigma_GB A), A = h t.
* With the full 2x2 tensor the off-diagonal terms couple the faces around a corner (9-point stencil);
  the scheme converges to the continuum solution under refinement (tests/test_simulator.py).

The kernels are compiled numba loops (parallel over row blocks, each sum made in the order of
a plain serial loop, so results do not depend on the number of threads). Their independent
cross-checks (whole-array numpy versions, the link-by-link scipy network) live with the tests, in
``tests/network_oracles.py``. Output arrays are allocated by numpy (huge-page advised: cheaper first
touch than numba's own allocations on 2048^2 maps).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from insitu.analysis.transport.microstructure import BACKBONE, Microstructure

#: stencil offsets (dy, dx) stored on the grid (the other half follows by symmetry)
FORWARD = ((0, 1), (1, 0), (1, 1), (1, -1))


@dataclass
class Voxels:
    """Per-voxel transport properties on the (ny, nx) grid (SI units)."""

    conducting: np.ndarray   # bool: grain or backbone, not electrode
    electrode: np.ndarray    # int16: electrode index, -1 for none
    rxx: np.ndarray          # resistivity tensor (Ohm m) = inverse in-plane conductivity block
    ryy: np.ndarray
    rxy: np.ndarray
    sxx: np.ndarray          # in-plane conductivity block (S/m), 0 where nothing conducts
    syy: np.ndarray
    sxy: np.ndarray
    label: np.ndarray        # grain id where a GB term applies (grains > 0, not electrode), else 0
    names: list              # electrode names, by index


#: simulator models: "full" = thin-film tensor (default), "paper" = the seed paper's sigma_x, sigma_y
MODELS = ("full", "paper")


def model_name(model: str) -> str:
    """The canonical model name: "diagonal" (deprecated) is the paper's model; ValueError if unknown."""
    if model == "diagonal":
        return "paper"
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r} (full or paper)")
    return model


def grain_conductivity(c_axis, sigma_ip: float, anisotropy: float, model: str = "full") -> np.ndarray:
    """The 2x2 conductivity (sxx, syy, sxy) that acts in the lamella plane, per grain.

    ``model="full"``: the thin-film tensor. The 3-D conductivity is
    sigma = sigma_ip (I - c c^T) + sigma_op c c^T; the lamella has vacuum on both faces, so J_z = 0,
    and the 2-D tensor is the Schur complement sigma_pp - sigma_pz sigma_zp / sigma_zz, i.e. the
    inverse of the in-plane block of rho = sigma^-1 = rho_ip (I - c c^T) + rho_op c c^T. With p the
    in-plane part of c (|p|^2 = 1 - c_z^2): rho_pp = rho_ip I + (rho_op - rho_ip) p p^T, whose
    inverse has sigma_ip across p and 1 / (rho_ip c_z^2 + rho_op |p|^2) along p.

    ``model="paper"``: Ding et al. (2023): only the angle of the conduction-plane trace
    t = (c_y, -c_x) / |(c_x, c_y)| counts: sxx = sigma_ip t_x^2 + sigma_op t_y^2,
    syy = sigma_ip t_y^2 + sigma_op t_x^2, sxy = 0; c along the beam (|(c_x, c_y)| < 1e-12) is
    isotropic sigma_ip. ``"diagonal"`` is a deprecated alias of ``"paper"``.

    Parameters
    ----------
    c_axis : array_like, shape (n, 3)
        Unit c-axes in the sample frame (z along the beam).
    sigma_ip : float
        In-plane (conduction-plane) conductivity, S/m.
    anisotropy : float
        sigma_ip / sigma_op.
    model : {"full", "paper"}

    Returns
    -------
    ndarray, shape (n, 3)
        Columns sxx, syy, sxy (S/m).

    Example
    -------
    >>> grain_conductivity([[1.0, 0, 0]], 1.0, 1000.0) + 0.0    # + 0.0: print -0.0 as 0.0
    array([[0.001, 1.   , 0.   ]])
    >>> s = 2 ** -0.5                       # c at 45 deg from the beam, in the x-z plane
    >>> grain_conductivity([[s, 0, s]], 1.0, 1000.0).round(5) + 0.0     # thin film: ~ 2 sigma_op along x
    array([[0.002, 1.   , 0.   ]])
    >>> grain_conductivity([[s, 0, s]], 1.0, 1000.0, "paper") + 0.0
    array([[0.001, 1.   , 0.   ]])
    """
    model = model_name(model)
    c = np.asarray(c_axis, float).reshape(-1, 3)
    sop = sigma_ip / anisotropy
    cx, cy = c[:, 0], c[:, 1]
    p2 = cx ** 2 + cy ** 2
    if model == "paper":
        r = np.sqrt(p2)
        iso = r < 1e-12
        rr = np.where(iso, 1.0, r)
        tx, ty = np.where(iso, 1.0, cy / rr), np.where(iso, 0.0, -cx / rr)
        sxx = np.where(iso, sigma_ip, sigma_ip * tx ** 2 + sop * ty ** 2)
        syy = np.where(iso, sigma_ip, sigma_ip * ty ** 2 + sop * tx ** 2)
        return np.stack([sxx, syy, np.zeros_like(sxx)], axis=1)
    cz2 = np.clip(1.0 - p2, 0.0, 1.0)        # unit c: c_z^2 = 1 - |p|^2
    s_along = 1.0 / (cz2 / sigma_ip + p2 / sop)        # conductivity along the projected c
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(p2 > 0, (sigma_ip - s_along) / np.where(p2 > 0, p2, 1.0), 0.0)
    # sigma_2d = sigma_ip I - w p p^T  (w |p|^2 = sigma_ip - s_along)
    return np.stack([sigma_ip - w * cx * cx, sigma_ip - w * cy * cy, -w * cx * cy], axis=1)


@njit(cache=True, parallel=True)
def _voxel_maps(g, electrode, lut, n, backbone_code, tables, conducting, label, out):
    """Material row of every voxel (grain -> lut[id], backbone -> n, else n + 1; electrodes are no
    material) and the six property maps looked up from ``tables`` (6, n + 2), written into
    ``conducting``, ``label`` (ny, nx) and ``out`` (6, ny, nx)."""
    ny, nx = g.shape
    for i in prange(ny):
        for j in range(nx):
            gv = g[i, j]
            free = electrode[i, j] < 0
            grain = (gv > 0) & free
            k = lut[gv] if grain else (n if ((gv == backbone_code) & free) else n + 1)
            conducting[i, j] = k <= n
            label[i, j] = gv if grain else 0
            for p in range(6):
                out[p, i, j] = tables[p, k]


#: grain ids below this are looked up in a dense table (one entry per id); sparser ids are sorted
DENSE_ID_MAX = 50_000_000


def voxel_properties(m: Microstructure, model: str = "full") -> Voxels:
    """Voxel conductivity/resistivity tensors for ``model`` ("full" or "paper", see :func:`grain_conductivity`).

    Parameters
    ----------
    m : Microstructure
        A validated microstructure (every grain id in ``m.grains`` is in ``m.grain_ids``).
    model : {"full", "paper"}

    Returns
    -------
    Voxels
        Electrodes conduct nothing here (their faces are ideal); vacuum and ZrO2 neither.

    Example
    -------
    >>> from insitu.analysis.transport.lamella import voronoi_lamella
    >>> v = voxel_properties(voronoi_lamella((32, 32), n_grains=3))    # doctest: +SKIP
    """
    g = m.grains
    names = list(m.electrodes)
    electrode = np.full(g.shape, -1, np.int16)
    for i, name in enumerate(names):
        electrode[m.electrodes[name]] = i

    sig = grain_conductivity(m.c_axis, m.sigma_ip, m.anisotropy, model)
    ids = np.asarray(m.grain_ids)
    n = ids.size
    # per-material tables (rows: grains, backbone, nothing), looked up voxel by voxel
    sb = m.sigma_ip / m.backbone_ratio
    tab = np.zeros((n + 2, 3))
    tab[:n] = sig
    tab[n] = (sb, sb, 0.0)
    tsxx, tsyy, tsxy = tab[:, 0], tab[:, 1], tab[:, 2]
    det = tsxx * tsyy - tsxy ** 2
    live = np.arange(n + 2) <= n                    # conducting rows
    with np.errstate(divide="ignore", invalid="ignore"):
        trxx = np.where(live, tsyy / det, 0.0)
        tryy = np.where(live, tsxx / det, 0.0)
        trxy = np.where(live, -tsxy / det, 0.0)
    tables = np.stack((tsxx, tsyy, tsxy, trxx, tryy, trxy))
    g = np.ascontiguousarray(g)
    top = int(ids.max()) if n else 0
    if top < DENSE_ID_MAX:
        lut = np.zeros(max(top, int(g.max()), 0) + 1, np.intp)
        lut[ids] = np.arange(n)
        gl = g
    else:                      # sparse ids: number the grains 1..n first (sorted look-up)
        order = np.argsort(ids)
        grain = g > 0
        gl = np.where(grain, 0, g)
        gl[grain] = np.searchsorted(ids[order], g[grain]) + 1
        lut = np.zeros(n + 1, np.intp)
        lut[1:] = order
    conducting, label, maps = np.empty(g.shape, bool), np.empty(g.shape, np.int32), np.empty((6,) + g.shape)
    _voxel_maps(gl, electrode, lut, n, BACKBONE, tables, conducting, label, maps)
    if gl is not g:
        label = np.where(label > 0, g, 0).astype(np.int32)
    sxx, syy, sxy, rxx, ryy, rxy = maps
    return Voxels(conducting, electrode, rxx, ryy, rxy, sxx, syy, sxy, label, names)


@njit(cache=True)
def _block_inverse(dU, dL, dW, dE, aUL, aUR, aLL, aLR):
    """Entries (UU, LL, WW, EE, UL, WE, UW, UE, LW, LE) of the inverse of the corner matrix
    [[D1, C], [C^T, D2]], D1 = diag(dU, dL), D2 = diag(dW, dE), C = [[aUL, aUR], [aLL, aLR]], by its
    Schur complement."""
    xUL, xUR, xLL, xLR = aUL / dU, aUR / dU, aLL / dL, aLR / dL
    s11 = dW - aUL * xUL - aLL * xLL
    s22 = dE - aUR * xUR - aLR * xLR
    s12 = -(aUL * xUR + aLL * xLR)
    det = s11 * s22 - s12 * s12
    i11, i22, i12 = s22 / det, s11 / det, -s12 / det           # S^-1 (rows/cols W, E)
    # M^-1_12 = -X S^-1 (rows U, L; cols W, E)
    mUW = -(xUL * i11 + xUR * i12)
    mUE = -(xUL * i12 + xUR * i22)
    mLW = -(xLL * i11 + xLR * i12)
    mLE = -(xLL * i12 + xLR * i22)
    # M^-1_11 = D1^-1 + X S^-1 X^T
    mUU = 1.0 / dU - (mUW * xUL + mUE * xUR)
    mLL = 1.0 / dL - (mLW * xLL + mLE * xLR)
    mUL = -(mUW * xLL + mUE * xLR)
    return mUU, mLL, i11, i22, mUL, i12, mUW, mUE, mLW, mLE


@njit(cache=True)
def _corner_minv(rxx, ryy, rxy, alive, el, lab, gb_res, a, b):
    """Entries (UU, LL, WW, EE, UL, WE, UW, UE, LW, LE) of M'^-1 of grid corner (a, b), 0 <= a <= ny,
    0 <= b <= nx, which joins voxels UL = (a-1, b-1), UR = (a-1, b), LL = (a, b-1), LR = (a, b)
    (outside the grid: nothing). Faces U = UL|UR, L = LL|LR, W = UL|LL, E = UR|LR; closed faces give
    zero rows/columns. The last value is False when every face of the corner is closed.

    Written without short-circuit ``and``/``or`` on array values (clamped indices, bitwise logic):
    numba compiles those to far slower code."""
    ny, nx = rxx.shape
    i0, i1, j0, j1 = max(a - 1, 0), min(a, ny - 1), max(b - 1, 0), min(b, nx - 1)
    vi0, vi1, vj0, vj1 = a >= 1, a < ny, b >= 1, b < nx
    vUL = alive[i0, j0] & vi0 & vj0
    vUR = alive[i0, j1] & vi0 & vj1
    vLL = alive[i1, j0] & vi1 & vj0
    vLR = alive[i1, j1] & vi1 & vj1
    eUL, eUR, eLL, eLR = el[i0, j0], el[i0, j1], el[i1, j0], el[i1, j1]
    oU = vUL & vUR & (not (eUL & eUR))
    oL = vLL & vLR & (not (eLL & eLR))
    oW = vUL & vLL & (not (eUL & eLL))
    oE = vUR & vLR & (not (eUR & eLR))
    if not (oU | oL | oW | oE):
        return 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, False
    lUL, lUR, lLL, lLR = lab[i0, j0], lab[i0, j1], lab[i1, j0], lab[i1, j1]
    gU = gb_res if ((lUL > 0) & (lUR > 0) & (lUL != lUR)) else 0.0
    gL = gb_res if ((lLL > 0) & (lLR > 0) & (lLL != lLR)) else 0.0
    gW = gb_res if ((lUL > 0) & (lLL > 0) & (lUL != lLL)) else 0.0
    gE = gb_res if ((lUR > 0) & (lLR > 0) & (lUR != lLR)) else 0.0
    xUL_, xUR_, xLL_, xLR_ = rxx[i0, j0], rxx[i0, j1], rxx[i1, j0], rxx[i1, j1]
    yUL, yUR, yLL, yLR = ryy[i0, j0], ryy[i0, j1], ryy[i1, j0], ryy[i1, j1]
    dU = xUL_ + xUR_ + gU if oU else 1.0
    dL = xLL_ + xLR_ + gL if oL else 1.0
    dW = yUL + yLL + gW if oW else 1.0
    dE = yUR + yLR + gE if oE else 1.0
    aUL = rxy[i0, j0] if (oU & oW) else 0.0
    aUR = rxy[i0, j1] if (oU & oE) else 0.0
    aLL = rxy[i1, j0] if (oL & oW) else 0.0
    aLR = rxy[i1, j1] if (oL & oE) else 0.0
    mUU, mLL, i11, i22, mUL, i12, mUW, mUE, mLW, mLE = _block_inverse(dU, dL, dW, dE, aUL, aUR, aLL, aLR)
    fU = 1.0 if oU else 0.0
    fL = 1.0 if oL else 0.0
    fW = 1.0 if oW else 0.0
    fE = 1.0 if oE else 0.0
    return (mUU * fU, mLL * fL, i11 * fW, i22 * fE, mUL * fU * fL, i12 * fW * fE, mUW * fU * fW,
            mUE * fU * fE, mLW * fL * fW, mLE * fL * fE, True)


@njit(cache=True)
def _uniform(rxx, ryy, rxy, alive, el, lab, a, b):
    """Corner (a, b) lies inside one material: its four voxels exist, conduct, are no electrode, have
    one label (no GB) and equal tensors. Its M'^-1 is then a function of (rxx, ryy, rxy) alone.
    (Bitwise logic, no short-circuit on array values: see :func:`_corner_minv`.)"""
    ny, nx = rxx.shape
    if a < 1 or b < 1 or a >= ny or b >= nx:
        return False
    i0, j0 = a - 1, b - 1
    ok = alive[i0, j0] & alive[i0, b] & alive[a, j0] & alive[a, b]
    ok &= not (el[i0, j0] | el[i0, b] | el[a, j0] | el[a, b])
    l0 = lab[i0, j0]
    ok &= (lab[i0, b] == l0) & (lab[a, j0] == l0) & (lab[a, b] == l0)
    r0, r1, r2 = rxx[i0, j0], ryy[i0, j0], rxy[i0, j0]
    ok &= (rxx[i0, b] == r0) & (rxx[a, j0] == r0) & (rxx[a, b] == r0)
    ok &= (ryy[i0, b] == r1) & (ryy[a, j0] == r1) & (ryy[a, b] == r1)
    ok &= (rxy[i0, b] == r2) & (rxy[a, j0] == r2) & (rxy[a, b] == r2)
    return ok


def _blocks(n_rows: int) -> int:
    """Number of row blocks of the compiled corner loops (any number gives the same sums)."""
    return max(1, min(n_rows, 64))


@njit(cache=True)
def _corner_weights(rxx, ryy, rxy, alive, el, lab, gb_res, t, a, b):
    """Couplings t g1^T M'^-1 g2 that corner (a, b) adds: C of UL, UR, LL, LR; E of UL, LL; S of UL,
    UR; SE of UL; SW of UR. The last value is False when every face of the corner is closed."""
    UU, LL, WW, EE, UL, WE, UW, UE, LW, LE, live = _corner_minv(rxx, ryy, rxy, alive, el, lab, gb_res, a, b)
    return (t * (UU + 2.0 * UW + WW), t * (UU - 2.0 * UE + EE), t * (LL - 2.0 * LW + WW),
            t * (LL + 2.0 * LE + EE), t * (-UU + UE - UW + WE), t * (-LL - LE + LW + WE),
            t * (UL - UW + LW - WW), t * (UL + UE - LE - EE), t * (-UL - UE - LW - WE),
            t * (-UL + UW + LE - WE), live)


@njit(cache=True)
def _assemble_row(C, E, Sd, SE, SW, rxx, ryy, rxy, alive, el, lab, gb_res, t, a, do_up, do_lo):
    """Add corner row a's couplings to voxel row a-1 (``do_up``) and/or row a (``do_lo``)."""
    ny, nx = rxx.shape
    up, lo = a - 1, a
    do_up = do_up and up >= 0
    do_lo = do_lo and lo < ny
    # a corner inside one material adds what the last such corner with the same tensor added
    key0, key1, key2 = np.nan, np.nan, np.nan
    cache = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, False)
    for b in range(nx + 1):
        if _uniform(rxx, ryy, rxy, alive, el, lab, a, b):
            r0, r1, r2 = rxx[a, b], ryy[a, b], rxy[a, b]
            if not ((r0 == key0) & (r1 == key1) & (r2 == key2)):
                cache = _corner_weights(rxx, ryy, rxy, alive, el, lab, gb_res, t, a, b)
                key0, key1, key2 = r0, r1, r2
            cUL, cUR, cLL, cLR, eUL, eLL, sUL, sUR, se, sw, live = cache
            le, ri = b - 1, b              # a uniform corner has all four voxels: no edge tests
            if do_up:
                C[up, le] += cUL
                E[up, le] += eUL
                Sd[up, le] += sUL
                SE[up, le] += se
                C[up, ri] += cUR
                Sd[up, ri] += sUR
                SW[up, ri] += sw
            if do_lo:
                C[lo, le] += cLL
                E[lo, le] += eLL
                C[lo, ri] += cLR
            continue
        cUL, cUR, cLL, cLR, eUL, eLL, sUL, sUR, se, sw, live = _corner_weights(rxx, ryy, rxy, alive, el,
                                                                               lab, gb_res, t, a, b)
        if not live:
            continue
        le, ri = b - 1, b
        if do_up:
            if le >= 0:
                C[up, le] += cUL
                E[up, le] += eUL
                Sd[up, le] += sUL
                SE[up, le] += se
            if ri < nx:
                C[up, ri] += cUR
                Sd[up, ri] += sUR
                SW[up, ri] += sw
        if do_lo:
            if le >= 0:
                C[lo, le] += cLL
                E[lo, le] += eLL
            if ri < nx:
                C[lo, ri] += cLR


@njit(cache=True, parallel=True)
def _assemble_full(rxx, ryy, rxy, alive, el, lab, gb_res, t, nblocks, C, E, Sd, SE, SW):
    """Corner-by-corner MFMFE assembly: C and forward couplings E (0,1), S (1,0), SE (1,1), SW (1,-1)
    on the (ny, nx) grid; A[c1, c2] = t g1^T M'^-1 g2 with g(UL) = U + W, g(UR) = -U + E,
    g(LL) = L - W, g(LR) = -L - E (components on the corner's faces).

    Corner row a (0..ny) writes voxel rows a-1 and a. Blocks of corner rows run in parallel, each in
    order; the first row of a block adds to the row above only afterwards (serially), once the
    block before has finished: every sum is then made in the order of a plain corner-by-corner loop,
    whatever the number of threads or blocks. Adds into the (zeroed) outputs C, E, Sd, SE, SW: arrays
    from numpy (which asks for huge pages) fault in ~3x faster than numba's own allocations."""
    ny, nx = rxx.shape
    nr = ny + 1
    for k in prange(nblocks):
        a0, a1 = k * nr // nblocks, (k + 1) * nr // nblocks
        for a in range(a0, a1):
            _assemble_row(C, E, Sd, SE, SW, rxx, ryy, rxy, alive, el, lab, gb_res, t, a, a != a0 or k == 0, True)
    for k in range(1, nblocks):
        _assemble_row(C, E, Sd, SE, SW, rxx, ryy, rxy, alive, el, lab, gb_res, t, k * nr // nblocks, True, False)


@njit(cache=True)
def _corner_fluxes(minv, k, pUL, pUR, pLL, pLR):
    """Half-face fluxes (U, L, W, E) of a corner, k M'^-1 G^T phi, from its :func:`_corner_minv` and
    the potentials of its four voxels."""
    UU, LL, WW, EE, UL, WE, UW, UE, LW, LE, _ = minv
    dU, dL, dW, dE = pUL - pUR, pLL - pLR, pUL - pLL, pUR - pLR
    return (k * (UU * dU + UL * dL + UW * dW + UE * dE), k * (UL * dU + LL * dL + LW * dW + LE * dE),
            k * (UW * dU + LW * dL + WW * dW + WE * dE), k * (UE * dU + LE * dL + WE * dW + EE * dE))


@njit(cache=True)
def _fluxes_row(jx, jy, fxf, fyf, rxx, ryy, rxy, alive, el, lab, gb_res, phi, k, a, do_up, do_lo):
    """Add corner row a's half-face fluxes to voxel row a-1 (``do_up``) and/or row a (``do_lo``)."""
    ny, nx = phi.shape
    up, lo = a - 1, a
    do_up = do_up and up >= 0
    do_lo = do_lo and lo < ny
    inner = up >= 0 and lo < ny
    # corners inside one material repeat the M'^-1 of the corner before: computed once per run
    key0, key1, key2 = np.nan, np.nan, np.nan
    cache = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, False)
    for b in range(nx + 1):
        if _uniform(rxx, ryy, rxy, alive, el, lab, a, b):
            r0, r1, r2 = rxx[a, b], ryy[a, b], rxy[a, b]
            if not ((r0 == key0) & (r1 == key1) & (r2 == key2)):
                cache = _corner_minv(rxx, ryy, rxy, alive, el, lab, gb_res, a, b)
                key0, key1, key2 = r0, r1, r2
            le, ri = b - 1, b              # a uniform corner has all four voxels: no edge tests
            fU, fL, fW, fE = _corner_fluxes(cache, k, _live(phi[up, le], alive[up, le]),
                                            _live(phi[up, ri], alive[up, ri]), _live(phi[lo, le], alive[lo, le]),
                                            _live(phi[lo, ri], alive[lo, ri]))
            if do_up:
                jx[up, le] += fU
                jx[up, ri] += fU
                jy[up, le] += fW
                jy[up, ri] += fE
                fxf[up, le] += 0.5 * fU
                fyf[up, le] += 0.5 * fW
                fyf[up, ri] += 0.5 * fE
            if do_lo:
                jx[lo, le] += fL
                jx[lo, ri] += fL
                jy[lo, le] += fW
                jy[lo, ri] += fE
                fxf[lo, le] += 0.5 * fL
            continue
        minv = _corner_minv(rxx, ryy, rxy, alive, el, lab, gb_res, a, b)
        if not minv[10]:                   # every face of the corner is closed
            continue
        le, ri = b - 1, b
        pUL = _live(phi[up, le], alive[up, le]) if (up >= 0 and le >= 0) else 0.0
        pUR = _live(phi[up, ri], alive[up, ri]) if (up >= 0 and ri < nx) else 0.0
        pLL = _live(phi[lo, le], alive[lo, le]) if (lo < ny and le >= 0) else 0.0
        pLR = _live(phi[lo, ri], alive[lo, ri]) if (lo < ny and ri < nx) else 0.0
        fU, fL, fW, fE = _corner_fluxes(minv, k, pUL, pUR, pLL, pLR)
        # closed faces carry exactly zero flux: only faces between voxels of the grid are added
        if do_up and le >= 0 and ri < nx:
            jx[up, le] += fU
            jx[up, ri] += fU
        if do_lo and le >= 0 and ri < nx:
            jx[lo, le] += fL
            jx[lo, ri] += fL
        if inner and le >= 0:
            if do_up:
                jy[up, le] += fW
            if do_lo:
                jy[lo, le] += fW
        if inner and ri < nx:
            if do_up:
                jy[up, ri] += fE
            if do_lo:
                jy[lo, ri] += fE
        if do_up and le >= 0 and ri < nx:
            fxf[up, le] += 0.5 * fU
        if do_lo and le >= 0 and ri < nx:
            fxf[lo, le] += 0.5 * fL
        if do_up and lo < ny:
            if le >= 0:
                fyf[up, le] += 0.5 * fW
            if ri < nx:
                fyf[up, ri] += 0.5 * fE


@njit(cache=True, parallel=True)
def _fluxes_full(rxx, ryy, rxy, alive, el, lab, gb_res, phi, k, nblocks, jx, jy, fxf, fyf):
    """Half-face fluxes f = k M'^-1 G^T phi of every corner, accumulated as in :func:`fluxes`
    (phi read through :func:`_live`: 0 where nothing conducts), added into zeroed jx, jy (ny, nx; sums of 4 corner fluxes),
    fx (ny, nx-1), fy (ny-1, nx). Parallel blocks of corner rows, sums in loop order (see :func:`_assemble_full`)."""
    ny, nx = phi.shape
    nr = ny + 1
    for kb in prange(nblocks):
        a0, a1 = kb * nr // nblocks, (kb + 1) * nr // nblocks
        for a in range(a0, a1):
            _fluxes_row(jx, jy, fxf, fyf, rxx, ryy, rxy, alive, el, lab, gb_res, phi, k, a, a != a0 or kb == 0,
                        True)
    for kb in range(1, nblocks):
        _fluxes_row(jx, jy, fxf, fyf, rxx, ryy, rxy, alive, el, lab, gb_res, phi, k, kb * nr // nblocks, True,
                    False)


@njit(cache=True, parallel=True)
def _assemble_5(rxx, ryy, alive, el, lab, gb_res, two_t, C, E, S):
    """Diagonal tensors, compiled: face conductances G = 2t / (rho_p + rho_q + [GB] 2 r_GB/h) of every
    open face (G = 1 / (h/(2 s_p A) + h/(2 s_q A) + [GB] t_GB/(s_GB A)), A = h t), returned as the 5-point stencil
    C, E (0,1) = -Gx, S (1,0) = -Gy (ny, nx), written into C and the zeroed E, S."""
    ny, nx = rxx.shape
    for i in prange(ny):
        for j in range(nx):
            if j + 1 < nx:
                g = 0.0
                if alive[i, j] & alive[i, j + 1] & (not (el[i, j] & el[i, j + 1])):
                    l1, l2 = lab[i, j], lab[i, j + 1]
                    g = two_t / (rxx[i, j] + rxx[i, j + 1] + (gb_res if ((l1 > 0) & (l2 > 0) & (l1 != l2)) else 0.0))
                E[i, j] = -g
            if i + 1 < ny:
                g = 0.0
                if alive[i, j] & alive[i + 1, j] & (not (el[i, j] & el[i + 1, j])):
                    l1, l2 = lab[i, j], lab[i + 1, j]
                    g = two_t / (ryy[i, j] + ryy[i + 1, j] + (gb_res if ((l1 > 0) & (l2 > 0) & (l1 != l2)) else 0.0))
                S[i, j] = -g
    for i in prange(ny):
        for j in range(nx):
            c = 0.0            # sum order: east, west, south, north (tests/network_oracles.py)
            if j + 1 < nx:
                c += -E[i, j]
            if j > 0:
                c += -E[i, j - 1]
            if i + 1 < ny:
                c += -S[i, j]
            if i > 0:
                c += -S[i - 1, j]
            C[i, j] = c


@njit(cache=True)
def _live(p, alive):
    """phi where a voxel conducts (NaN -> 0, +-inf -> +-max float, as np.nan_to_num), else 0."""
    if not alive:
        return 0.0
    if np.isnan(p):
        return 0.0
    if np.isinf(p):
        return 1.7976931348623157e308 if p > 0 else -1.7976931348623157e308
    return p


@njit(cache=True, parallel=True)
def _fluxes_5(E, S, phi, alive, area, jx, jy, fx, fy):
    """Diagonal tensors, compiled: face current densities fx = Gx (phi_l - phi_r) / area (Gx = -E),
    fy likewise, and voxel means jx, jy (each the mean of its two faces along the axis)."""
    ny, nx = phi.shape
    for i in prange(ny):
        for j in range(nx):
            p = _live(phi[i, j], alive[i, j])
            if j + 1 < nx:
                fx[i, j] = -E[i, j] * (p - _live(phi[i, j + 1], alive[i, j + 1])) / area
            if i + 1 < ny:
                fy[i, j] = -S[i, j] * (p - _live(phi[i + 1, j], alive[i + 1, j])) / area
    for i in prange(ny):
        for j in range(nx):
            sx = 0.0
            if j + 1 < nx:
                sx += fx[i, j]
            if j > 0:
                sx += fx[i, j - 1]
            jx[i, j] = sx / 2.0
            sy = 0.0
            if i + 1 < ny:
                sy += fy[i, j]
            if i > 0:
                sy += fy[i - 1, j]
            jy[i, j] = sy / 2.0


def assemble(v: Voxels, m: Microstructure) -> dict:
    """Stencil coefficients of A = t G M'^-1 G^T on the (ny, nx) grid.

    Diagonal tensors everywhere (the paper's model) reduce the scheme to the 5-point network, which
    is assembled face by face; otherwise corner by corner (9-point).

    Returns
    -------
    dict
        ``"C"`` (centre) and, for each forward offset (dy, dx) in :data:`FORWARD`, the coupling
        coefficient between voxel (i, j) and (i+dy, j+dx), stored at (i, j). Units S.
        Offsets whose coefficients are all zero are omitted (the diagonal model is 5-point).

    Example
    -------
    >>> st = assemble(voxel_properties(m, "paper"), m)    # doctest: +SKIP
    >>> sorted(map(str, st))                              # doctest: +SKIP
    ['(0, 1)', '(1, 0)', 'C']
    """
    if not np.any(v.rxy):
        return _assemble_five(v, m)
    return _assemble_corners(v, m)


def _gb_resistance(m: Microstructure) -> float:
    """2 r_GB / h (Ohm m): the GB resistor of a face as a resistivity over half a voxel on each side."""
    return 2.0 * (m.gb_thickness_m / (m.sigma_ip / m.gb_ratio)) / m.voxel_size_m


def _assemble_five(v: Voxels, m: Microstructure) -> dict:
    """The 5-point network of diagonal tensors, face by face (``v.rxy`` is ignored)."""
    el = v.electrode >= 0
    C, Ex, Sy = np.empty(el.shape), np.zeros(el.shape), np.zeros(el.shape)
    _assemble_5(v.rxx, v.ryy, v.conducting | el, el, v.label, _gb_resistance(m), 2.0 * m.thickness_m, C, Ex, Sy)
    return {"C": C, (0, 1): Ex, (1, 0): Sy}


def _assemble_corners(v: Voxels, m: Microstructure) -> dict:
    """The corner-by-corner MFMFE assembly (any tensors; 5-point in effect for diagonal ones)."""
    el = v.electrode >= 0
    C, E, Sd, SE, SW = (np.zeros(el.shape) for _ in range(5))
    _assemble_full(v.rxx, v.ryy, v.rxy, v.conducting | el, el, v.label, _gb_resistance(m), float(m.thickness_m),
                   _blocks(el.shape[0] + 1), C, E, Sd, SE, SW)
    out = {"C": C}
    for o, arr in zip(FORWARD, (E, Sd, SE, SW)):
        if np.any(arr != 0.0):
            out[o] = arr
    return out


def fluxes(v: Voxels, m: Microstructure, phi, stencil: dict | None = None, out: np.ndarray | None = None) -> dict:
    """Current densities from a potential map (V; any value where nothing conducts).

    Parameters
    ----------
    stencil : dict, optional
        ``assemble(v, m)`` of these same voxels, if already computed: the diagonal model then reads
        its face conductances from it instead of recomputing them.
    out : ndarray (ny, nx, 2), optional
        Where to write (jx, jy) (``jx``, ``jy`` are then views of it; its contents are overwritten).
        Default: a new array.

    Returns
    -------
    dict
        ``jx``, ``jy`` (ny, nx): voxel current density, A/m^2 (mean of the voxel's corner fluxes);
        ``fx`` (ny, nx-1): normal current density through x-faces (i,j)|(i,j+1), positive along +x;
        ``fy`` (ny-1, nx): through y-faces (i,j)|(i+1,j), positive along +y (down).

    Example
    -------
    >>> fl = fluxes(v, m, simulate(m, {"top": 0, "right": 1}).potential)    # doctest: +SKIP
    """
    if not np.any(v.rxy):
        if stencil is None or set(stencil) != {"C", (0, 1), (1, 0)}:
            stencil = _assemble_five(v, m)
        el = v.electrode >= 0
        ny, nx = el.shape
        J = np.empty((ny, nx, 2)) if out is None else out
        jx, jy, fx, fy = J[..., 0], J[..., 1], np.empty((ny, nx - 1)), np.empty((ny - 1, nx))
        _fluxes_5(stencil[(0, 1)], stencil[(1, 0)], np.asarray(phi, dtype=float), v.conducting | el,
                  m.voxel_size_m * m.thickness_m, jx, jy, fx, fy)
        return dict(jx=jx, jy=jy, fx=fx, fy=fy)
    return _fluxes_corners(v, m, phi, out)


def _fluxes_corners(v: Voxels, m: Microstructure, phi, out: np.ndarray | None = None) -> dict:
    """:func:`fluxes` from the corner scheme's half-face fluxes (any tensors)."""
    el = v.electrode >= 0
    ny, nx = el.shape
    if out is None:
        J = np.zeros((ny, nx, 2))
    else:
        J = out
        J.fill(0.0)
    jx, jy, fx, fy = J[..., 0], J[..., 1], np.zeros((ny, nx - 1)), np.zeros((ny - 1, nx))
    _fluxes_full(v.rxx, v.ryy, v.rxy, v.conducting | el, el, v.label, _gb_resistance(m), np.asarray(phi, dtype=float),
                 2.0 / m.voxel_size_m, _blocks(ny + 1), jx, jy, fx, fy)
    J /= 4.0
    return dict(jx=jx, jy=jy, fx=fx, fy=fy)


def apply(stencil: dict, x) -> np.ndarray:
    """A x on the grid (x: (ny, nx), zeros where there is no voxel): net current out of each voxel (A)."""
    y = stencil["C"] * x
    ny, nx = x.shape
    for key, c in stencil.items():
        if key == "C":
            continue
        dy, dx = key
        # forward coupling c[i, j] between (i, j) and (i+dy, j+dx)
        ys = slice(0, ny - dy)
        yd = slice(dy, ny)
        if dx >= 0:
            xs, xd = slice(0, nx - dx), slice(dx, nx)
        else:
            xs, xd = slice(-dx, nx), slice(0, nx + dx)
        cc = c[ys, xs]
        y[ys, xs] += cc * x[yd, xd]
        y[yd, xd] += cc * x[ys, xs]
    return y


@njit(cache=True)
def _reached(alive, seed, out, stack):
    """Voxels of ``alive`` 4-connected (within ``alive``) to a voxel of ``seed`` (seed is part of alive)."""
    ny, nx = alive.shape
    top = 0
    for i in range(ny):
        for j in range(nx):
            if seed[i, j] & alive[i, j] & (not out[i, j]):
                out[i, j] = True
                stack[top] = i * nx + j
                top += 1
    while top > 0:
        top -= 1
        p = stack[top]
        i, j = p // nx, p % nx
        if i > 0 and (alive[i - 1, j] & (not out[i - 1, j])):
            out[i - 1, j] = True
            stack[top] = p - nx
            top += 1
        if i + 1 < ny and (alive[i + 1, j] & (not out[i + 1, j])):
            out[i + 1, j] = True
            stack[top] = p + nx
            top += 1
        if j > 0 and (alive[i, j - 1] & (not out[i, j - 1])):
            out[i, j - 1] = True
            stack[top] = p - 1
            top += 1
        if j + 1 < nx and (alive[i, j + 1] & (not out[i, j + 1])):
            out[i, j + 1] = True
            stack[top] = p + 1
            top += 1


@njit(cache=True, parallel=True)
def _potential_maps(x, conducting, el, fixed, phi, phi0):
    ny, nx = x.shape
    for i in prange(ny):
        for j in range(nx):
            p = x[i, j] if conducting[i, j] else (fixed[i, j] if el[i, j] else np.nan)
            phi[i, j] = p
            phi0[i, j] = _live(p, conducting[i, j] | el[i, j])


def potential_maps(x, conducting, el, fixed):
    """Potential map (V) from a grid solution: ``x`` on conducting voxels, ``fixed`` on electrodes,
    NaN elsewhere; and the same with 0 where nothing conducts (NaN read as 0, +-inf as +-max float,
    as ``np.nan_to_num``).

    Returns
    -------
    phi, phi0 : ndarray (ny, nx)

    Example
    -------
    >>> phi, phi0 = potential_maps(np.ones((1, 3)), np.array([[1, 0, 0]], bool),
    ...                            np.array([[0, 1, 0]], bool), np.full((1, 3), 2.0))
    >>> phi0
    array([[1., 2., 0.]])
    """
    x = np.asarray(x, dtype=float)
    phi, phi0 = np.empty(x.shape), np.empty(x.shape)
    _potential_maps(x, np.asarray(conducting, bool), np.asarray(el, bool), np.asarray(fixed, dtype=float), phi, phi0)
    return phi, phi0


def connected_to(alive, seed) -> np.ndarray:
    """Voxels of ``alive`` joined to a voxel of ``seed`` by a path of 4-neighbours in ``alive``.

    Parameters
    ----------
    alive, seed : ndarray of bool, shape (ny, nx)

    Returns
    -------
    ndarray of bool
        Compiled flood fill; equals the union of the ``scipy.ndimage.label`` components of ``alive``
        that hold a seed voxel.

    Example
    -------
    >>> connected_to(np.array([[1, 1, 0, 1]], bool), np.array([[1, 0, 0, 0]], bool))
    array([[ True,  True, False, False]])
    """
    alive = np.ascontiguousarray(alive, dtype=bool)
    out = np.zeros(alive.shape, bool)
    _reached(alive, np.ascontiguousarray(seed, dtype=bool) & alive, out, np.empty(alive.size, np.int64))
    return out


@njit(cache=True, parallel=True)
def _current_and_field(jx, jy, conducting, el, rxx, ryy, rxy, j, E):
    ny, nx = jx.shape
    for i in prange(ny):
        for k in range(nx):
            c, e = conducting[i, k], el[i, k]
            a = jx[i, k] if (c | e) else 0.0
            b = jy[i, k] if (c | e) else 0.0
            j[i, k, 0] = a
            j[i, k, 1] = b
            if e:
                E[i, k, 0] = 0.0
                E[i, k, 1] = 0.0
            elif c:
                E[i, k, 0] = rxx[i, k] * a + rxy[i, k] * b
                E[i, k, 1] = rxy[i, k] * a + ryy[i, k] * b
            else:
                E[i, k, 0] = np.nan
                E[i, k, 1] = np.nan


@njit(cache=True)
def _one_side(phi, conducting, el, label, lab, p0, y, x, step, h):
    """(p0 - phi[y, x]) * step / d and 1 if the neighbour (y, x) is usable (same material, no GB
    resistor between; d = h/2 to an electrode, whose potential holds at the shared face), else 0, 0."""
    ny, nx = phi.shape
    if y < 0 or y >= ny or x < 0 or x >= nx:
        return 0.0, 0
    if el[y, x]:
        return (phi[y, x] - p0) * step / (0.5 * h), 1
    if conducting[y, x] and label[y, x] == lab:
        return (phi[y, x] - p0) * step / h, 1
    return 0.0, 0


@njit(cache=True, parallel=True)
def _field_from_potential(phi, conducting, el, label, h, E):
    """E = -grad phi: the mean of the usable one-sided face differences along each axis."""
    ny, nx = phi.shape
    for i in prange(ny):
        for k in range(nx):
            if not conducting[i, k]:
                continue
            lab = label[i, k]
            p0 = phi[i, k]
            a, na = _one_side(phi, conducting, el, label, lab, p0, i, k - 1, -1.0, h)
            b, nb = _one_side(phi, conducting, el, label, lab, p0, i, k + 1, 1.0, h)
            if na + nb:
                E[i, k, 0] = -(a + b) / (na + nb)
            a, na = _one_side(phi, conducting, el, label, lab, p0, i - 1, k, -1.0, h)
            b, nb = _one_side(phi, conducting, el, label, lab, p0, i + 1, k, 1.0, h)
            if na + nb:
                E[i, k, 1] = -(a + b) / (na + nb)


def current_and_field(v: Voxels, fl: dict, out: np.ndarray | None = None, phi=None, h: float | None = None):
    """Current density and field maps from :func:`fluxes` output (compiled, whole grid).

    ``out`` (ny, nx, 2): where to write j; it may be the ``out`` given to :func:`fluxes` (j is then
    made in place from the jx, jy stored there).

    With ``phi`` (potential, V, finite where anything conducts) and ``h`` (voxel edge, m), E is
    -grad phi from face potential differences inside each grain or the backbone (the mean of the
    one-sided differences on either side of a voxel, one-sided at GBs, half a voxel to an electrode;
    blind to the 9-point scheme's odd-even mode, which rho j amplifies by up to the anisotropy);
    a component with no usable face keeps rho j.

    Returns
    -------
    j : ndarray (ny, nx, 2)
        (jx, jy), A/m^2; 0 where nothing conducts.
    E : ndarray (ny, nx, 2)
        V/m in conducting voxels (rho j, or -grad phi with ``phi``), 0 in electrodes, NaN where
        nothing conducts.

    Example
    -------
    >>> j, E = current_and_field(v, fluxes(v, m, phi))   # doctest: +SKIP
    """
    j = np.empty(fl["jx"].shape + (2,)) if out is None else out
    E = np.empty(fl["jx"].shape + (2,))
    _current_and_field(fl["jx"], fl["jy"], v.conducting, v.electrode >= 0, v.rxx, v.ryy, v.rxy, j, E)
    if phi is not None:
        _field_from_potential(np.asarray(phi, float), v.conducting, v.electrode >= 0, v.label, float(h), E)
    return j, E


def electrode_currents(stencil: dict, x, electrode, names) -> dict:
    """Net current (A) out of each electrode, ``sum of (A x)`` over its voxels.

    :func:`apply` on a window around each electrode only (one voxel of margin: the same sums as on
    the whole grid). ``electrode``: int map of electrode indices (-1 elsewhere), ``names`` by index.
    """
    ny, nx = x.shape
    out = {}
    for i, name in enumerate(names):
        mask = electrode == i
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            out[name] = 0.0
            continue
        ys = slice(max(rows[0] - 1, 0), min(rows[-1] + 2, ny))
        xs = slice(max(cols[0] - 1, 0), min(cols[-1] + 2, nx))
        y = apply({k: c[ys, xs] for k, c in stencil.items()}, x[ys, xs])
        out[name] = float(y[mask[ys, xs]].sum())
    return out
