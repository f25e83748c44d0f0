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

__all__ = ["ShiftSmoother", "valid_slices", "remove_row_offsets", "DifferentialImager"]


class ShiftSmoother:
    """Shift images by a subpixel amount and smooth them with a Gaussian, in one FFT pair.

    Parameters
    ----------
    shape : (ny, nx).
    sigma_px : Gaussian standard deviation (px); 0 for no smoothing.

    Example
    -------
    >>> import numpy as np
    >>> a = np.zeros((16, 16), np.float32); a[5, 5] = 1
    >>> b = ShiftSmoother(a.shape, 0).apply(a, 2, -1)   # content moves by (+2, -1)
    >>> np.unravel_index(int(np.argmax(b)), b.shape)
    (np.int64(4), np.int64(7))
    """

    def __init__(self, shape, sigma_px: float = 1.5, workers: int = 2):
        self.shape = tuple(int(s) for s in shape)
        self.workers = workers
        self.ky = sfft.fftfreq(self.shape[0]).astype(np.float64)
        self.kx = sfft.rfftfreq(self.shape[1]).astype(np.float64)
        s = float(sigma_px)
        self.gy = np.exp(-2 * (np.pi * s * self.ky) ** 2)
        self.gx = np.exp(-2 * (np.pi * s * self.kx) ** 2)

    def apply(self, img: np.ndarray, dx: float, dy: float) -> np.ndarray:
        """Return ``img`` with its content moved by (+dx, +dy) px and smoothed (float32)."""
        spec = sfft.rfft2(np.asarray(img, np.float32), workers=self.workers)
        hy = (self.gy * np.exp(-2j * np.pi * self.ky * dy)).astype(np.complex64)
        hx = (self.gx * np.exp(-2j * np.pi * self.kx * dx)).astype(np.complex64)
        spec *= hy[:, None]
        spec *= hx[None, :]
        return sfft.irfft2(spec, s=self.shape, workers=self.workers)


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

    ``clip``: values are limited to ±clip before averaging, so a bright streak or a seed in a row
    does not shift the whole row (a clipped mean is as robust as a median here, and much cheaper).

    Example
    -------
    >>> import numpy as np
    >>> d = np.ones((3, 4)) * np.array([[1.], [2.], [3.]])
    >>> float(np.abs(remove_row_offsets(d)).max())
    0.0
    """
    src = diff if clip is None else np.clip(diff, -clip, clip)
    diff -= src.mean(axis=1, keepdims=True)
    return diff


class DifferentialImager:
    """Running drift-corrected reference and noise-normalised differential images.

    Parameters
    ----------
    shape : frame shape (ny, nx).
    sigma_px : smoothing (matched to the smallest seeds), px.
    alpha : reference update rate per frame (after the first ``1/alpha`` frames, which are averaged).
    beta : variance update rate per frame.
    clip_sigma : per-frame change of the reference is clipped to ± clip_sigma·σ.

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
                 clip_sigma: float = 2.5, block: int = 8, workers: int = 2):
        self.block = int(block)
        self.n_init = 3
        self._level = 0.0
        self._init_frames: list = []
        self.shape = tuple(int(s) for s in shape)
        self.sigma_px = float(sigma_px)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.clip_sigma = float(clip_sigma)
        self.margin = int(np.ceil(3 * self.sigma_px)) + 2
        self.smoother = ShiftSmoother(self.shape, self.sigma_px, workers=workers)
        self.reference: np.ndarray | None = None   # smoothed, first-frame coordinates
        self.var: np.ndarray | None = None         # variance of the smoothed difference, per block
        self.seen: np.ndarray | None = None        # reference holds data here
        self.count = 0
        self.last_valid: tuple[slice, slice] | None = None

    # -- noise variance on a coarse grid of block × block px (a per-pixel estimate from a
    #    few frames would be too noisy: its errors give the σ image heavy tails)
    def _init_var(self, s2: float, sl) -> None:
        b = self.block
        cy, cx = -(-self.shape[0] // b), -(-self.shape[1] // b)
        self.var = np.full((cy, cx), s2, np.float32)

    def _var_full(self, sl) -> np.ndarray:
        b = self.block
        # a floor: frames without noise (identical, synthetic) must not divide 0 by 0
        floor = np.float32(max(1e-20, 1e-10 * self._level ** 2))
        full = np.repeat(np.repeat(np.maximum(self.var, floor), b, axis=0), b, axis=1)
        return full[sl]

    def _update_var(self, d2: np.ndarray, sl) -> None:
        b = self.block
        cy, cx = self.var.shape
        acc = np.zeros((cy * b, cx * b), np.float32)
        acc[:] = np.nan
        acc[sl] = d2
        acc = acc.reshape(cy, b, cx, b)
        good = np.isfinite(acc)
        n = good.sum(axis=(1, 3))
        tot = np.where(good, acc, 0).sum(axis=(1, 3))
        ok = n >= (b * b) // 4
        new = np.where(ok, tot / np.maximum(n, 1), self.var)
        beta = max(self.beta, 1.0 / max(1, self.count - 1))   # plain average over the first frames
        self.var += np.float32(beta) * (new - self.var).astype(np.float32)

    def _robust_reference(self) -> None:
        """Replace the reference by the pixel-wise median of the first ``n_init`` frames.

        A one-frame artefact in the very first frame would otherwise sit in the reference and
        look like a persistent change in every later frame.
        """
        stack = np.full((len(self._init_frames),) + self.shape, np.nan, np.float32)
        for i, (a, sl) in enumerate(self._init_frames):
            stack[i][sl] = a[sl]
        ok = np.isfinite(stack).all(axis=0)
        med = np.median(stack, axis=0)
        self.reference[ok] = med[ok]
        # where not every first frame saw the specimen, start afresh from the next frame that does
        self.seen &= ok
        self._init_frames = []

    def update(self, frame: np.ndarray, dx: float, dy: float) -> np.ndarray | None:
        """Feed one frame with its drift (dx, dy) px; return the differential in σ (float32).

        Returns None for the first frame (it becomes the reference). Outside the region
        covered by both the frame and the reference the differential is 0.
        """
        a = self.smoother.apply(frame, -dx, -dy)
        sl = valid_slices(self.shape, dx, dy, self.margin)
        self.last_valid = sl
        self.count += 1
        if self.reference is None:
            self.reference = np.zeros(self.shape, np.float32)
            self.seen = np.zeros(self.shape, bool)
            self.reference[sl] = a[sl]
            self.seen[sl] = True
            self._init_frames = [(a, sl)]
            return None
        if self.count <= self.n_init:
            self._init_frames.append((a, sl))
            if self.count == self.n_init:
                self._robust_reference()
        av, rv, seen = a[sl], self.reference[sl], self.seen[sl]
        new = ~seen
        has_new = bool(new.any())
        if has_new:
            mr = float(rv[seen].mean()) if seen.any() else 0.0
            ma = float(av[seen].mean()) if seen.any() else 0.0
        else:
            mr, ma = float(rv.mean()), float(av.mean())
        if mr > 0 and ma > 0:
            av *= np.float32(mr / ma)     # slow brightness change
        d = av - rv
        if has_new:
            d[new] = 0.0
        if self.var is None:
            self._level = float(np.abs(rv).mean())
            dd = d - d.mean(axis=1, keepdims=True)
            med = np.median(dd)
            s2 = (1.4826 * np.median(np.abs(dd - med))) ** 2
            self._init_var(max(float(s2), 1e-12), sl)
        remove_row_offsets(d, clip=3.0 * float(np.sqrt(np.median(self.var))))
        if has_new:
            d[new] = 0.0
        var = self._var_full(sl)
        z = np.zeros(self.shape, np.float32)
        zv = d / np.sqrt(var)
        z[sl] = zv
        # clipped updates of variance and reference
        lim = np.float32(self.clip_sigma)
        step = np.clip(zv, -lim, lim)
        step *= np.sqrt(var)
        alpha = np.float32(max(self.alpha, 1.0 / self.count))
        rv += alpha * step
        if has_new:
            rv[new] = av[new]
            seen[new] = True
        # variance from the pixels within ±3σ only (changes must not raise their own noise level);
        # 0.9733 = E[z² | |z| < 3] for a normal z
        d2 = d * d
        d2[np.abs(zv) >= 3.0] = np.nan
        if has_new:
            d2[new] = np.nan
        d2 *= np.float32(1 / 0.9733)
        self._update_var(d2, sl)
        return z
