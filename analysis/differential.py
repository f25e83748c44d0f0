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

import numpy as np
import scipy.fft as sfft
from scipy import ndimage as ndi

__all__ = ["ShiftSmoother", "upsample_fourier", "valid_slices", "remove_row_offsets", "DifferentialImager"]


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
        spec = sfft.rfft2(np.asarray(img, np.float32), workers=self.workers)
        if self.step > 1:
            spec = spec[self.rows, :self.ncols]
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


def remove_row_offsets(diff: np.ndarray, clip: float | None = None) -> np.ndarray:
    """Subtract each row's (clipped) mean in place (scan-line noise) and return ``diff``.

    ``clip``: values are limited to ±clip (around a first, widely clipped estimate) before
    averaging, so a bright streak or a seed in a row does not shift the whole row (a clipped mean
    is as robust as a median here, and much cheaper).

    Example
    -------
    >>> import numpy as np
    >>> d = np.ones((3, 4)) * np.array([[1.], [2.], [3.]])
    >>> float(np.abs(remove_row_offsets(d)).max())
    0.0
    """
    if clip is None:
        diff -= diff.mean(axis=1, keepdims=True)
        return diff
    # two passes: a row offset larger than the clip itself (strong scan noise) is found first with
    # a wide clip, then refined around it with the narrow one
    m = np.clip(diff, -4 * clip, 4 * clip).mean(axis=1, keepdims=True)
    diff -= m
    diff -= np.clip(diff, -clip, clip).mean(axis=1, keepdims=True)
    return diff


def _noise_model(level: np.ndarray, var: np.ndarray, n_bins: int = 12):
    """Fit var = icpt + slope·level over blocks (binned medians, bins equally spaced in level).

    Equal spacing keeps the few bright blocks (particles) as their own bins, so they set the
    slope instead of being outvoted by the many background blocks. Returns (slope, icpt), or
    None when there is no usable positive slope.
    """
    x = np.asarray(level, np.float64).ravel()
    y = np.asarray(var, np.float64).ravel()
    ok = np.isfinite(x) & np.isfinite(y) & (y > 0)
    x, y = x[ok], y[ok]
    if x.size < 8:
        return None
    lo, hi = np.percentile(x, [1, 99.9])
    if not hi > lo:
        return None
    edges = np.linspace(lo, hi, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, x, "right") - 1, 0, n_bins - 1)
    bx, by = [], []
    for i in range(n_bins):
        m = idx == i
        if m.sum() >= 3:
            bx.append(np.median(x[m]))
            by.append(np.median(y[m]))
    if len(bx) < 2:
        return None
    slope, icpt = np.polyfit(bx, by, 1)
    return (float(slope), float(icpt)) if slope > 0 else None


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
    block : the noise is estimated per block of block × block working px.
    step : working grid step (frame px).

    Example
    -------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> im = DifferentialImager((64, 64))
    >>> for k in range(6):
    ...     f = rng.poisson(100, (64, 64)).astype(np.float32)
    ...     if k == 5:
    ...         f[30:34, 30:34] += 60
    ...     z = im.update(f, 0.0, 0.0)
    >>> bool(z[31, 31] > 5) and bool(np.abs(z[:20, :20]).max() < 5)
    True
    """

    def __init__(self, shape, sigma_px: float = 1.5, alpha: float = 0.1, beta: float = 0.1,
                 clip_sigma: float = 2.5, block: int = 8, step: int = 1, workers: int = 2):
        self.block = int(block)
        self.step = int(step)
        self.n_init = 3
        self.pixel_floor = 0.5
        self._model = None
        self._level = 0.0
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
        self.var: np.ndarray | None = None         # variance of the smoothed difference, per block
        self.nseen: np.ndarray | None = None       # frames that went into the reference, per pixel
        self.count = 0
        self.last_valid: tuple[slice, slice] | None = None

    # -- noise variance on a coarse grid of block × block px (a per-pixel estimate from a
    #    few frames would be too noisy: its errors give the σ image heavy tails)
    def _init_var(self, s2: float, sl) -> None:
        """Prior: the global variance s2, scaled per block by the reference level (counting noise)."""
        b = self.block
        cy, cx = -(-self.shape[0] // b), -(-self.shape[1] // b)
        self.var = np.full((cy, cx), s2, np.float32)
        ref = self.reference
        by0, bx0 = -(-sl[0].start // b), -(-sl[1].start // b)
        by1, bx1 = sl[0].stop // b, sl[1].stop // b
        if by1 > by0 and bx1 > bx0 and self._level > 0:
            blocks = ref[by0 * b:by1 * b, bx0 * b:bx1 * b].reshape(by1 - by0, b, bx1 - bx0, b).mean(axis=(1, 3))
            rel = np.clip(blocks / self._level, 0.25, 4.0)
            self.var[by0:by1, bx0:bx1] = s2 * rel / float(np.mean(rel))

    def _rep(self, coarse: np.ndarray, sl) -> np.ndarray:
        """A per-block array repeated to pixels over the region ``sl``."""
        b = self.block
        rows = np.repeat(coarse[sl[0].start // b:(sl[0].stop - 1) // b + 1], b, axis=0)
        rows = rows[sl[0].start % b:sl[0].start % b + (sl[0].stop - sl[0].start)]
        full = np.repeat(rows[:, sl[1].start // b:(sl[1].stop - 1) // b + 1], b, axis=1)
        return full[:, sl[1].start % b:sl[1].start % b + (sl[1].stop - sl[1].start)]

    def _block_means(self, img: np.ndarray) -> np.ndarray:
        b = self.block
        cy, cx = self.var.shape
        pad = np.pad(img, ((0, cy * b - img.shape[0]), (0, cx * b - img.shape[1])), mode="edge")
        return pad.reshape(cy, b, cx, b).mean(axis=(1, 3))

    def _sd_full(self, sl) -> np.ndarray:
        """σ per pixel of the region ``sl``.

        Per block from the running estimate, shaped within the block by a noise model
        var = a + b·reference fitted over the blocks (counting noise grows with the signal; the
        fit absorbs a detector offset). Without it a bright particle inside a block of dim
        background would be given the background's σ and flicker as a false change.
        """
        floor = np.float32(max(1e-20, 1e-10 * self._level ** 2))
        sd = self._rep(np.sqrt(np.maximum(self.var, floor)), sl)
        if self._model is None or self.count % 4 == 0:   # the level map and the model change slowly
            rb = self._block_means(self.reference)
            self._model = (rb, _noise_model(rb, self.var))
        rb, fit = self._model
        if fit is not None:
            slope, icpt = np.float32(fit[0]), np.float32(fit[1])
            small = np.float32(0.05 * max(float(np.median(icpt + slope * rb)), 1e-30))
            num = np.maximum(self.reference[sl] * slope + icpt, small)
            den = np.maximum(self._rep(rb.astype(np.float32), sl) * slope + icpt, small)
            num /= den
            np.clip(num, 0.05, 20.0, out=num)
            sd = sd * np.sqrt(num)
        return sd

    def _update_var(self, zv: np.ndarray, sl, exclude: np.ndarray | None) -> None:
        """Blocks fully inside ``sl``: new variance = old × mean(z² over |z| < 3) / 0.9733.

        Pixels that changed (|z| >= 3) do not count, so a seed does not raise its own noise
        level; 0.9733 = E[z² | |z| < 3] for a normal z.
        """
        b = self.block
        y0, x0 = sl[0].start, sl[1].start
        by0, bx0 = -(-y0 // b), -(-x0 // b)
        by1, bx1 = sl[0].stop // b, sl[1].stop // b
        if by1 <= by0 or bx1 <= bx0:
            return
        sub = zv[by0 * b - y0:by1 * b - y0, bx0 * b - x0:bx1 * b - x0]
        q = sub * sub
        ok = q < 9.0
        if exclude is not None:
            ok &= ~exclude[by0 * b - y0:by1 * b - y0, bx0 * b - x0:bx1 * b - x0]
        q *= ok
        shp = (by1 - by0, b, bx1 - bx0, b)
        n = ok.reshape(shp).sum(axis=(1, 3))
        ratio = q.reshape(shp).sum(axis=(1, 3)) / np.maximum(n, 1) / 0.9733
        blk = self.var[by0:by1, bx0:bx1]
        good = n >= (b * b) // 4
        # plain average at first, the prior counting as 4 frames
        beta = max(self.beta, 1.0 / (self.count - self.n_init + 4))
        blk += np.where(good, np.float32(beta) * blk * (ratio.astype(np.float32) - 1), 0).astype(np.float32)

    def _match_brightness(self, av: np.ndarray, rv: np.ndarray, ready: np.ndarray | None) -> None:
        """Bring the frame to the reference's brightness, in place: av ← (av − o) / g.

        Gain g and offset o come from a straight-line fit of the frame against the reference
        (on a 1-in-16 subsample), so a detector offset does not turn a dose-dependent signal
        decay into false changes on bright particles. When the reference has too little
        contrast for a fit, only the mean ratio is matched.
        """
        sa, sr = av[::4, ::4], rv[::4, ::4]
        if ready is not None:
            m = ready[::4, ::4]
            sa, sr = sa[m], sr[m]
        if sa.size < 16:
            return
        sa = sa.astype(np.float64).ravel()
        sr = sr.astype(np.float64).ravel()
        ma, mr = sa.mean(), sr.mean()
        vr = float(np.mean((sr - mr) ** 2))
        noise = float(np.median(self.var)) if self.var is not None else np.inf
        if vr > 25.0 * noise:
            g = float(np.mean((sa - ma) * (sr - mr))) / vr
            if 0.2 < g < 5.0:
                av -= np.float32(ma - g * mr)
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
            ns[m] = n + 1

    def update(self, frame: np.ndarray, dx: float, dy: float) -> np.ndarray | None:
        """Feed one frame with its drift (dx, dy) (frame px); return the differential in σ (float32).

        The differential is on the working grid (``shape``). Returns None for the first
        ``n_init`` (3) frames: their pixel-wise median starts the reference. Outside the region
        covered by both the frame and a ready reference the differential is 0.
        """
        ny, nx = self.frame_shape
        a = self.smoother.apply(np.asarray(frame)[:ny, :nx], -dx, -dy)
        sl = valid_slices(self.shape, dx / self.step, dy / self.step, self.margin)
        self.last_valid = sl
        self.count += 1
        if self.reference is None:
            self.reference = np.zeros(self.shape, np.float32)
            self.nseen = np.zeros(self.shape, np.uint8)
            self._p1 = np.zeros(self.shape, np.float32)
            self._p2 = np.zeros(self.shape, np.float32)
            self._pvar = np.zeros(self.shape, np.float32)
            self._pmean = np.zeros(self.shape, np.float32)
        av, rv, ns = a[sl], self.reference[sl], self.nseen[sl]
        if av.size == 0:
            return None if self.var is None else np.zeros(self.shape, np.float32)
        ready = ns >= self.n_init
        n_ready = int(np.count_nonzero(ready))
        if n_ready == 0:
            self._probation(sl, av, np.ones(av.shape, bool))
            return None
        part = n_ready < ready.size
        new = ~ready if part else None
        self._match_brightness(av, rv, ready if part else None)
        d = np.subtract(av, rv)
        if part:
            d[new] = 0.0
        if self.var is None:
            self._level = float(np.abs(rv[ready]).mean())
            dd = d - d.mean(axis=1, keepdims=True)
            dd = dd[ready] if part else dd
            med = np.median(dd)
            s2 = (1.4826 * np.median(np.abs(dd - med))) ** 2
            self._init_var(max(float(s2), 1e-12), sl)
        remove_row_offsets(d, clip=3.0 * float(np.sqrt(np.median(self.var))))
        if part:
            d[new] = 0.0
        sd = self._sd_full(sl)
        # per-pixel floor: the running variance of d about its running mean can only raise σ where
        # the block model is too low (inside bright particles). About the mean, so that a seed
        # (a persistent change) does not raise its own σ; a 3×3 mean keeps the scatter small.
        beta = np.float32(max(self.beta, 1.0 / max(1, self.count - self.n_init)))
        pm, pv = self._pmean[sl], self._pvar[sl]
        lim3 = np.float32(3.0) * sd
        dc = np.clip(d, -lim3, lim3)
        if part:
            dc[new] = pm[new]
        pm += beta * (dc - pm)
        dc *= dc
        if part:
            dc[new] = pv[new]
        pv += beta * (dc - pv)
        spread = pv - pm * pm
        np.maximum(spread, 0, out=spread)
        floor_sd = np.sqrt(ndi.uniform_filter(spread, 3, mode="nearest"))
        floor_sd *= np.float32(self.pixel_floor)
        sd = np.maximum(sd, floor_sd)
        z = np.zeros(self.shape, np.float32)
        zv = z[sl]
        np.divide(d, sd, out=zv)
        # clipped update of the reference: at most clip_sigma·σ·alpha per frame
        lim = np.float32(self.clip_sigma)
        step = np.clip(zv, -lim, lim, out=d)
        step *= sd
        step *= np.float32(max(self.alpha, 1.0 / max(1, self.count - self.n_init + 1)))
        rv += step
        if part:
            self._probation(sl, av, new)
        self._update_var(zv, sl, new)
        return z
