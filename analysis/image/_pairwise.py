"""Float32 sums in numba that give numpy's result bit for bit (its pairwise summation).

A compiled kernel that replaces ``a.sum()`` / ``a.mean()`` of a float32 row must add in the
same order as numpy to keep results identical: numpy sums blocks of up to 128 values with 8
running partial sums and splits longer runs in halves (rounded down to a multiple of 8).

Also the one row-block count of the image kernels' parallel drivers (:data:`ROW_BLOCKS`).
"""
from __future__ import annotations

import numba
import numpy as np

__all__ = ["pairwise_sum_f32", "ROW_BLOCKS"]

#: the image kernels hand rows to the threads in this many blocks (fixed, so that every per-row
#: result is computed the same way whatever the number of threads, ``NUMBA_NUM_THREADS``)
ROW_BLOCKS = 32


@numba.njit(cache=True, nogil=True)
def _block_sum(a, i0, n):
    """numpy's sum of a run of at most 128 float32 values: 8 partial sums, then the rest."""
    if n < 8:
        res = np.float32(0.0)
        for i in range(i0, i0 + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[i0], a[i0 + 1], a[i0 + 2], a[i0 + 3]
    r4, r5, r6, r7 = a[i0 + 4], a[i0 + 5], a[i0 + 6], a[i0 + 7]
    i = i0 + 8
    end = i0 + n - n % 8
    while i < end:
        r0 += a[i]
        r1 += a[i + 1]
        r2 += a[i + 2]
        r3 += a[i + 3]
        r4 += a[i + 4]
        r5 += a[i + 5]
        r6 += a[i + 6]
        r7 += a[i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < i0 + n:
        res += a[i]
        i += 1
    return res


@numba.njit(cache=True, nogil=True)
def pairwise_sum_f32(a, i0, n):
    """Sum of the float32 values a[i0 : i0 + n] (1-D) in float32, in numpy's pairwise order.

    Runs longer than 128 are split in halves (the first rounded down to a multiple of 8) and
    their sums added; done with an explicit stack (a recursive numba function does not load
    reliably from the on-disk cache).

    Example
    -------
    >>> import numpy as np
    >>> x = (np.random.default_rng(0).normal(size=1000) * 1e3).astype(np.float32)
    >>> bool(pairwise_sum_f32(x, 0, x.size) == x.sum())
    True
    """
    if n <= 128:
        return _block_sum(a, i0, n)
    # frames (start, length, stage): stage 0 = split, 1 = add the two sums on the value stack
    fs = np.empty(128, np.int64)
    fn = np.empty(128, np.int64)
    fg = np.empty(128, np.int64)
    vals = np.empty(128, np.float32)
    top = 0
    nv = 0
    fs[0], fn[0], fg[0] = i0, n, 0
    top = 1
    while top > 0:
        top -= 1
        s, m, g = fs[top], fn[top], fg[top]
        if g == 1:
            nv -= 1
            vals[nv - 1] = vals[nv - 1] + vals[nv]
        elif m <= 128:
            vals[nv] = _block_sum(a, s, m)
            nv += 1
        else:
            n2 = m // 2
            n2 -= n2 % 8
            fs[top], fn[top], fg[top] = s, m, 1                  # add, after both halves
            fs[top + 1], fn[top + 1], fg[top + 1] = s + n2, m - n2, 0
            fs[top + 2], fn[top + 2], fg[top + 2] = s, n2, 0     # first half first
            top += 3
    return vals[0]
