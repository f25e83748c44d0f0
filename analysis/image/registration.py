"""Subpixel drift measurement by phase correlation.

Conventions (used throughout :mod:`insitu.analysis`): images are ``(ny, nx)``
arrays, ``x`` is the column and ``y`` the row, pixel centres at integers. A shift
``(dx, dy)`` of image ``moving`` against ``reference`` means that a feature at
``p`` in the reference is found at ``p + (dx, dy)`` in ``moving``.

Phase correlation whitens the cross-power spectrum, so a global brightness
change, a slow contrast change or a smoothed reference do not bias the result.
A Gaussian weight on the cross-power spectrum makes the correlation peak
Gaussian, so the integer peak is refined by a 3-point Gaussian fit per axis:
as accurate here as an upsampled DFT, at no cost.
"""
from __future__ import annotations

import numba
import numpy as np
import scipy.fft as sfft

from insitu.analysis.image._pairwise import ROW_BLOCKS, pairwise_sum_f32

__all__ = ["phase_shift", "PhaseCorrelator", "fourier_shift"]


def _tukey(n: int, alpha: float) -> np.ndarray:
    """Tukey window: flat in the middle, cosine tapers over ``alpha/2`` of the length on each side."""
    if n < 3 or alpha <= 0:
        return np.ones(n)
    x = np.linspace(0.0, 1.0, n)
    w = np.ones(n)
    a = alpha / 2.0
    lo = x < a
    hi = x > 1 - a
    w[lo] = 0.5 * (1 - np.cos(np.pi * x[lo] / a))
    w[hi] = 0.5 * (1 - np.cos(np.pi * (1 - x[hi]) / a))
    return w


def _window2d(shape, alpha: float = 0.5) -> np.ndarray:
    """Separable Tukey window: every pixel of the central region counts equally, edges taper to 0."""
    return (_tukey(shape[0], alpha)[:, None] * _tukey(shape[1], alpha)[None, :]).astype(np.float32)


def _noise_sigma(a: np.ndarray) -> float:
    """Robust pixel-noise estimate from the difference of each pixel with its vertical neighbours."""
    sub = (a[1:-1] - 0.5 * (a[:-2] + a[2:]))[::3, ::3]
    return 1.4826 * float(np.median(np.abs(sub - np.median(sub)))) / np.sqrt(1.5) + 1e-12


@numba.njit(cache=True, nogil=True)
def _prepare_rows(a, glitch, despeckle, window, out, y0, y1):
    """out = (a' − row mean of a') · window (float32, the numbers of the numpy steps bit for bit).

    a' = ``a`` if not ``despeckle``; else pixels that stand out from both vertical neighbours by
    more than ``glitch`` (k·σ: scan glitches) are clipped to within ``glitch`` of the neighbours'
    range (an edge row's missing neighbour is the row itself); ordinary pixels are left exactly
    as they are, so the subpixel accuracy is kept."""
    ny, nx = a.shape
    for y in range(y0, y1):
        yu = max(y - 1, 0)
        yd = min(y + 1, ny - 1)
        for x in range(nx):
            v = a[y, x]
            if despeckle:
                u = a[yu, x]
                d = a[yd, x]
                lo = min(u, d) - glitch
                hi = max(u, d) + glitch
                v = min(max(v, lo), hi)
            out[y, x] = v
        m = pairwise_sum_f32(out[y], 0, nx) / np.float32(nx)
        for x in range(nx):
            out[y, x] = (out[y, x] - m) * window[y, x]


@numba.njit(cache=True, nogil=True, parallel=True)
def _prepare(a, glitch, despeckle, window, out):
    """:func:`_prepare_rows` over all rows, blocks of rows in parallel."""
    ny = a.shape[0]
    nb = min(ROW_BLOCKS, ny)
    for blk in numba.prange(nb):
        _prepare_rows(a, glitch, despeckle, window, out, blk * ny // nb, (blk + 1) * ny // nb)


class PhaseCorrelator:
    """Reusable phase correlation for images of one shape (caches the window and weights).

    Parameters
    ----------
    shape : (ny, nx) of the images to compare.
    lowpass : relative cut-off (fraction of Nyquist) of a Gaussian weight on the whitened
        cross-power spectrum; suppresses noise-dominated high frequencies.
    whiten : exponent p of the normalisation cross / |cross|^p (1 = pure phase correlation,
        0 = plain cross-correlation); 0.5 is a good compromise for noisy frames.
    despeckle : take the median of each pixel and its vertical neighbours first, so a
        one-line scan glitch (a bright streak) does not pull the shift.

    Example
    -------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ref = rng.random((64, 64))
    >>> pc = PhaseCorrelator(ref.shape)
    >>> dx, dy = pc.shift(pc.spectrum(ref), pc.spectrum(np.roll(ref, 3, axis=1)))
    >>> round(dx, 2), abs(round(dy, 2))
    (3.0, 0.0)
    """

    def __init__(self, shape, lowpass: float = 0.3, whiten: float = 0.5,
                 despeckle: bool = True, workers: int = 2):
        self.shape = tuple(int(s) for s in shape)
        self.despeckle = bool(despeckle)
        self.last_quality = float("nan")
        self._glitch_sigma = None
        self._n_spec = 0
        self.whiten = float(whiten)
        self.workers = workers
        self.window = _window2d(self.shape)
        ky = sfft.fftfreq(self.shape[0])[:, None]
        kx = sfft.rfftfreq(self.shape[1])[None, :]
        self.weight = np.exp(-((ky ** 2 + kx ** 2) / (0.5 * lowpass) ** 2)).astype(np.float32)

    def spectrum(self, img: np.ndarray) -> np.ndarray:
        """Windowed half FFT of an image without its row means (the input to :meth:`shift`).

        Removing each row's mean discards scan-line noise (a random offset per scan line),
        which would otherwise pull the vertical shift towards the reference's rows.
        """
        a = np.asarray(img, np.float32)
        despeckle = self.despeckle and a.shape[0] >= 3
        if despeckle:
            self._n_spec += 1
            if self._glitch_sigma is None or self._n_spec % 16 == 0:   # the noise level changes slowly
                self._glitch_sigma = _noise_sigma(a)
        # scan glitches clipped at 4 σ, row means removed, window: one compiled pass
        out = np.empty(a.shape, np.float32)
        _prepare(a, np.float32(4.0 * self._glitch_sigma if despeckle else 0.0), despeckle, self.window, out)
        return sfft.rfft2(out, workers=self.workers)

    def shift(self, ref_spec: np.ndarray, mov_spec: np.ndarray) -> tuple[float, float]:
        """(dx, dy) of the moving image relative to the reference, from their spectra."""
        cross = mov_spec * np.conj(ref_spec)
        mag = np.abs(cross)
        eps = max(1e-12 * float(mag.max()), 1e-20)
        if self.whiten == 1.0:
            cross /= mag + eps
        elif self.whiten > 0:
            cross /= (mag + eps) ** self.whiten
        cross *= self.weight
        corr = sfft.irfft2(cross, s=self.shape, workers=self.workers)
        ny, nx = corr.shape
        flat_i = int(np.argmax(corr))
        iy, ix = np.unravel_index(flat_i, corr.shape)
        #: height of the correlation peak in standard deviations of the correlation surface: about 5
        #: for images with nothing in common (noise), tens to hundreds for a real match
        self.last_quality = float((corr.flat[flat_i] - corr.mean()) / (corr.std() + 1e-30))
        c = corr[iy, ix]
        fy = _gauss_vertex(corr[(iy - 1) % ny, ix], c, corr[(iy + 1) % ny, ix])
        fx = _gauss_vertex(corr[iy, (ix - 1) % nx], c, corr[iy, (ix + 1) % nx])
        py = iy - ny if iy > ny // 2 else iy
        px = ix - nx if ix > nx // 2 else ix
        return float(px + fx), float(py + fy)


def _gauss_vertex(left: float, centre: float, right: float) -> float:
    """Subpixel offset of a Gaussian through three samples (a parabola through their logarithms).

    The Gaussian weight on the cross-power spectrum makes the correlation peak Gaussian, so this
    3-point fit is as accurate as an upsampled DFT (measured: ≤ 0.035 px on a real HAADF frame).
    """
    if not (left > 0 and centre > 0 and right > 0):
        return 0.0
    lm, lc, lp = np.log(left), np.log(centre), np.log(right)
    den = lm - 2 * lc + lp
    if den >= 0:
        return 0.0
    return float(np.clip(0.5 * (lm - lp) / den, -0.5, 0.5))


def phase_shift(reference: np.ndarray, moving: np.ndarray, whiten: float = 0.5,
                lowpass: float = 0.3) -> tuple[float, float]:
    """Subpixel shift ``(dx, dy)`` (px) of ``moving`` relative to ``reference``.

    Parameters
    ----------
    reference, moving : 2-D arrays of the same shape.
    lowpass : Gaussian weight cut-off as a fraction of Nyquist.

    Returns
    -------
    (dx, dy) : a feature at ``p`` in ``reference`` is at ``p + (dx, dy)`` in ``moving``.

    Example
    -------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> ref = rng.random((64, 64))
    >>> mov = fourier_shift(ref, 1.25, -0.5)
    >>> dx, dy = phase_shift(ref, mov)
    >>> bool(abs(dx - 1.25) < 0.05 and abs(dy + 0.5) < 0.05)
    True
    """
    reference = np.asarray(reference)
    moving = np.asarray(moving)
    if reference.shape != moving.shape or reference.ndim != 2:
        raise ValueError(f"need two 2-D images of one shape, got {reference.shape} and {moving.shape}")
    pc = PhaseCorrelator(reference.shape, lowpass=lowpass, whiten=whiten)
    return pc.shift(pc.spectrum(reference), pc.spectrum(moving))


def fourier_shift(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Shift an image by ``(dx, dy)`` px (periodic, exact for band-limited images).

    Example
    -------
    >>> import numpy as np
    >>> a = np.zeros((8, 8)); a[2, 3] = 1
    >>> b = fourier_shift(a, 1, 2)
    >>> int(np.argmax(b)) == 4 * 8 + 4
    True
    """
    img = np.asarray(img, np.float64)
    ny, nx = img.shape
    ky = sfft.fftfreq(ny)[:, None]
    kx = sfft.rfftfreq(nx)[None, :]
    ramp = np.exp(-2j * np.pi * (ky * dy + kx * dx))
    return sfft.irfft2(sfft.rfft2(img) * ramp, s=img.shape)
