"""Sparse system from grid stencils, and its solution (pyamg Ruge-Stueben AMG + conjugate gradients)."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from insitu.core.errors import UserError

#: all nine offsets in increasing linear-index order (keeps CSR rows sorted)
ALL_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 0), (0, 1), (1, -1), (1, 0), (1, 1))


def _shift(a, dy, dx, fill):
    """b[i, j] = a[i+dy, j+dx] (``fill`` outside)."""
    ny, nx = a.shape
    b = np.full_like(a, fill)
    ys, yd = (slice(0, ny - dy), slice(dy, ny)) if dy >= 0 else (slice(-dy, ny), slice(0, ny + dy))
    xs, xd = (slice(0, nx - dx), slice(dx, nx)) if dx >= 0 else (slice(-dx, nx), slice(0, nx + dx))
    b[ys, xs] = a[yd, xd]
    return b


def build_system(stencil: dict, unknown, fixed_value):
    """CSR matrix and right-hand side for the unknown voxels.

    Parameters
    ----------
    stencil : dict
        From :func:`insitu.analysis.transport.network.assemble`.
    unknown : ndarray of bool, shape (ny, nx)
        Voxels whose potential is solved for.
    fixed_value : ndarray of float, shape (ny, nx)
        Potential (V) of fixed (electrode) voxels, NaN elsewhere.

    Returns
    -------
    A : scipy.sparse.csr_matrix, (n, n)
    b : ndarray, (n,)
    index : ndarray of int, (ny, nx): row of each unknown voxel, -1 elsewhere.

    Example
    -------
    >>> A, b, index = build_system(assemble(v, m), unknown, fixed)   # doctest: +SKIP
    """
    n = int(unknown.sum())
    index = np.full(unknown.shape, -1, np.int64 if unknown.size >= 2 ** 31 else np.int32)
    index[unknown] = np.arange(n, dtype=index.dtype)
    isfixed = np.isfinite(fixed_value)
    val = np.where(isfixed, fixed_value, 0.0)
    b = np.zeros(n)
    datas, cols, valids = [], [], []
    for dy, dx in ALL_OFFSETS:
        if (dy, dx) == (0, 0):
            coef = stencil["C"]
        elif (dy, dx) in stencil:
            coef = stencil[(dy, dx)]
        elif (-dy, -dx) in stencil:
            coef = _shift(stencil[(-dy, -dx)], dy, dx, 0.0)
        else:
            continue
        cu = coef[unknown]
        if (dy, dx) == (0, 0):
            datas.append(cu)
            cols.append(index[unknown])
            valids.append(np.ones(n, bool))
            continue
        nu = _shift(index, dy, dx, -1)[unknown]
        nf = _shift(val, dy, dx, 0.0)[unknown]
        b -= cu * nf  # nf is 0 unless the neighbour is fixed
        datas.append(cu)
        cols.append(nu)
        valids.append((nu >= 0) & (cu != 0.0))
    data = np.stack(datas, axis=1)
    col = np.stack(cols, axis=1)
    valid = np.stack(valids, axis=1)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(valid.sum(axis=1), out=indptr[1:])
    A = sp.csr_matrix((data[valid], col[valid].astype(np.int32), indptr.astype(np.int32)), shape=(n, n))
    return A, b, index


#: below this many unknowns a sparse direct solve (SuperLU) is used: exact and fast enough
DIRECT_MAX = 150_000


def solve(A, b, rtol: float = 1e-8, x0=None, maxiter: int = 400, info: dict | None = None,
          method: str = "auto", anisotropic: bool = False) -> np.ndarray:
    """Solve the symmetric positive-definite system A x = b.

    Parameters
    ----------
    method : {"auto", "direct", "amg"}
        "direct": SuperLU (minimum-degree ordering); "amg": conjugate gradients preconditioned by
        pyamg (Ruge-Stueben for the 5-point network, smoothed aggregation for the 9-point full-tensor
        scheme, which is not an M-matrix); "auto": direct below :data:`DIRECT_MAX` unknowns.
    anisotropic : bool
        The matrix comes from the full-tensor scheme.
    info : dict, optional
        Receives ``method``, ``iterations``, ``residual`` (relative).
    """
    import scipy.sparse.linalg as spl

    n = A.shape[0]
    if n == 0:
        return np.zeros(0)
    nb = np.linalg.norm(b)
    if nb == 0.0:
        return np.zeros_like(b)
    if method == "auto":
        method = "direct" if n <= DIRECT_MAX else "amg"
    its = 0
    if method == "direct":
        lu = spl.splu(A.tocsc(), permc_spec="MMD_AT_PLUS_A", options=dict(SymmetricMode=True))
        x = lu.solve(b)
    elif method == "amg":
        import pyamg

        if anisotropic:
            ml = pyamg.smoothed_aggregation_solver(A, max_coarse=500)
        else:
            ml = pyamg.ruge_stuben_solver(A, max_coarse=500)
        res = []
        x = ml.solve(b, x0=x0, tol=rtol, maxiter=maxiter, accel="cg", residuals=res)
        its = len(res) - 1
    else:
        raise ValueError(f"unknown method {method!r}")
    rel = float(np.linalg.norm(b - A @ x) / nb)
    if info is not None:
        info.update(method=method, iterations=its, residual=rel)
    if not np.isfinite(rel) or rel > max(100 * rtol, 1e-6):
        raise UserError(f"the transport solver did not converge (relative residual {rel:.2g} after "
                        f"{its} iterations)")
    return x
