"""Noise-normalised differential images against a running, drift-corrected reference.

Each new frame is moved into the coordinates of the first frame (Fourier shift by
the measured drift, combined with a light Gaussian smoothing that acts as the
matched filter for small seeds), scaled to the reference brightness, and the
running reference ``R`` is subtracted. The row means of the difference are
removed (scan-line noise: a shifted row offset is still constant along the row).
The result is divided by the local noise ``σ`` (a per-pixel running estimate of
the variance of the difference), so a threshold in σ means the same on dark
grains, bright particles and grain boundaries.

The reference and the variance are updated with clipped increments
(``± clip_sigma·σ`` per pixel), so a one-frame artefact barely touches them
while slow, real changes are absorbed over tens of frames. Memory is a few
frame-sized arrays, whatever the length of the series; every frame costs the same.
"""
from __future__ import annotations

import numba
import numpy as np
import scipy.fft as sfft

from insitu.analysis.image._pairwise import ROW_BLOCKS, pairwise_sum_f32

__all__ = ["ShiftSmoother", "upsample_fourier", "valid_slices", "remove_row_offsets", "DifferentialImager"]


@numba.njit(cache=True, nogil=True)
def _pixel_spread_rows(d, sd, pm, pv, hold, has_hold, beta, spread, y0, y1):
    """Running mean ``pm`` and mean square ``pv`` of d clipped to ±3·sd, in place (not where
    ``hold``), and ``spread`` = max(pv − pm², 0) (float32, the operations of the numpy steps)."""
    ny, nx = d.shape
    three = np.float32(3.0)
    for y in range(y0, y1):
        for x in range(nx):
            m = pm[y, x]
            v = pv[y, x]
            lim = three * sd[y, x]
            dcc = min(max(d[y, x], -lim), lim)
            held = has_hold and hold[y, x]      # (selects rather than branches: vectorised)
            dc = m if held else dcc
            dc2 = v if held else dcc * dcc
            m = m + beta * (dc - m)
            v = v + beta * (dc2 - v)
            pm[y, x] = m
            pv[y, x] = v
            s = v - m * m
            spread[y, x] = s if s > 0 else np.float32(0.0)


@numba.njit(cache=True, nogil=True, parallel=True)
def _pixel_spread(d, sd, pm, pv, hold, has_hold, beta, spread):
    """:func:`_pixel_spread_rows` over all rows, blocks of rows in parallel."""
    ny = d.shape[0]
    nb = min(ROW_BLOCKS, ny)
    for blk in numba.prange(nb):
        _pixel_spread_rows(d, sd, pm, pv, hold, has_hold, beta, spread, blk * ny // nb, (blk + 1) * ny // nb)


@numba.njit(cache=True, nogil=True)
def _normalise_and_step_rows(d, sd, spread, floor, clip, rate, outlier, use_outlier, fz, has_fz,
                             ready, nref, nref_max, zv, sd_out, y0, y1):
    """σ per pixel = max(sd, floor·√(3×3 mean of ``spread``, edges repeated)) → ``sd_out``;
    zv = d / σ; ``d`` ← the clipped reference update clip(zv, ±clip)·σ·rate (0 where |zv| >
    ``outlier`` if ``use_outlier``, and where ``fz``); ``nref`` += 1 where ``ready``, the update
    is not 0 and nref < ``nref_max``. The 3×3 mean in double, rows first then
    columns, rounded to float32 in between (as ``scipy.ndimage.uniform_filter``)."""
    ny, nx = d.shape
    col = np.empty(nx, np.float32)
    h = np.empty(nx, np.float32)
    for y in range(y0, y1):
        # (simple loops without branches, which the compiler vectorises)
        ya = max(y - 1, 0)
        yb = min(y + 1, ny - 1)
        for x in range(nx):
            col[x] = np.float32((np.float64(spread[ya, x]) + np.float64(spread[y, x])
                                 + np.float64(spread[yb, x])) / 3.0)
        for x in range(1, nx - 1):
            h[x] = np.float32((np.float64(col[x - 1]) + np.float64(col[x]) + np.float64(col[x + 1])) / 3.0)
        x1 = min(1, nx - 1)
        h[0] = np.float32((np.float64(col[0]) + np.float64(col[0]) + np.float64(col[x1])) / 3.0)
        x1 = max(nx - 2, 0)
        h[nx - 1] = np.float32((np.float64(col[x1]) + np.float64(col[nx - 1]) + np.float64(col[nx - 1])) / 3.0)
        for x in range(nx):
            f = np.sqrt(h[x]) * floor
            s0 = sd[y, x]
            s = f if f > s0 else s0
            sd_out[y, x] = s
            z = d[y, x] / s
            zv[y, x] = z
            st = min(max(z, -clip), clip)
            st = st * s
            st = st * rate
            drop = (use_outlier and abs(z) > outlier) or (has_fz and fz[y, x])
            d[y, x] = np.float32(0.0) if drop else st
        for x in range(nx):
            if ready[y, x] and d[y, x] != 0 and nref[y, x] < nref_max:
                nref[y, x] += np.float32(1.0)


@numba.njit(cache=True, nogil=True, parallel=True)
def _normalise_and_step(d, sd, spread, floor, clip, rate, outlier, use_outlier, fz, has_fz,
                        ready, nref, nref_max, zv, sd_out):
    """:func:`_normalise_and_step_rows` over all rows, blocks of rows in parallel."""
    ny = d.shape[0]
    nb = min(ROW_BLOCKS, ny)
    for blk in numba.prange(nb):
        _normalise_and_step_rows(d, sd, spread, floor, clip, rate, outlier, use_outlier, fz, has_fz,
                                 ready, nref, nref_max, zv, sd_out, blk * ny // nb, (blk + 1) * ny // nb)


def interp_tables(xp, fp):
    """(xp, fp, slopes, start) for :func:`_interp_one`: float64 knots and values, the slopes as
    ``np.interp`` precomputes them, and for 1024 equal cells over [xp[0], xp[−1]] an index near
    the interval of the cell's values, where the search for the interval begins."""
    xp = np.asarray(xp, np.float64)
    fp = np.asarray(fp, np.float64)
    slopes = np.diff(fp) / np.diff(xp) if xp.size > 1 else np.zeros(1)
    cells = np.linspace(xp[0], xp[-1], 1025)[:-1]
    start = np.clip(np.searchsorted(xp, cells, "right") - 1, 0, max(xp.size - 2, 0)).astype(np.int64)
    return xp, fp, slopes, start


@numba.njit(cache=True, nogil=True, inline="always")
def _cells_per_unit(xp, start):
    """Cells of ``start`` per unit of ``xp`` (0 for a single knot), for :func:`_interp_one`:
    computed once per block of rows, not per pixel."""
    n = xp.shape[0]
    return start.shape[0] / (xp[n - 1] - xp[0]) if xp[n - 1] > xp[0] else 0.0


@numba.njit(cache=True, nogil=True, inline="always")
def _interp_one(r, xp, fp, slopes, start, cell):
    """``np.interp(r, xp, fp)`` for one float64 ``r`` (finite), by the same formula; the search for
    the interval starts at the ``start`` of r's cell (``cell``: :func:`_cells_per_unit`) and walks
    from there (any start gives the same answer)."""
    n = xp.shape[0]
    if r < xp[0]:
        return fp[0]
    if r >= xp[n - 1]:
        return fp[n - 1]
    c = int((r - xp[0]) * cell)
    lo = start[min(max(c, 0), start.shape[0] - 1)]
    while lo > 0 and xp[lo] > r:
        lo -= 1
    while xp[lo + 1] <= r:      # now xp[lo] <= r < xp[lo + 1]
        lo += 1
    return fp[lo] if xp[lo] == r else slopes[lo] * (r - xp[lo]) + fp[lo]


@numba.njit(cache=True, nogil=True)
def _sd_from_model_rows(ref, xp, fp, slopes, start, g2, shift_var, has_shift, floor, out, y0, y1):
    """out = √max(interp(ref; xp, fp) + shift_var·g2, floor) (float32): ``np.interp``
    (:func:`_interp_one`) then the float32 steps."""
    nx = ref.shape[1]
    cell = _cells_per_unit(xp, start)
    for y in range(y0, y1):
        for x in range(nx):
            w = np.float32(_interp_one(np.float64(ref[y, x]), xp, fp, slopes, start, cell))
            if has_shift:
                w = w + shift_var * g2[y, x]
            if w < floor:
                w = floor
            out[y, x] = np.sqrt(w)


@numba.njit(cache=True, nogil=True, parallel=True)
def _sd_from_model(ref, xp, fp, slopes, start, g2, shift_var, has_shift, floor, out):
    """:func:`_sd_from_model_rows` over all rows, blocks of rows in parallel."""
    ny = ref.shape[0]
    nb = min(ROW_BLOCKS, ny)
    for blk in numba.prange(nb):
        _sd_from_model_rows(ref, xp, fp, slopes, start, g2, shift_var, has_shift, floor, out,
                            blk * ny // nb, (blk + 1) * ny // nb)


@numba.njit(cache=True, nogil=True)
def _sub_shift_rows(d, cx, gx, cy, gy, y0, y1):
    """d[y] ← (d[y] − cx[y]·gx[y]) − cy[y]·gy[y], in place (float32, as the numpy steps)."""
    nx = d.shape[1]
    for y in range(y0, y1):
        a = cx[y]
        b = cy[y]
        for x in range(nx):
            d[y, x] = (d[y, x] - a * gx[y, x]) - b * gy[y, x]


@numba.njit(cache=True, nogil=True, parallel=True)
def _sub_shift(d, cx, gx, cy, gy):
    """:func:`_sub_shift_rows` over all rows, blocks of rows in parallel."""
    ny = d.shape[0]
    nb = min(ROW_BLOCKS, ny)
    for blk in numba.prange(nb):
        _sub_shift_rows(d, cx, gx, cy, gy, blk * ny // nb, (blk + 1) * ny // nb)


@numba.njit(cache=True, nogil=True)
def _level_sums(d, r, s, ok, edges, nl):
    """Per reference-level bin (``edges``, side "right", clipped to 0 … nl − 1) over the pixels
    ``ok``: their count, the sum of d clipped at ± 3 s (float32, as np.clip) and the sum of s, in
    float64 and in row-major order, as ``np.bincount`` adds them (one pass; it was a masked
    selection, a clip, a searchsorted and three bincounts)."""
    n = np.zeros(nl, np.int64)
    sx = np.zeros(nl, np.float64)
    ss = np.zeros(nl, np.float64)
    ny, nx = r.shape
    three = np.float32(3.0)
    for y in range(ny):
        for x in range(nx):
            if not ok[y, x]:
                continue
            sv = s[y, x]
            hi = three * sv
            lo = -hi
            v = d[y, x]
            if v < lo:
                v = lo
            if v > hi:
                v = hi
            k = np.searchsorted(edges, np.float64(r[y, x]), side="right") - 1
            if k < 0:
                k = 0
            elif k > nl - 1:
                k = nl - 1
            n[k] += 1
            sx[k] += np.float64(v)
            ss[k] += np.float64(sv)
    return n, sx, ss


@numba.njit(cache=True, nogil=True)
def _sub_interp_rows(d, r, xp, fp, slopes, start, y0, y1):
    """d[y] ← d[y] − float32(interp(r[y]; xp, fp)), in place (:func:`_interp_one`, as np.interp)."""
    nx = d.shape[1]
    cell = _cells_per_unit(xp, start)
    for y in range(y0, y1):
        for x in range(nx):
            d[y, x] = d[y, x] - np.float32(_interp_one(np.float64(r[y, x]), xp, fp, slopes, start, cell))


@numba.njit(cache=True, nogil=True, parallel=True)
def _sub_interp_tables(d, r, xp, fp, slopes, start):
    """:func:`_sub_interp_rows` over all rows, blocks of rows in parallel."""
    ny = d.shape[0]
    nb = min(ROW_BLOCKS, ny)
    for blk in numba.prange(nb):
        _sub_interp_rows(d, r, xp, fp, slopes, start, blk * ny // nb, (blk + 1) * ny // nb)


def _sub_interp(d, r, xp, fp) -> None:
    """d −= float32(np.interp(r, xp, fp)), in place, blocks of rows in parallel (was a
    frame-sized ``np.interp``, a cast and a subtraction). ``r`` finite."""
    _sub_interp_tables(d, r, *interp_tables(xp, fp))


def _seen_gradient(ref: np.ndarray, seen: np.ndarray, axis: int) -> np.ndarray:
    """``np.gradient(ref, axis=axis)``, but one-sided where one neighbour along ``axis`` is not
    ``seen``, and 0 where neither is or the pixel itself is not.

    Example
    -------
    >>> r = np.array([[0.0, 0.0, 5.0, 6.0, 7.0]], np.float32)
    >>> _seen_gradient(r, r > 0, 1)
    array([[0., 0., 1., 1., 1.]], dtype=float32)
    """
    g = np.gradient(ref, axis=axis)
    if seen.all() or ref.shape[axis] < 3:
        return g
    r = np.moveaxis(ref, axis, -1)
    m = np.moveaxis(seen, axis, -1)
    gv = np.moveaxis(g, axis, -1)                   # a view: written through
    lo, hi = m[..., :-2], m[..., 2:]                # the neighbours of the inner pixels
    inner = gv[..., 1:-1]
    only_hi = hi & ~lo
    only_lo = lo & ~hi
    inner[only_hi] = (r[..., 2:] - r[..., 1:-1])[only_hi]
    inner[only_lo] = (r[..., 1:-1] - r[..., :-2])[only_lo]
    inner[~lo & ~hi] = 0.0
    gv[..., 0][~m[..., 1]] = 0.0                    # array edges: their one neighbour unseen
    gv[..., -1][~m[..., -2]] = 0.0
    gv[~m] = 0.0
    return g


class ShiftSmoother:
    """Shift images by a subpixel amount and smooth them with a Gaussian, in one FFT pair.

    With ``step`` > 1 the result is sampled every ``step`` px (output pixel j is input position
    step·j): the inverse FFT then only covers the low frequencies, which the smoothing keeps
    anyway, so it costs less and everything after it works on step² fewer pixels.

    Parameters
    ----------
    shape : (ny, nx) of the input images (multiples of ``step``).
    sigma_px : Gaussian standard deviation (input px); 0 for no smoothing.
    step : output sampling step (input px), 1 or 2.

    Example
    -------
    >>> import numpy as np
    >>> a = np.zeros((16, 16), np.float32); a[5, 5] = 1
    >>> b = ShiftSmoother(a.shape, 0).apply(a, 2, -1)   # content moves by (+2, -1)
    >>> [int(v) for v in np.unravel_index(int(np.argmax(b)), b.shape)]
    [4, 7]
    """

    def __init__(self, shape, sigma_px: float = 1.5, workers: int = 2, step: int = 1):
        self.shape = tuple(int(s) for s in shape)
        self.step = int(step)
        self.workers = workers
        ny, nx = self.shape
        self.out_shape = (ny // self.step, nx // self.step)
        my, mx = self.out_shape
        ky = sfft.fftfreq(ny)
        kx = sfft.rfftfreq(nx)
        if self.step > 1:   # keep the frequencies the output grid can hold
            self.rows = np.r_[0:my // 2, ny - my // 2:ny]
            self.ncols = mx // 2 + 1
            ky, kx = ky[self.rows], kx[:self.ncols]
        self.ky, self.kx = ky.astype(np.float64), kx.astype(np.float64)
        s = float(sigma_px)
        self.gy = np.exp(-2 * (np.pi * s * self.ky) ** 2)
        self.gx = np.exp(-2 * (np.pi * s * self.kx) ** 2) / (self.step * self.step)

    def apply(self, img: np.ndarray, dx: float, dy: float) -> np.ndarray:
        """Return ``img`` with its content moved by (+dx, +dy) px and smoothed (float32, ``out_shape``)."""
        a = np.asarray(img, np.float32)
        if self.step > 1:
            # only the kept columns go through the FFT along the columns (the same numbers as
            # rfft2 and then the selection, in about 80 % of the time)
            spec = sfft.rfft(a, axis=1, workers=self.workers)[:, :self.ncols]
            spec = sfft.fft(spec, axis=0, workers=self.workers, overwrite_x=True)[self.rows]
        else:
            spec = sfft.rfft2(a, workers=self.workers)
        hy = (self.gy * np.exp(-2j * np.pi * self.ky * dy)).astype(np.complex64)
        hx = (self.gx * np.exp(-2j * np.pi * self.kx * dx)).astype(np.complex64)
        spec *= hy[:, None]
        spec *= hx[None, :]
        return sfft.irfft2(spec, s=self.out_shape, workers=self.workers)


def upsample_fourier(img: np.ndarray, factor: int = 2) -> np.ndarray:
    """Band-limited upsampling: output pixel factor·j is input pixel j (float32).

    Example
    -------
    >>> import numpy as np
    >>> x = np.cos(2 * np.pi * np.arange(8) / 8)[None, :].repeat(4, 0)
    >>> u = upsample_fourier(x)
    >>> bool(np.allclose(u[::2, ::2], x, atol=1e-6)) and u.shape == (8, 16)
    True
    """
    img = np.asarray(img, np.float32)
    if factor == 1:
        return img
    ny, nx = img.shape
    spec = sfft.rfft2(img)
    out = np.zeros((ny * factor, nx * factor // 2 + 1), np.complex64)
    h = ny // 2
    out[:h, :nx // 2 + 1] = spec[:h]
    out[-(ny - h):, :nx // 2 + 1] = spec[h:]
    return sfft.irfft2(out, s=(ny * factor, nx * factor)) * np.float32(factor * factor)


def valid_slices(shape, dx: float, dy: float, margin: int) -> tuple[slice, slice]:
    """Rows/columns of a frame moved by (−dx, −dy) whose content came from inside the frame.

    ``margin`` px more are dropped on every side (wrap-around of the FFT smoothing).

    Example
    -------
    >>> valid_slices((100, 100), 3.5, -2.0, 5)
    (slice(7, 95, None), slice(5, 91, None))
    """
    ny, nx = shape
    y0 = margin + max(0, int(np.ceil(-dy)))
    y1 = ny - margin - max(0, int(np.ceil(dy)))
    x0 = margin + max(0, int(np.ceil(-dx)))
    x1 = nx - margin - max(0, int(np.ceil(dx)))
    return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))


@numba.njit(cache=True, nogil=True)
def _row_offsets_rows(diff, lim1, lim2, second, keep, has_keep, y0, y1):
    """Per row, in place: subtract the mean of diff clipped to ±lim1, then (if ``second``) the mean
    of the result clipped to ±lim2; means over ``keep`` only if ``has_keep`` (float32, summed in
    numpy's order: the numbers of the numpy steps, bit for bit)."""
    ny, nx = diff.shape
    buf = np.empty(nx, np.float32)
    zero = np.float32(0.0)
    for y in range(y0, y1):
        row = diff[y]
        n = np.float32(nx)
        if has_keep:
            c = 0
            for x in range(nx):
                if keep[y, x]:
                    c += 1
            n = np.float32(max(c, 1))
        for p in range(2 if second else 1):
            lim = lim1 if p == 0 else lim2
            for x in range(nx):
                v = min(max(row[x], -lim), lim)
                buf[x] = (v if keep[y, x] else v * zero) if has_keep else v
            m = pairwise_sum_f32(buf, 0, nx) / n
            for x in range(nx):
                row[x] = row[x] - m


@numba.njit(cache=True, nogil=True, parallel=True)
def _row_offsets(diff, lim1, lim2, second, keep, has_keep):
    """:func:`_row_offsets_rows` over all rows, blocks of rows in parallel."""
    ny = diff.shape[0]
    nb = min(ROW_BLOCKS, ny)
    for blk in numba.prange(nb):
        _row_offsets_rows(diff, lim1, lim2, second, keep, has_keep, blk * ny // nb, (blk + 1) * ny // nb)


def remove_row_offsets(diff: np.ndarray, clip: float | None = None, exclude: np.ndarray | None = None) -> np.ndarray:
    """Subtract each row's (clipped) mean in place (scan-line noise) and return ``diff``.

    ``clip``: values are limited to ±clip (around a first, widely clipped estimate) before
    averaging, so a bright streak or a seed in a row does not shift the whole row (a clipped mean
    is as robust as a median here, and much cheaper). ``exclude`` (bool, like ``diff``): pixels
    left out of the means (known changes).

    Example
    -------
    >>> import numpy as np
    >>> d = np.ones((3, 4)) * np.array([[1.], [2.], [3.]])
    >>> float(np.abs(remove_row_offsets(d)).max())
    0.0
    """
    if clip is None and exclude is None:
        diff -= diff.mean(axis=1, keepdims=True)
        return diff
    if diff.dtype != np.float32:
        # (the compiled pass is for float32 images; others go through float32 and back)
        d32 = remove_row_offsets(diff.astype(np.float32), clip, exclude)
        diff[...] = d32
        return diff
    # rows through known changes (growing seeds) are measured on the rest of the row only, so
    # that a row of seeds does not shift the whole row the other way. Two passes: a row offset
    # larger than the clip itself (strong scan noise) is found first with a wide clip, then refined
    # around it with the narrow one.
    lim1 = np.float32(np.inf if clip is None else 4 * clip)
    lim2 = np.float32(np.inf if clip is None else clip)
    keep = np.zeros((1, 1), np.bool_) if exclude is None else ~np.asarray(exclude, bool)
    _row_offsets(diff, lim1, lim2, clip is not None, keep, exclude is not None)
    return diff


class DifferentialImager:
    """Running drift-corrected reference and noise-normalised differential images.

    Everything lives on a working grid of ``shape`` = frame shape // ``step`` (pixel j of the grid
    is frame position step·j); ``step`` 2 is for large frames, where the smoothing has removed
    what a finer grid would hold.

    Parameters
    ----------
    shape : frame shape (ny, nx); with ``step`` 2 a last odd row/column is dropped.
    sigma_px : smoothing (matched to the smallest seeds), px.
    alpha : reference update rate per frame (after the first ``1/alpha`` frames, which are averaged).
    beta : variance update rate per frame.
    clip_sigma : per-frame change of the reference is clipped to ± clip_sigma·σ.
    n_bins : number of reference-level bins of the noise model.
    step : working grid step (frame px).

    After the first ``n_init`` frames (None), the differential is all zeros until the noise
    model has 20 sampled pixels in a reference-level bin; a 64 px frame never gets there.

    Example
    -------
    A 4 × 4 px change (+60 counts on 100, about 6 σ per pixel) appears in frame 7 of ten:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> im = DifferentialImager((96, 96))
    >>> for k in range(10):
    ...     f = rng.poisson(100, (96, 96)).astype(np.float32)
    ...     if k >= 7:
    ...         f[40:44, 60:64] += 60
    ...     z = im.update(f, 0.0, 0.0)
    >>> y, x = np.unravel_index(np.argmax(z), z.shape)
    >>> int(y), int(x), round(float(z[y, x]))       # the change (smoothed), at 18 σ
    (42, 62, 18)
    >>> rest = np.abs(z); rest[36:48, 56:68] = 0
    >>> bool(rest.max() < 4)                        # elsewhere only noise, below 4 σ
    True
    """

    def __init__(self, shape, sigma_px: float = 1.5, alpha: float = 0.1, beta: float = 0.1,
                 clip_sigma: float = 2.5, n_bins: int = 24, step: int = 1, workers: int = 2):
        self.n_bins = int(n_bins)
        self.step = int(step)
        self.n_init = 3
        #: frames a pixel's reference must hold (beyond the first n_init) before it gives a differential,
        #: where the drift brought it into view later than the rest
        self.young_frames = 6
        #: |z| above which a pixel of a frame does not update the reference
        self.outlier_sigma = 3.5
        self.pixel_floor = 0.5
        self._lvar = None     # variance of the differential per reference-level bin
        self._s2 = 0.0        # its median
        self._sd = None       # σ per working pixel
        st = int(step)
        self.frame_shape = (int(shape[0]) // st * st, int(shape[1]) // st * st)
        self.shape = (self.frame_shape[0] // st, self.frame_shape[1] // st)  # working grid
        self.sigma_px = float(sigma_px)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.clip_sigma = float(clip_sigma)
        self.margin = int(np.ceil(3 * self.sigma_px / self.step)) + 2      # working px
        self.smoother = ShiftSmoother(self.frame_shape, self.sigma_px, workers=workers, step=self.step)
        self.reference: np.ndarray | None = None   # smoothed, first-frame coordinates
        self.nseen: np.ndarray | None = None       # frames that went into the reference, per pixel
        #: frames averaged into the reference per pixel (float32): stops where a change is under way or a
        #: frame was an outlier; its inverse is the variance of the reference's own noise relative to a
        #: frame's (see :meth:`reference_variance`)
        self.nref: np.ndarray | None = None
        self.count = 0
        self.last_valid: tuple[slice, slice] | None = None
        self._grad = None          # (gx, gy, gx² + gy²) of the reference, working grid
        self._from_start = None    # pixels whose reference is the median of the first n_init frames
        #: variance (working px²) of the residual shift left after registration, measured
        self.shift_var = 0.0

    # -- noise: the variance of the differential as a function of the reference level (counting
    #    noise grows with the signal, a detector offset and read noise add a constant), measured
    #    from the frames themselves, plus the residual-shift term ∝ |∇R|²
    def _level_bins(self, sl) -> None:
        """Fix the level bins: quantiles of the reference (dense where most pixels are)."""
        r = self.reference[sl][::2, ::2].ravel()
        # quantiles (dense where most pixels are) and equal steps (the few bright particles get
        # bins of their own)
        q = np.unique(np.r_[np.percentile(r, np.linspace(0, 100, self.n_bins + 1)),
                            np.linspace(r.min(), r.max(), self.n_bins + 1)])
        if q.size < 2:
            q = np.array([r.min() - 1.0, r.max() + 1.0])
        self._edges = q
        self._lvl = 0.5 * (q[:-1] + q[1:])
        self._lvar = None

    def _update_level_var(self, d: np.ndarray, sl, exclude, first: bool) -> None:
        """Per level bin: the clipped mean of d² over pixels without known change (running average).

        Pixels at the steepest 10 % of the gradients are left to the shift term.
        """
        r = self.reference[sl][::2, ::2]
        dd = d[::2, ::2]
        ok = self._inner(r.shape)
        if exclude is not None:
            ok &= ~exclude[::2, ::2]
        if self._grad is not None:
            g2 = self._grad[2][sl][::2, ::2]
            ok &= g2 <= np.percentile(g2, 90)
        q = dd * dd
        if self._lvar is not None:
            lim = 16.0 * np.interp(r, self._lvl, self._lvar)
            ok &= q < lim
            corr = 0.9989   # E[z² | |z| < 4] of a normal z
        else:   # first estimate: clip at 4 robust σ of the whole frame
            s2 = (1.4826 * np.median(np.abs(dd[ok]))) ** 2
            ok &= q < 16 * s2
            corr = 0.9989
        idx = np.clip(np.searchsorted(self._edges, r[ok], "right") - 1, 0, len(self._lvl) - 1)
        n = np.bincount(idx, minlength=len(self._lvl))
        m = np.bincount(idx, weights=q[ok], minlength=len(self._lvl)) / np.maximum(n, 1) / corr
        good = n >= 20
        if not good.any():
            return
        m = np.where(good, m, np.interp(self._lvl, self._lvl[good], m[good]))
        if self._lvar is None:
            self._lvar = m
        else:
            beta = max(self.beta, 1.0 / max(1, self.count - self.n_init + 1))
            self._lvar = np.where(good, self._lvar + beta * (m - self._lvar), self._lvar)
        self._s2 = float(np.median(self._lvar))

    def _remove_level_bias(self, d: np.ndarray, sl, exclude) -> None:
        """Remove, in place, the mean of ``d`` per reference-level bin where it is not negligible.

        The brightness match (a straight line, :meth:`_match_brightness`) leaves a bias at the ends
        of the level range when its slope is a little off: in the vacuum next to a bright electrode
        band, where the noise is smallest, 0.3–0.7 σ over whole columns, which the evidence sums
        into false seeds. The mean per bin (values clipped at ± 3 σ, pixels of known changes left
        out, bins of ≥ 200 sampled pixels only) is subtracted when one bin's exceeds 0.1 σ.
        """
        if self._sd is None:
            return
        r = self.reference[sl][::2, ::2]
        s = self._sd[sl][::2, ::2]
        ok = self._inner(r.shape)
        if exclude is not None:
            ok &= ~exclude[::2, ::2]
        nl = len(self._lvl)
        n, sx, ss = _level_sums(d[::2, ::2], r, s, ok, np.asarray(self._edges, np.float64), nl)
        m = sx / np.maximum(n, 1)
        m = np.where(n >= 200, m, 0.0)
        sb = ss / np.maximum(n, 1)
        if not np.any(np.abs(m) > 0.1 * np.maximum(sb, 1e-30)):
            return
        _sub_interp(d, self.reference[sl], self._lvl, m)

    def _sd_map(self) -> None:
        """σ per working pixel from the level model and the shift term (refreshed every 4 frames)."""
        # v = interp(R; levels, variances) (+ shift_var·|∇R|²), at least 1e-6 of the median; σ = √v
        xp, fp, slopes, start = interp_tables(self._lvl, self._lvar)
        has_shift = self._grad is not None and self.shift_var > 0
        sd = np.empty(self.reference.shape, np.float32)
        _sd_from_model(self.reference, xp, fp, slopes, start, self._grad[2] if has_shift else self.reference,
                       np.float32(self.shift_var), has_shift, np.float32(1e-6 * self._s2 + 1e-30), sd)
        self._sd = sd

    def _match_brightness(self, av: np.ndarray, rv: np.ndarray, ready: np.ndarray | None,
                          keep: np.ndarray | None = None) -> None:
        """Bring the frame to the reference's brightness, in place: av ← (av − o) / g.

        Gain g and offset o come from a straight line through the frame's mean against the
        reference's mean in bins of equal width in reference level (on a 1-in-16 subsample): the
        slope is the median of the slopes between all pairs of bins (Theil–Sen), so the few bright
        particles weigh as much as the background, and bins that do not follow the line (a
        detector clipping the dark end at zero) do not bend it. A detector offset then does not
        turn a dose-dependent signal decay into false changes on bright particles. With too
        little contrast for a fit, only the mean ratio is matched.
        """
        sa, sr = av[::4, ::4], rv[::4, ::4]
        m = np.ones(sa.shape, bool)
        if ready is not None:
            m &= ready[::4, ::4]
        if keep is not None:
            m &= keep[::4, ::4]
        sa, sr = sa[m], sr[m]
        if sa.size < 16:
            return
        sa = sa.astype(np.float64).ravel()
        sr = sr.astype(np.float64).ravel()
        ma, mr = sa.mean(), sr.mean()
        vr = float(np.mean((sr - mr) ** 2))
        noise = self._s2 if self._lvar is not None else np.inf
        if vr > 25.0 * noise:
            lo, hi = np.percentile(sr, [0.5, 99.9])
            nb = 24
            idx = np.clip(((sr - lo) / max(hi - lo, 1e-12) * nb).astype(int), 0, nb - 1)
            n = np.bincount(idx, minlength=nb)
            ok = n >= 8
            if ok.sum() >= 3:
                xr = (np.bincount(idx, weights=sr, minlength=nb) / np.maximum(n, 1))[ok]
                xa = (np.bincount(idx, weights=sa, minlength=nb) / np.maximum(n, 1))[ok]
                i, j = np.triu_indices(len(xr), 1)
                g = float(np.median((xa[j] - xa[i]) / (xr[j] - xr[i])))
                if 0.2 < g < 5.0:
                    o = float(np.median(xa - g * xr))
                    av -= np.float32(o)
                    av *= np.float32(1.0 / g)
                    return
        if mr > 0 and ma > 0:
            av *= np.float32(mr / ma)

    @property
    def seen(self) -> np.ndarray:
        """Where the reference holds data (at least one frame)."""
        return self.nseen > 0

    def _probation(self, sl, av: np.ndarray, mask: np.ndarray) -> None:
        """Start the reference where it has fewer than ``n_init`` frames: the median of the first 3.

        A one-frame artefact in one of them (also where the drift brings new specimen into view)
        never enters the reference, so it cannot look like a persistent change later.
        """
        rv, ns = self.reference[sl], self.nseen[sl]
        p1, p2 = self._p1[sl], self._p2[sl]
        for n in (2, 1, 0):
            m = mask & (ns == n)
            if not m.any():
                continue
            x = av[m]
            if n == 0:
                p1[m] = x
                rv[m] = x
            elif n == 1:
                p2[m] = x
                rv[m] = 0.5 * (p1[m] + x)
            else:
                a1, a2 = p1[m], p2[m]
                rv[m] = np.maximum(np.minimum(a1, a2), np.minimum(np.maximum(a1, a2), x))
                if self._early is not None:
                    self._early[0][sl][m] = x
            ns[m] = n + 1
            self.nref[sl][m] = n + 1

    def _restart_median(self, sl, av: np.ndarray, ready: np.ndarray) -> None:
        """At the 5th frame, the reference of the pixels seen from the start becomes the median of
        the first 5 frames: a one-frame artefact at the same place in two of the first three
        (which the median of 3 kept) is then outvoted, before any evidence is accumulated."""
        k = self.count - self.n_init
        if k == 1:
            self._early[1][sl] = av
        elif k == 2:
            m = ready & (self.nseen[sl] >= self.n_init + 1)
            if m.any():
                stack = np.stack([self._p1[sl][m], self._p2[sl][m], self._early[0][sl][m],
                                  self._early[1][sl][m], av[m]])
                rv = self.reference[sl]
                med = np.median(stack, axis=0)
                change = np.full(rv.shape, np.nan, np.float32)
                change[m] = med - rv[m]
                rv[m] = med
                self._shift_rest_of_rows(sl, m, change)
            self._early = None

    def _shift_rest_of_rows(self, sl, m: np.ndarray, change: np.ndarray) -> None:
        """Move the reference of the other pixels of the rows of ``m`` whose reference is the
        median of the same first ``n_init`` frames (those the drift has since carried out of view,
        outside ``sl``, or back into it) by the median ``change`` (NaN off ``m``) of its row.

        The median of 5 frames has other scan-line offsets than the median of 3 it replaces. A
        pixel left at the old level is a step of several σ against its row, which the removal of
        the row offsets shows as a change; being an outlier, it never enters the reference (a
        column of false seeds along the edge where the drift brought those pixels back, widened
        family series 2001: 7 false seeds at x ≈ 500).
        """
        rows = np.flatnonzero(m.any(axis=1))
        if rows.size == 0 or self._from_start is None:
            return
        shift = np.nanmedian(change[rows], axis=1).astype(np.float32)[:, None]
        at = sl[0].start + rows
        rest = self._from_start[at]          # (others started from other frames, with other offsets)
        rest[:, sl[1]] &= ~m[rows]
        self.reference[at] += np.where(rest, shift, np.float32(0.0))

    def update(self, frame: np.ndarray, dx: float, dy: float, freeze: np.ndarray | None = None) -> np.ndarray | None:
        """Feed one frame with its drift (dx, dy) (frame px); return the differential in σ (float32).

        The differential is on the working grid (``shape``). Returns None for the first
        ``n_init`` (3) frames: their pixel-wise median starts the reference. Outside the region
        covered by both the frame and a ready reference the differential is 0.

        ``freeze`` (bool, working grid): pixels where a change is under way. The reference and
        the noise estimates are not updated there, so the reference stays the specimen as it
        was before the change (a growing seed does not fade out of the differential image).
        """
        ny, nx = self.frame_shape
        a = self.smoother.apply(np.asarray(frame)[:ny, :nx], -dx, -dy)
        sl = valid_slices(self.shape, dx / self.step, dy / self.step, self.margin)
        self.last_valid = sl
        self.count += 1
        if self.reference is None:
            self.reference = np.zeros(self.shape, np.float32)
            self.nseen = np.zeros(self.shape, np.uint8)
            self.nref = np.zeros(self.shape, np.float32)
            self._p1 = np.zeros(self.shape, np.float32)
            self._p2 = np.zeros(self.shape, np.float32)
            self._early = [np.zeros(self.shape, np.float32), np.zeros(self.shape, np.float32)]
            self._pvar = np.zeros(self.shape, np.float32)
            self._pmean = np.zeros(self.shape, np.float32)
        av, rv, ns = a[sl], self.reference[sl], self.nseen[sl]
        if av.size == 0:
            return None if self._lvar is None else np.zeros(self.shape, np.float32)
        ready = ns >= self.n_init
        n_ready = int(np.count_nonzero(ready))
        if n_ready == 0:
            self._probation(sl, av, np.ones(av.shape, bool))
            if self.count == self.n_init:
                self._from_start = self.nseen == self.n_init
            return None
        part = n_ready < ready.size
        new = ~ready if part else None
        fz = freeze[sl] if freeze is not None else None
        self._match_brightness(av, rv, ready if part else None, None if fz is None else ~fz)
        d = np.subtract(av, rv)
        if part:
            d[new] = 0.0
        if self._grad is not None:
            self._refine_shift(d, fz, new)
        first = self._lvar is None
        if first:
            self._level_bins(sl)
            dd = d - np.median(d, axis=1, keepdims=True)
            self._update_level_var(dd, sl, new, True)
            if self._lvar is None:
                return np.zeros(self.shape, np.float32)
            self._gradients()
            self._sd_map()
        c0 = d[:, 0].copy() if part else None
        remove_row_offsets(d, clip=3.0 * float(np.sqrt(self._s2)), exclude=fz)
        # this frame's row offsets (scan-line noise) against the reference, for the new pixels
        row_off = (c0 - d[:, 0])[:, None] if part else None
        if not first:
            self._remove_level_bias(d, sl, fz if new is None else (new if fz is None else (fz | new)))
        if part:
            d[new] = 0.0
        # per-pixel floor: the running variance of d about its running mean can only raise σ where
        # the block model is too low (inside bright particles). About the mean, so that a seed
        # (a persistent change) does not raise its own σ; a 3×3 mean keeps the scatter small.
        # Then z = d / σ and the clipped update of the reference: at most clip_sigma·σ·alpha per
        # frame; the reference is the specimen before any change: no update where a change is
        # under way, nor, once it holds a few frames, where this frame is an outlier (a one-frame
        # artefact must not enter it; a young reference must still correct its own errors).
        # One pass per pixel in two compiled kernels (rows in parallel).
        beta = np.float32(max(self.beta, 1.0 / max(1, self.count - self.n_init)))
        hold = new if fz is None else (fz if new is None else (fz | new))
        no_mask = np.zeros((1, 1), np.bool_)
        spread = np.empty(d.shape, np.float32)
        _pixel_spread(d, self._sd[sl], self._pmean[sl], self._pvar[sl], no_mask if hold is None else hold,
                      hold is not None, beta, spread)
        z = np.zeros(self.shape, np.float32)
        zv = z[sl]
        sd = np.empty(d.shape, np.float32)
        rate = np.float32(max(self.alpha, 1.0 / max(1, self.count - self.n_init + 1)))
        # (an exponential average of weight alpha holds about 2/alpha − 1 frames)
        _normalise_and_step(d, self._sd[sl], spread, np.float32(self.pixel_floor), np.float32(self.clip_sigma),
                            rate, np.float32(self.outlier_sigma), self.count > self.n_init + 5,
                            no_mask if fz is None else fz, fz is not None, ready, self.nref[sl],
                            np.float32(2.0 / self.alpha - 1), zv, sd)
        rv += d
        if part:
            # the new pixels' reference starts at its row's level: without the frame's row offsets,
            # as the differential is taken (else the offsets of the frames it starts from stay in
            # it: a step of up to several σ against the row, z spread 2.7 in 4013's first column)
            self._probation(sl, av - row_off, new)
        self._restart_median(sl, av, ready)
        # pixels whose reference is much younger than the rest (brought into view by the drift):
        # their reference still carries the noise of a few frames, so no differential there yet
        np.add(ns, 1, out=ns, where=ready & (ns < 255))
        young = ns < min(self.count, self.n_init + self.young_frames) - 1
        if young.any():
            zv[young] = 0.0
            new = young if new is None else (new | young)
        excl = new if fz is None else (fz if new is None else (fz | new))
        # the noise model settles in the first frames; later it changes slowly: every 2nd frame
        if self.count < self.n_init + 10 or self.count % 2 == 0:
            if not first:
                self._update_level_var(zv * sd, sl, excl, False)
            self._update_shift_var(zv, sd, sl, excl)
        # the noise model settles over the first frames (the shift term starts at 0): refresh the
        # σ map every frame then, later every 4 frames (the reference changes slowly)
        if self.count % 4 == 0 or self.count < self.n_init + 10:
            self._gradients()
            self._sd_map()
        return z

    def reference_variance(self, where: np.ndarray) -> np.ndarray:
        """Variance of the reference's own noise relative to one frame's (1 / frames averaged), at the
        pixels ``where`` (bool, working grid), 0 elsewhere (float32).

        Where the reference has stopped following (a change under way) its error no longer
        shrinks while the rest of the reference's does: every later differential there shares it.
        """
        out = np.zeros(self.shape, np.float32)
        if self.nref is not None:
            m = where & (self.nref > 0)
            out[m] = np.float32(1.0) / self.nref[m]
        return out

    @staticmethod
    def _inner(shape, border: int = 3) -> np.ndarray:
        """True but on a border of ``border`` px (of a 2× subsampled region): the pixels next to the
        edge of the valid region carry the last of the FFT wrap-around and steep false gradients."""
        m = np.zeros(shape, bool)
        m[border:-border or None, border:-border or None] = True
        return m

    def _gradients(self) -> None:
        """Gradients of the reference (per working px) and their squared norm, for the shift terms.

        Central differences, one-sided next to pixels the reference has never seen (0 there): at
        the edge of the seen region a central difference against that 0 is the whole reference
        level per 2 px, and the shift terms built on it made the first valid column a column of
        false changes (widened configuration 4013: z spread 20 σ there, in vacuum, once the
        drift brought the valid region back to the edge of the seen one)."""
        seen = self.seen
        gy, gx = (_seen_gradient(self.reference, seen, axis) for axis in (0, 1))
        self._grad = (gx, gy, gx * gx + gy * gy)

    def _refine_shift(self, d: np.ndarray, freeze, new) -> None:
        """Remove the part of ``d`` (in place) that a residual shift of the frame explains.

        The phase correlation leaves an error of a few hundredths of a pixel; at a sharp edge (the
        electrode band next to vacuum, a particle) that is a residual of several σ. Drift *during*
        the scan adds a shift that grows with the row (the rows are scanned one after the other: a
        shear of the fast axis and a stretch of the slow one) that a rigid registration cannot
        follow. A least-squares fit d ≈ gx·(δx + βx·ŷ) + gy·(δy + βy·ŷ) over the frame (ŷ: row
        position, −½ … ½ over the frame; four numbers per frame) takes both out to first order;
        small seeds hardly weigh in the fit.
        """
        sl = self.last_valid
        gxf, gyf = self._grad[0][sl], self._grad[1][sl]
        gx, gy, ds = gxf[::2, ::2], gyf[::2, ::2], d[::2, ::2]
        yh = ((np.arange(sl[0].start, sl[0].stop, dtype=np.float32) - 0.5 * self.shape[0])
              / np.float32(self.shape[0]))[:, None]
        w = self._inner(ds.shape)
        if freeze is not None:
            w &= ~freeze[::2, ::2]
        if new is not None:
            w &= ~new[::2, ::2]
        ys = np.broadcast_to(yh[::2], gx.shape)[w]
        gx, gy, ds = gx[w], gy[w], ds[w]
        cols = np.stack([gx, gy, gx * ys, gy * ys]).astype(np.float64)
        a = cols @ cols.T
        b = cols @ ds.astype(np.float64)
        if not np.isfinite(a).all() or np.linalg.cond(a) > 1e6:
            return
        sx, sy, bx, by = np.linalg.solve(a, b)
        # d −= (δx + βx·ŷ)·gx + (δy + βy·ŷ)·gy, in one compiled pass
        _sub_shift(d, (np.float32(sx) + np.float32(bx) * yh).ravel(), gxf,
                   (np.float32(sy) + np.float32(by) * yh).ravel(), gyf)

    def _update_shift_var(self, zv: np.ndarray, sd: np.ndarray, sl, exclude) -> None:
        """Fit the variance of the residual shift (px²): excess d² over the counting noise vs |∇R|².

        Measured on the steepest 2 % of the pixels (edges), where the term matters.
        """
        if self._grad is None:
            return
        g2 = self._grad[2][sl][::2, ::2]
        ok = self._inner(g2.shape)
        if exclude is not None:
            ok &= ~exclude[::2, ::2]
        cut = np.percentile(g2[ok], 98) if ok.any() else 0.0
        sel = ok & (g2 >= cut) & (g2 > 0)
        if sel.sum() < 20:
            return
        d2 = (zv[::2, ::2][sel] * sd[::2, ::2][sel]) ** 2
        base = d2 - np.interp(self.reference[sl][::2, ::2][sel], self._lvl, self._lvar)
        est = max(0.0, float(np.sum(g2[sel] * base) / np.sum(g2[sel] ** 2)))
        beta = max(self.beta, 1.0 / max(1, self.count - self.n_init))
        self.shift_var += beta * (est - self.shift_var)
