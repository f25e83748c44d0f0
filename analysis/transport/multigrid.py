"""Structured ("black-box") multigrid for the voxel-grid systems, used as a CG preconditioner.

The operator lives on the voxel grid as a 9-point stencil ``S[k, i, j]`` (k over
:data:`insitu.analysis.transport.solver.ALL_OFFSETS`); voxels that are not unknowns get identity rows, so the
grid stays rectangular on every level. Ingredients (after Dendy, J. Comput. Phys. 48, 1982):

* operator-dependent interpolation from the stencil (collapsed along lines), so that jumps in
  conductivity, GB resistors, holes (ZrO2, vacuum) and electrodes are seen by the coarse grids;
* Galerkin coarse operators P^T A P (9-point on every level);
* alternating line Gauss-Seidel smoothing (x-lines, then y-lines swept as the x-lines of a
  transposed copy of the level, whose rows are contiguous; reversed afterwards, so the V-cycle is
  symmetric), robust for the strong grid-aligned anisotropy of the grains;
* the float32 V-cycle preconditions conjugate gradients in float64.

The kernels are compiled with numba (cached on disk after the first run) and spread over the cores
(rows, row bands, tiles or row blocks; see each kernel). The sweeps are one fixed
Gauss-Seidel order whatever the thread count; only the summation order of the dot products
depends on it (rounding). Grids under :data:`PARALLEL_MIN_VOXELS` run on one thread.
"""
from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp
from numba import njit, prange

# ALL_OFFSETS order: 0 (-1,-1) 1 (-1,0) 2 (-1,1) 3 (0,-1) 4 (0,0) 5 (0,1) 6 (1,-1) 7 (1,0) 8 (1,1)
_DY = np.array([-1, -1, -1, 0, 0, 0, 1, 1, 1])
_DX = np.array([-1, 0, 1, -1, 0, 1, -1, 0, 1])


# ---------------------------------------------------------------------------------------------
# Kernels. Rows (or blocks of rows, or chunks of columns) are spread over the cores with prange;
# the loop bodies are single fused passes (fewest memory sweeps).
# ---------------------------------------------------------------------------------------------

@njit(cache=True)
def _apply_row(S, x, y, i, five):
    """y[i, :] = (S x)[i, :]."""
    ny, nx = x.shape
    for j in range(nx):
        s = S[4, i, j] * x[i, j]
        if j > 0:
            s += S[3, i, j] * x[i, j - 1]
        if j < nx - 1:
            s += S[5, i, j] * x[i, j + 1]
        if i > 0:
            s += S[1, i, j] * x[i - 1, j]
            if not five:
                if j > 0:
                    s += S[0, i, j] * x[i - 1, j - 1]
                if j < nx - 1:
                    s += S[2, i, j] * x[i - 1, j + 1]
        if i < ny - 1:
            s += S[7, i, j] * x[i + 1, j]
            if not five:
                if j > 0:
                    s += S[6, i, j] * x[i + 1, j - 1]
                if j < nx - 1:
                    s += S[8, i, j] * x[i + 1, j + 1]
        y[i, j] = s


@njit(cache=True, parallel=True)
def _apply_dot(S, x, y, five):
    """y = S x; returns x . y (one pass)."""
    ny, nx = x.shape
    s = 0.0
    for i in prange(ny):
        _apply_row(S, x, y, i, five)
        t = 0.0
        for j in range(nx):
            t += x[i, j] * y[i, j]
        s += t
    return s


@njit(cache=True, parallel=True)
def _residual(L, x, b, r, five):
    """r = b - S x (one pass) for a symmetric S given by its lower planes ``L`` (5, ny, nx): the
    couplings of (i, j) to the next row and column are those rows' and columns' lower planes
    (S[5, i, j] = L[3, i, j+1], S[6, i, j] = L[2, i+1, j-1], S[7, i, j] = L[1, i+1, j],
    S[8, i, j] = L[0, i+1, j+1])."""
    ny, nx = x.shape
    for i in prange(ny):
        for j in range(nx):
            s = L[4, i, j] * x[i, j]
            if j > 0:
                s += L[3, i, j] * x[i, j - 1]
            if j < nx - 1:
                s += L[3, i, j + 1] * x[i, j + 1]
            if i > 0:
                s += L[1, i, j] * x[i - 1, j]
                if not five:
                    if j > 0:
                        s += L[0, i, j] * x[i - 1, j - 1]
                    if j < nx - 1:
                        s += L[2, i, j] * x[i - 1, j + 1]
            if i < ny - 1:
                s += L[1, i + 1, j] * x[i + 1, j]
                if not five:
                    if j > 0:
                        s += L[2, i + 1, j - 1] * x[i + 1, j - 1]
                    if j < nx - 1:
                        s += L[0, i + 1, j + 1] * x[i + 1, j + 1]
            r[i, j] = b[i, j] - s


@njit(cache=True, parallel=True)
def _masked_cast(a, mask, out):
    """out = mask * a, converted to out's dtype."""
    ny, nx = a.shape
    for i in prange(ny):
        for j in range(nx):
            out[i, j] = a[i, j] * mask[i, j]


@njit(cache=True, parallel=True)
def _masked_cast_dot(a, mask, out, r):
    """out = mask * a (out's dtype); returns r . out (one pass)."""
    ny, nx = a.shape
    s = 0.0
    for i in prange(ny):
        t = 0.0
        for j in range(nx):
            out[i, j] = a[i, j] * mask[i, j]
            t += r[i, j] * out[i, j]
        s += t
    return s


@njit(cache=True, parallel=True)
def _line_factors(S, cp, im):
    """Thomas-algorithm factors (computed in float64, stored in the outputs' dtype) of every x-line
    (row) block of S: the pivot of (i, j) is 1/im, its upper factor cp. The y-lines are the x-lines
    of the transposed level (:func:`_cast_and_transpose`)."""
    _, ny, nx = S.shape
    for i in prange(ny):
        c = 0.0
        for j in range(nx):
            m = float(S[4, i, j]) - (float(S[3, i, j]) * c if j > 0 else 0.0)
            im[i, j] = 1.0 / m
            c = float(S[3, i, j + 1]) / m if j < nx - 1 else 0.0    # S[5, i, j], by symmetry
            cp[i, j] = c


@njit(cache=True)
def _xline_rhs(S, x, b, i, five, t):
    """t = b[i, :] minus the couplings of row i to rows i-1 and i+1 (the right-hand side of its line).
    Reads the lower planes (0-3) of a symmetric S only (see :func:`_residual`)."""
    ny, nx = x.shape
    for j in range(nx):
        t[j] = b[i, j]
    if i > 0:
        for j in range(nx):
            t[j] -= S[1, i, j] * x[i - 1, j]
        if not five:
            for j in range(1, nx):
                t[j] -= S[0, i, j] * x[i - 1, j - 1]
            for j in range(nx - 1):
                t[j] -= S[2, i, j] * x[i - 1, j + 1]
    if i < ny - 1:          # by symmetry S[7, i, j] = S[1, i+1, j], S[6, i, j] = S[2, i+1, j-1], S[8, i, j] = S[0, i+1, j+1]:
        for j in range(nx):   # row i+1's planes, read again (from cache) when row i+1 is solved
            t[j] -= S[1, i + 1, j] * x[i + 1, j]
        if not five:
            for j in range(1, nx):
                t[j] -= S[2, i + 1, j - 1] * x[i + 1, j - 1]
            for j in range(nx - 1):
                t[j] -= S[0, i + 1, j + 1] * x[i + 1, j + 1]


@njit(cache=True)
def _xline(S, x, b, i, cpx, imx, five, t):
    """Solve row i of S x = b exactly for x[i, :] (the other rows held): Thomas algorithm."""
    nx = x.shape[1]
    _xline_rhs(S, x, b, i, five, t)
    p = t[0] * imx[i, 0]
    t[0] = p
    for j in range(1, nx):
        p = (t[j] - S[3, i, j] * p) * imx[i, j]
        t[j] = p
    x[i, nx - 1] = p
    for j in range(nx - 2, -1, -1):
        p = t[j] - cpx[i, j] * p
        x[i, j] = p


@njit(cache=True)
def _xline_quad(S, x, b, rows, cpx, imx, five, t):
    """:func:`_xline` for four rows that do not touch (``rows``; right-hand sides in ``t[0..3]``),
    their recurrences interleaved: each alone is bound by the latency of its own chain."""
    nx = x.shape[1]
    i1, i2, i3, i4 = rows[0], rows[1], rows[2], rows[3]
    t1, t2, t3, t4 = t[0], t[1], t[2], t[3]
    _xline_rhs(S, x, b, i1, five, t1)
    _xline_rhs(S, x, b, i2, five, t2)
    _xline_rhs(S, x, b, i3, five, t3)
    _xline_rhs(S, x, b, i4, five, t4)
    p1 = t1[0] * imx[i1, 0]
    p2 = t2[0] * imx[i2, 0]
    p3 = t3[0] * imx[i3, 0]
    p4 = t4[0] * imx[i4, 0]
    t1[0] = p1
    t2[0] = p2
    t3[0] = p3
    t4[0] = p4
    for j in range(1, nx):
        p1 = (t1[j] - S[3, i1, j] * p1) * imx[i1, j]
        p2 = (t2[j] - S[3, i2, j] * p2) * imx[i2, j]
        p3 = (t3[j] - S[3, i3, j] * p3) * imx[i3, j]
        p4 = (t4[j] - S[3, i4, j] * p4) * imx[i4, j]
        t1[j] = p1
        t2[j] = p2
        t3[j] = p3
        t4[j] = p4
    x[i1, nx - 1] = p1
    x[i2, nx - 1] = p2
    x[i3, nx - 1] = p3
    x[i4, nx - 1] = p4
    for j in range(nx - 2, -1, -1):
        p1 = t1[j] - cpx[i1, j] * p1
        p2 = t2[j] - cpx[i2, j] * p2
        p3 = t3[j] - cpx[i3, j] * p3
        p4 = t4[j] - cpx[i4, j] * p4
        x[i1, j] = p1
        x[i2, j] = p2
        x[i3, j] = p3
        x[i4, j] = p4


@njit(cache=True, parallel=True)
def _xlines(S, x, b, forward, cpx, imx, five, nblocks):
    """Line Gauss-Seidel along x (rows), in order (``forward``) or reversed (its adjoint).

    The rows are cut into ``nblocks`` bands. The rows inside the bands are swept at the same time
    (no two bands touch: the last row of each band separates it from the next), four bands per
    task with their row solves interleaved; the bands' last rows come after them (before them
    when reversed). That is exactly line Gauss-Seidel in one fixed row order, so the result does not
    depend on the threads or their timing, and the reversed sweep is the adjoint."""
    ny, nx = x.shape
    nb = max(1, min(nblocks, ny // 4))
    if not forward:
        t = np.empty(nx, x.dtype)
        for blk in range(nb - 1, -1, -1):
            _xline(S, x, b, (blk + 1) * ny // nb - 1, cpx, imx, five, t)
    for g in prange((nb + 3) // 4):
        k0, k1 = 4 * g, min(nb, 4 * g + 4)
        t = np.empty((4, nx), x.dtype)
        rows = np.empty(4, np.int64)
        n = 0                                   # inner rows of the group's longest band
        for k in range(k0, k1):
            n = max(n, (k + 1) * ny // nb - 1 - k * ny // nb)
        for ii in range(n):
            cnt = 0
            for k in range(k0, k1):
                a = k * ny // nb
                m = (k + 1) * ny // nb - 1 - a
                if ii < m:
                    rows[cnt] = a + ii if forward else a + m - 1 - ii
                    cnt += 1
            if cnt == 4:
                _xline_quad(S, x, b, rows, cpx, imx, five, t)
            else:
                for q in range(cnt):
                    _xline(S, x, b, rows[q], cpx, imx, five, t[q])
    if forward:
        t = np.empty(nx, x.dtype)
        for blk in range(nb):
            _xline(S, x, b, (blk + 1) * ny // nb - 1, cpx, imx, five, t)


#: side of the square tiles of the transposes (cache-sized blocks)
_TILE = 64
#: side of the blocks inside a tile that are transposed whole (fixed-size loops the compiler unrolls
#: into register shuffles: 2048^2 float32 in 2-3 ms, against 6-7 ms element by element)
_BLOCK = 8
#: plane of the transposed level that holds plane k: the offset (dy, dx) becomes (dx, dy)
_TPLANE = np.array([(k % 3) * 3 + k // 3 for k in range(9)])


@njit(cache=True, inline="always")
def _transpose_rows(a, out, i0, i1):
    """out[:, i0:i1] = a[i0:i1, :].T, tile by tile, in 8 x 8 blocks (``out`` in its own dtype)."""
    nx = a.shape[1]
    for j0 in range(0, nx, _TILE):
        j1 = min(nx, j0 + _TILE)
        for ib in range(i0, i1, _BLOCK):
            for jb in range(j0, j1, _BLOCK):
                if ib + _BLOCK <= i1 and jb + _BLOCK <= j1:
                    for j in range(jb, jb + _BLOCK):
                        for i in range(ib, ib + _BLOCK):
                            out[j, i] = a[i, j]
                else:
                    for j in range(jb, min(j1, jb + _BLOCK)):
                        for i in range(ib, min(i1, ib + _BLOCK)):
                            out[j, i] = a[i, j]


@njit(cache=True, parallel=True)
def _transpose(a, out):
    """out = a.T (in out's dtype), in blocks of rows."""
    ny = a.shape[0]
    for bi in prange((ny + _TILE - 1) // _TILE):
        _transpose_rows(a, out, bi * _TILE, min(ny, bi * _TILE + _TILE))


@njit(cache=True, parallel=True)
def _cast_and_transpose(S, planes, out, outT, tplane):
    """The lower planes (0-4) of S and of its transpose, cast to the outputs' dtype, in one pass
    (in blocks of rows), reading the planes of S listed in ``planes``: out[k] = S[k] for k < 5 and
    outT[tplane[k]] = S[k].T for tplane[k] < 5. ``outT`` is the stencil of the transposed grid: its
    x-lines are the y-lines of S."""
    ny = S.shape[1]
    for bi in prange((ny + _TILE - 1) // _TILE):
        i0, i1 = bi * _TILE, min(ny, bi * _TILE + _TILE)
        for k in planes:
            if k < 5:
                out[k, i0:i1] = S[k, i0:i1]
            if tplane[k] < 5:
                _transpose_rows(S[k], outT[tplane[k]], i0, i1)


@njit(cache=True, inline="always")
def _neg(S, k, i, j):
    """min(S[k, i, j], 0): the coupling as the interpolation sees it (positive ones lumped)."""
    v = S[k, i, j]
    return v if v < 0.0 else 0.0


@njit(cache=True)
def _lumped_diagonal(S, i, j):
    """S[4, i, j] plus the positive off-diagonal couplings of row (i, j) (row sum unchanged)."""
    d = S[4, i, j]
    for k in range(9):
        if k != 4 and S[k, i, j] > 0.0:
            d += S[k, i, j]
    return d


@njit(cache=True)
def _edge_weights(S, i, j, c1, c2, a0, a1, a2, b0, b1, b2):
    """Weights of the two coarse neighbours of a fine voxel on a coarse line: the stencil collapsed
    across the line (planes c1, c2 join the centre), the couplings to each side (a*, b*) summed;
    positive couplings lumped into the centre."""
    d = _lumped_diagonal(S, i, j)
    den = d + _neg(S, c1, i, j) + _neg(S, c2, i, j)
    if abs(den) <= 1e-12 * abs(d):
        den = d
    return (-(_neg(S, a0, i, j) + _neg(S, a1, i, j) + _neg(S, a2, i, j)) / den,
            -(_neg(S, b0, i, j) + _neg(S, b1, i, j) + _neg(S, b2, i, j)) / den)


@njit(cache=True, parallel=True)
def _interpolation(S, W):
    """Dendy's operator-dependent interpolation P (fine x coarse) as weights W (ny, nx, 4): slot 2a+b
    holds the weight of coarse voxel (i//2 + a, j//2 + b) for fine voxel (i, j) (0 where there is none).

    Positive off-diagonal couplings (the 9-point thin-film operator is not an M-matrix, nor are its
    Galerkin coarse levels) are lumped into the diagonal for the weights, as classical AMG does: the
    weights still sum to 1 where the row sum is 0, and the 1024^2 thin-film lamella needs 47 CG
    iterations instead of 68 (docs/simulator.md, "Solvers and speed")."""
    ny, nx = S.shape[1], S.shape[2]
    # points on coarse rows (even i): from west / east along the row, the stencil collapsed in y
    for ii in prange((ny + 1) // 2):
        i = 2 * ii
        for j in range(0, nx, 2):
            W[i, j, 0] = 1.0
        for j in range(1, nx, 2):
            w0, w1 = _edge_weights(S, i, j, 1, 7, 0, 3, 6, 2, 5, 8)
            W[i, j, 0] = w0
            if j + 1 < nx:
                W[i, j, 1] = w1
    # points on coarse columns (odd i, even j): from north / south, the stencil collapsed in x
    for ii in prange(ny // 2):
        i = 2 * ii + 1
        for j in range(0, nx, 2):
            w0, w1 = _edge_weights(S, i, j, 3, 5, 0, 1, 2, 6, 7, 8)
            W[i, j, 0] = w0
            if i + 1 < ny:
                W[i, j, 2] = w1
    # cell centres (odd i, odd j): from the four corners, through the edge points' weights
    for ii in prange(ny // 2):
        i = 2 * ii + 1
        for j in range(1, nx, 2):
            c = _lumped_diagonal(S, i, j)
            for sy in range(2):
                ic = i - 1 + 2 * sy
                if ic >= ny:
                    continue
                for sx in range(2):
                    jc = j - 1 + 2 * sx
                    if jc >= nx:
                        continue
                    w = _neg(S, (0 if sy == 0 else 6) + (0 if sx == 0 else 2), i, j)
                    # edge neighbour (ic, j) takes weight W[ic, j, sx] from (ic, jc); (i, jc) W[i, jc, 2 sy]
                    w += _neg(S, 1 if sy == 0 else 7, i, j) * W[ic, j, sx]
                    w += _neg(S, 3 if sx == 0 else 5, i, j) * W[i, jc, 2 * sy]
                    W[i, j, 2 * sy + sx] = -w / c
    return W


@njit(cache=True)
def _rap_rows(S, W, Sc, i0, i1):
    """Add the Galerkin products of fine rows i0..i1-1 to Sc (they touch coarse rows i0//2 .. (i1-1)//2 + 1).

    Per fine voxel p, its row of A P is gathered first (couplings times the neighbours' weights, on
    the 4 x 4 coarse window that can hold it; a neighbour interpolates from 1, 2 or 4 coarse voxels
    by the parity of its row and column), then added to the coarse rows p interpolates to."""
    nx = S.shape[2]
    ap = np.zeros((4, 4))
    for i in range(i0, i1):
        I0 = i // 2 - 1
        for j in range(nx):
            J0 = j // 2 - 1
            for a in range(4):
                for c in range(4):
                    ap[a, c] = 0.0
            for k in range(9):
                sv = S[k, i, j]
                if sv == 0.0:
                    continue
                i2 = i + k // 3 - 1
                j2 = j + k % 3 - 1
                for a in range(1 + (i2 & 1)):          # no test on the weight: adding 0 is cheaper
                    for c in range(1 + (j2 & 1)):      # than a branch the CPU cannot predict
                        ap[i2 // 2 + a - I0, j2 // 2 + c - J0] += sv * W[i2, j2, 2 * a + c]
            for a in range(1 + (i & 1)):
                for c in range(1 + (j & 1)):
                    w1 = W[i, j, 2 * a + c]
                    if w1 == 0.0:
                        continue
                    I1, J1 = i // 2 + a, j // 2 + c
                    for kc in range(5):                # lower planes only: Sc is symmetric
                        # coarse (I1 - 1 + kc // 3, J1 - 1 + kc % 3)
                        Sc[kc, I1, J1] += w1 * ap[a + kc // 3, c + kc % 3]


#: fine rows per parallel block of the Galerkin product (even)
_RAPBLOCK = 32


@njit(cache=True, parallel=True)
def _rap(S, W, Sc):
    """Galerkin coarse stencil P^T S P (9-point on the coarse grid), computed voxel by voxel: its
    lower planes 0-4 (the centre and the couplings to the previous row and column); the upper ones
    follow by symmetry (:func:`_mirror_lower`).

    Blocks of fine rows write overlapping coarse rows only with their neighbours, so even blocks run
    in parallel, then odd ones."""
    ny = S.shape[1]
    nb = (ny + _RAPBLOCK - 1) // _RAPBLOCK
    for parity in range(2):
        for bb in prange((nb - parity + 1) // 2):
            blk = parity + 2 * bb
            _rap_rows(S, W, Sc, blk * _RAPBLOCK, min(ny, blk * _RAPBLOCK + _RAPBLOCK))
    return Sc


@njit(cache=True, parallel=True)
def _mirror_lower(S):
    """Make S exactly symmetric in place: each upper coupling (planes 5-8) is set to the lower one it
    mirrors (S[8 - k] at the neighbour). A Galerkin product is symmetric only up to rounding; the line
    sweeps read the couplings to the next row from that row's lower planes."""
    _, ny, nx = S.shape
    for i in prange(ny):
        for k in range(5, 9):
            di, dj = k // 3 - 1, k % 3 - 1
            i2 = i + di
            for j in range(nx):
                j2 = j + dj
                if 0 <= i2 < ny and 0 <= j2 < nx:
                    S[k, i, j] = S[8 - k, i2, j2]
    return S


@njit(cache=True)
def _restrict_rows(r, W, rc, i0, i1):
    nx = r.shape[1]
    nyc, nxc = rc.shape
    for i in range(i0, i1):
        I = i // 2
        down = (i & 1) == 1 and I + 1 < nyc
        for j in range(nx):
            v = r[i, j]
            J = j // 2
            right = (j & 1) == 1 and J + 1 < nxc
            rc[I, J] += W[i, j, 0] * v
            if right:
                rc[I, J + 1] += W[i, j, 1] * v
            if down:
                rc[I + 1, J] += W[i, j, 2] * v
                if right:
                    rc[I + 1, J + 1] += W[i, j, 3] * v


@njit(cache=True, parallel=True)
def _restrict(r, W, rc):
    """rc = P^T r. Blocks of fine rows share a coarse row only with their neighbours: even blocks run
    in parallel, then odd ones."""
    ny = r.shape[0]
    nyc = rc.shape[0]
    for I in prange(nyc):
        rc[I, :] = 0.0
    nb = (ny + _RAPBLOCK - 1) // _RAPBLOCK
    for parity in range(2):
        for bb in prange((nb - parity + 1) // 2):
            blk = parity + 2 * bb
            _restrict_rows(r, W, rc, blk * _RAPBLOCK, min(ny, blk * _RAPBLOCK + _RAPBLOCK))
    return rc


@njit(cache=True, parallel=True)
def _prolong_add(x, ec, W):
    """x += P ec."""
    ny, nx = x.shape
    nyc, nxc = ec.shape
    for i in prange(ny):
        I = i // 2
        down = (i & 1) == 1 and I + 1 < nyc
        for j in range(nx):
            J = j // 2
            right = (j & 1) == 1 and J + 1 < nxc
            s = W[i, j, 0] * ec[I, J]
            if right:
                s += W[i, j, 1] * ec[I, J + 1]
            if down:
                s += W[i, j, 2] * ec[I + 1, J]
                if right:
                    s += W[i, j, 3] * ec[I + 1, J + 1]
            x[i, j] += s


@njit(cache=True, parallel=True)
def _cg_step(x, r, p, Ap, alpha):
    """x += alpha p; r -= alpha Ap; returns |r|^2 (one pass)."""
    ny, nx = x.shape
    s = 0.0
    for i in prange(ny):
        for j in range(nx):
            x[i, j] += alpha * p[i, j]
            rv = r[i, j] - alpha * Ap[i, j]
            r[i, j] = rv
            s += rv * rv
    return s


@njit(cache=True, parallel=True)
def _dot(a, b):
    ny, nx = a.shape
    s = 0.0
    for i in prange(ny):
        for j in range(nx):
            s += a[i, j] * b[i, j]
    return s


@njit(cache=True, parallel=True)
def _cg_dir(p, z, beta):
    """p = z + beta p."""
    ny, nx = p.shape
    for i in prange(ny):
        for j in range(nx):
            p[i, j] = z[i, j] + beta * p[i, j]


def stencil_to_csr(S) -> sp.csr_matrix:
    """The grid operator as a CSR matrix (row-major voxel order)."""
    _, ny, nx = S.shape
    idx = np.arange(ny * nx).reshape(ny, nx)
    rows, cols, vals = [], [], []
    for k in range(9):
        dy, dx = _DY[k], _DX[k]
        i0, i1 = max(0, -dy), ny - max(0, dy)
        j0, j1 = max(0, -dx), nx - max(0, dx)
        v = S[k, i0:i1, j0:j1]
        nz = v != 0.0
        rows.append(idx[i0:i1, j0:j1][nz])
        cols.append(idx[i0 + dy:i1 + dy, j0 + dx:j1 + dx][nz])
        vals.append(v[nz])
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(ny * nx,) * 2)


def _is_five(S) -> bool:
    """The 9-point stencil S is 5-point (its corner planes are all zero)."""
    return not (S[0].any() or S[2].any() or S[6].any() or S[8].any())


#: grids with fewer voxels than this run on one thread: there a parallel region costs more than it
#: saves, and far more when another process keeps the second core busy
PARALLEL_MIN_VOXELS = 256 * 256
_MAX_THREADS = numba.config.NUMBA_NUM_THREADS


def _use_threads(n_voxels: int) -> None:
    numba.set_num_threads(_MAX_THREADS if n_voxels >= PARALLEL_MIN_VOXELS else 1)


class GridMultigrid:
    """Symmetric V-cycle hierarchy for a grid stencil ``S`` (9, ny, nx), SPD with identity rows.

    The operator the hierarchy is built from must be symmetric to the last bit (as
    :func:`grid_system` and :func:`filled` make it): the smoother keeps its lower planes only.

    Example
    -------
    >>> mg = GridMultigrid(S)                     # doctest: +SKIP
    >>> x, its = mg.pcg(b, rtol=1e-8)             # doctest: +SKIP
    """

    def __init__(self, S, coarsest: int = 2500, smoother_dtype=np.float64, preconditioner_of=None, mask=None,
                 coarse_cycles: int = 1):
        """``S``: the operator CG solves. ``preconditioner_of``: build the hierarchy from this operator
        instead (e.g. :func:`filled`). ``mask``: the preconditioned residual is kept on these voxels
        only (symmetric restriction to the unknowns). ``coarse_cycles``: how often each level below
        the finest visits the next coarser one (1: a V-cycle; 2: a W-cycle from the second level
        down, whose coarse-grid correction is closer to exact for the few extra visits to small grids;
        still symmetric)."""
        if int(coarse_cycles) < 1:
            raise ValueError(f"coarse_cycles must be >= 1, got {coarse_cycles}")
        self.coarse_cycles = int(coarse_cycles)
        self.dtype = np.dtype(smoother_dtype)
        self.bands = 4 * _MAX_THREADS   # x-line Gauss-Seidel bands, four per task (fixed: same answer on any thread count)
        self.mask = np.ones(S.shape[1:], smoother_dtype) if mask is None else np.asarray(mask, smoother_dtype)
        self.S = S                      # the exact operator (float64), for the CG products
        self.five_S = _is_five(S)
        self.levels = []                # lower planes (0-4) of the hierarchy's operators, smoother dtype
        self.levelsT = []               # the same, transposed (their x-lines are the y-lines)
        self.P = []
        self.factors = []               # x-line factors of each level and of its transpose
        self.five = []                  # level is a 5-point stencil (corner entries all zero)
        Sf = S if preconditioner_of is None else preconditioner_of
        while True:
            _, ny, nx = Sf.shape
            _use_threads(ny * nx)
            five = _is_five(Sf)
            # the level in the smoother's dtype and its transpose, their lower planes (the level is
            # symmetric), in one pass; a 5-point level reads only its five planes
            planes = np.array((1, 3, 4, 5, 7) if five else range(9))
            lv = np.zeros((5, ny, nx), smoother_dtype)
            lvT = np.zeros((5, nx, ny), smoother_dtype)
            _cast_and_transpose(Sf, planes, lv, lvT, _TPLANE)
            factors = tuple(np.empty(a.shape[1:], smoother_dtype) for a in (lv, lv, lvT, lvT))
            _line_factors(lv, factors[0], factors[1])
            _line_factors(lvT, factors[2], factors[3])
            self.levels.append(lv)
            self.levelsT.append(lvT)
            self.factors.append(factors)
            self.five.append(five)
            if ny * nx <= coarsest or min(ny, nx) < 4:
                break
            nyc, nxc = (ny + 1) // 2, (nx + 1) // 2
            # outputs allocated by numpy (huge-page advised: faster first touch than numba's own)
            W = _interpolation(Sf, np.zeros((ny, nx, 4)))
            self.P.append(W.astype(smoother_dtype, copy=False))
            Sf = _mirror_lower(_rap(Sf, W, np.zeros((9, nyc, nxc))))
        from scipy.sparse.linalg import splu

        self.coarse_shape = Sf.shape[1:]
        numba.set_num_threads(_MAX_THREADS)
        self.lu = splu(stencil_to_csr(Sf).tocsc())
        # work arrays per level (right-hand side; x, residual and the transposed x and b), allocated
        # once: fresh 2048^2 arrays would fault their pages in on every V-cycle
        self._b = [np.empty(lv.shape[1:], self.dtype) for lv in self.levels]
        self._work = [(np.empty(lv.shape[1:], self.dtype), np.empty(lv.shape[1:], self.dtype),
                       np.empty(lvT.shape[1:], self.dtype), np.empty(lvT.shape[1:], self.dtype))
                      for lv, lvT in zip(self.levels[:-1], self.levelsT[:-1])]
        # the repeated coarse-grid corrections (coarse_cycles > 1): the correction and its residual
        # on each level from the third down (level 1 visits level 2 again, and so on)
        self._again = [None, None] + [(np.empty(lv.shape[1:], self.dtype), np.empty(lv.shape[1:], self.dtype))
                                      for lv in self.levels[2:-1]] if self.coarse_cycles > 1 else []

    def apply(self, x, out=None):
        """S x (float64 exact operator), into ``out`` if given."""
        _use_threads(x.size)
        y = np.empty_like(x) if out is None else out
        _apply_dot(self.S, x, y, self.five_S)
        return y

    def vcycle(self, b, level: int = 0):
        """One symmetric V-cycle for S x = b from x = 0. The result lives in the level's work array
        (valid until the next V-cycle on that level)."""
        if level == len(self.levels) - 1:
            return self.lu.solve(b.ravel().astype(float)).reshape(b.shape).astype(b.dtype, copy=False)
        _use_threads(b.size)
        x, r, xT, bT = self._work[level]
        S, ST, five = self.levels[level], self.levelsT[level], self.five[level]
        cpx, imx, cpy, imy = self.factors[level]
        # y-line Gauss-Seidel (the x-lines of the transposed level; from x = 0, so nothing to
        # transpose in), then x-line Gauss-Seidel
        _transpose(b, bT)
        xT.fill(0.0)
        _xlines(ST, xT, bT, True, cpy, imy, five, self.bands)
        _transpose(xT, x)
        _xlines(S, x, b, True, cpx, imx, five, self.bands)
        _residual(S, x, b, r, five)
        W = self.P[level]
        bc = _restrict(r, W, self._b[level + 1])
        ec = self.vcycle(bc, level + 1)
        if level > 0 and self.coarse_cycles > 1 and level + 1 < len(self.levels) - 1:
            # again from the coarse residual: ec += V(bc - A_c ec), coarse_cycles - 1 times (the
            # level below keeps bc, its right-hand side, untouched)
            e, rc = self._again[level + 1]
            e[...] = ec
            for _ in range(self.coarse_cycles - 1):
                _use_threads(bc.size)
                _residual(self.levels[level + 1], e, bc, rc, self.five[level + 1])
                e += self.vcycle(rc, level + 1)
            ec = e
        _use_threads(b.size)
        _prolong_add(x, ec, W)
        # the adjoint of the pre-smoothing: both sweeps reversed, in reverse order
        _xlines(S, x, b, False, cpx, imx, five, self.bands)
        _transpose(x, xT)
        _xlines(ST, xT, bT, False, cpy, imy, five, self.bands)
        _transpose(xT, x)
        return x

    def precondition(self, r, out=None):
        """z = M V(M r): one V-cycle, restricted to the masked voxels (symmetric); into ``out`` if given."""
        z = np.empty_like(r) if out is None else out
        self._precondition_dot(r, z)
        return z

    def _precondition_dot(self, r, z):
        """z = M V(M r); returns r . z."""
        _use_threads(r.size)
        rr = self._b[0]
        _masked_cast(r, self.mask, rr)
        zz = self.vcycle(rr)
        _use_threads(r.size)
        return _masked_cast_dot(zz, self.mask, z, r)

    def pcg(self, b, rtol: float = 1e-8, maxiter: int = 200, x0=None):
        """Preconditioned conjugate gradients on the grid; returns (x, iterations, relative residual)."""
        try:
            return self._pcg(b, rtol, maxiter, x0)
        finally:
            numba.set_num_threads(_MAX_THREADS)

    def _pcg(self, b, rtol, maxiter, x0):
        _use_threads(b.size)
        nb = np.sqrt(_dot(b, b))
        if nb == 0:
            return np.zeros_like(b), 0, 0.0
        x = np.zeros_like(b) if x0 is None else x0.copy()
        r = b - self.apply(x) if x0 is not None else b.copy()
        z = np.empty_like(b)
        rz = self._precondition_dot(r, z)
        p = z.copy()
        Ap = np.empty_like(b)
        it = 0
        res = np.sqrt(_dot(r, r)) / nb
        while res > rtol and it < maxiter:
            alpha = rz / _apply_dot(self.S, p, Ap, self.five_S)
            res = np.sqrt(_cg_step(x, r, p, Ap, alpha)) / nb
            it += 1
            if res <= rtol:
                break
            rz_new = self._precondition_dot(r, z)
            _cg_dir(p, z, rz_new / rz)
            rz = rz_new
        return x, it, float(res)


@njit(cache=True, parallel=True)
def _grid_system(C, E, Sd, SE, SW, unknown, fixed, val, S, b):
    """One pass: 9-point grid operator with identity rows off the unknowns, Dirichlet couplings moved
    to the right-hand side. E, Sd, SE, SW: forward couplings (0,1), (1,0), (1,1), (1,-1)."""
    ny, nx = C.shape
    for i in prange(ny):
        for j in range(nx):
            if not unknown[i, j]:
                S[4, i, j] = 1.0
                continue
            S[4, i, j] = C[i, j]
            for k in range(9):
                if k == 4:
                    continue
                di = k // 3 - 1
                dj = k % 3 - 1
                i2, j2 = i + di, j + dj
                if i2 < 0 or i2 >= ny or j2 < 0 or j2 >= nx:
                    continue
                # coupling stored at the upper/left voxel of the pair
                if di == 0 and dj == 1:
                    c = E[i, j]
                elif di == 0 and dj == -1:
                    c = E[i2, j2]
                elif di == 1 and dj == 0:
                    c = Sd[i, j]
                elif di == -1 and dj == 0:
                    c = Sd[i2, j2]
                elif di == 1 and dj == 1:
                    c = SE[i, j]
                elif di == -1 and dj == -1:
                    c = SE[i2, j2]
                elif di == 1 and dj == -1:
                    c = SW[i, j]
                else:
                    c = SW[i2, j2]
                if c == 0.0:
                    continue
                if unknown[i2, j2]:
                    S[k, i, j] = c
                elif fixed[i2, j2]:
                    b[i, j] -= c * val[i2, j2]
    return S, b


def grid_system(stencil: dict, unknown, fixed_value):
    """Grid stencil S (9, ny, nx) and right-hand side b for the unknown voxels.

    Couplings to fixed (electrode) voxels move to the right-hand side; voxels that are not unknowns
    get identity rows and no couplings, so S is symmetric positive definite. Returns ``(S, b)``.
    """
    ny, nx = unknown.shape
    zero = np.zeros((ny, nx))
    fixed = np.isfinite(fixed_value)
    return _grid_system(stencil["C"], stencil.get((0, 1), zero), stencil.get((1, 0), zero),
                        stencil.get((1, 1), zero), stencil.get((1, -1), zero), np.ascontiguousarray(unknown),
                        fixed, np.where(fixed, fixed_value, 0.0), np.zeros((9, ny, nx)), np.zeros((ny, nx)))


@njit(cache=True, parallel=True)
def _fill(S, unknown, g, F):
    _, ny, nx = S.shape
    for i in prange(ny):
        for k in range(9):
            for j in range(nx):
                F[k, i, j] = S[k, i, j]
        for j in range(nx):
            dead = not unknown[i, j]
            d = 0.0 if dead else S[4, i, j]
            if j + 1 < nx and (dead or not unknown[i, j + 1]):
                F[5, i, j] -= g
                d += g
            if j > 0 and (dead or not unknown[i, j - 1]):
                F[3, i, j] -= g
                d += g
            if i + 1 < ny and (dead or not unknown[i + 1, j]):
                F[7, i, j] -= g
                d += g
            if i > 0 and (dead or not unknown[i - 1, j]):
                F[1, i, j] -= g
                d += g
            F[4, i, j] = d
    return F


def filled(S, unknown, fill: float = 1e-6):
    """Copy of S in which the voxels that are not unknowns (vacuum, ZrO2, electrodes, floating
    clusters) conduct a little: isotropic links of ``fill`` times the largest diagonal entry.

    To the multigrid such voxels are then a conductivity jump, which its operator-dependent
    interpolation handles, instead of holes in the grid, which it does not (its convergence would
    degrade with the grid size). Only the preconditioner is built from this operator; CG solves the
    exact system, so ``fill`` changes the speed, never the answer.
    """
    unknown = np.ascontiguousarray(unknown)
    if unknown.all() or not unknown.any():
        return S.copy()
    return _fill(S, unknown, fill * float(np.max(S[4][unknown])), np.empty_like(S))


#: CG iterations with the float32 hierarchy before :func:`solve_grid` switches to float64
FLOAT32_MAXITER = 300


def solve_grid(stencil: dict, unknown, fixed_value, rtol: float = 1e-8, info: dict | None = None,
               maxiter: int = 1000) -> np.ndarray:
    """Solve for the unknown voxels with multigrid-preconditioned CG; returns the potential grid
    (values at unknown voxels, 0 elsewhere). ``info`` receives method, iterations, residual, levels,
    t_mg_setup_s and hierarchy ("float32", or "float32, then float64" when CG had not converged
    after :data:`FLOAT32_MAXITER` iterations)."""
    import time

    from insitu.core.errors import UserError

    S, b = grid_system(stencil, unknown, fixed_value)
    t0 = time.perf_counter()
    # float32 hierarchy: the V-cycle only preconditions (CG works on the exact float64 system), and
    # half the memory traffic makes it ~1.5x faster with the same iteration count (2048^2 thin-film
    # lamella: 57 iterations either way). Before the interpolation lumped the positive couplings, a
    # float32 V-cycle made CG stall on the thin-film operator (residual 7e-3 after 1000 iterations);
    # should it stall again, CG goes on from where it stopped with a float64 hierarchy.
    # the thin-film operator (9-point, strongly anisotropic along the grains' oblique traces): a
    # W-cycle from the second level down. 2048^2 lamella: 57 -> 42 iterations, CG 7.3 -> 5.4 s; the
    # paper's 5-point network converges in 11 V-cycles, which the W-cycle does not improve
    cycles = 1 if _is_five(S) else 2
    mg = GridMultigrid(S, preconditioner_of=filled(S, unknown), mask=unknown, smoother_dtype=np.float32,
                       coarse_cycles=cycles)
    t1 = time.perf_counter()
    x, its, res = mg.pcg(b, rtol=rtol, maxiter=min(maxiter, FLOAT32_MAXITER))
    hierarchy = "float32"
    if res > rtol and its < maxiter:
        del mg
        t2 = time.perf_counter()
        mg = GridMultigrid(S, preconditioner_of=filled(S, unknown), mask=unknown, smoother_dtype=np.float64,
                           coarse_cycles=cycles)
        t1 += time.perf_counter() - t2
        x, its64, res = mg.pcg(b, rtol=rtol, maxiter=maxiter - its, x0=x)
        its += its64
        hierarchy = "float32, then float64"
    if info is not None:
        info.update(method="mg", iterations=its, residual=res, levels=len(mg.levels), t_mg_setup_s=t1 - t0,
                    hierarchy=hierarchy, cycle="W" if cycles > 1 else "V")
    if not np.isfinite(res) or res > max(100 * rtol, 1e-6):
        raise UserError(f"the transport solver did not converge (relative residual {res:.2g} after {its} iterations)")
    return np.where(unknown, x, 0.0)
