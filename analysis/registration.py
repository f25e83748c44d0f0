"""Subpixel drift measurement by phase correlation.

Conventions (used throughout :mod:`insitu.analysis`): images are ``(ny, nx)``
arrays, ``x`` is the column and ``y`` the row, pixel centres at integers. A shift
``(dx, dy)`` of image ``moving`` against ``reference`` means that a feature at
``p`` in the reference is found at ``p + (dx, dy)`` in ``moving``.

Phase correlation whitens the cross-power spectrum, so a global brightness
change, a slow contrast change or a smoothed reference do not bias the result.
The integer peak is refined by a locally upsampled DFT (Guizar-Sicairos et al.,
Opt. Lett. 33, 156 (2008)), which costs O(N·u) instead of an upsampled FFT.
"""
from __future__ import annotations

import numpy as np
import scipy.fft as sfft

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


def _upsampled_idft(half: np.ndarray, nx: int, region: int, factor: int, offset) -> np.ndarray:
    """Real inverse DFT of a half (rfft) spectrum on a ``region``² grid of step 1/``factor`` px.

    ``offset`` (oy, ox) is the position (in upsampled pixels) of the region's first sample.
    """
    ny, nh = half.shape
    ky = sfft.fftfreq(ny) * ny
    kx = np.arange(nh)
    w = np.full(nh, 2.0)
    w[0] = 1.0
    if nx % 2 == 0:
        w[-1] = 1.0
    ry = np.arange(region) - offset[0]
    rx = np.arange(region) - offset[1]
    ker_y = np.exp((2j * np.pi / (ny * factor)) * ry[:, None] * ky[None, :])   # (region, ny)
    ker_x = w[:, None] * np.exp((2j * np.pi / (nx * factor)) * kx[:, None] * rx[None, :])  # (nh, region)
    return (ker_y @ half @ ker_x).real


def _median3_rows(a: np.ndarray, k: float = 3.0) -> np.ndarray:
    """Clip pixels that stand out from both vertical neighbours by more than k·σ (scan glitches).

    σ is a robust estimate of the pixel noise; ordinary pixels are left exactly as they are, so the
    subpixel accuracy is kept.
    """
    up = np.empty_like(a)
    dn = np.empty_like(a)
    up[1:], up[0] = a[:-1], a[0]
    dn[:-1], dn[-1] = a[1:], a[-1]
    sub = (a - 0.5 * (up + dn))[::3, ::3]
    sigma = 1.4826 * float(np.median(np.abs(sub - np.median(sub)))) + 1e-12
    lo = np.minimum(up, dn) - k * sigma
    hi = np.maximum(up, dn) + k * sigma
    return np.clip(a, lo, hi)


class PhaseCorrelator:
    """Reusable phase correlation for images of one shape (caches the window and weights).

    Parameters
    ----------
    shape : (ny, nx) of the images to compare.
    upsample : subpixel resolution 1/upsample px.
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
    >>> round(dx, 2), round(dy, 2)
    (3.0, 0.0)
    """

    def __init__(self, shape, upsample: int = 20, lowpass: float = 0.3, whiten: float = 0.5,
                 despeckle: bool = True, workers: int = 2):
        self.shape = tuple(int(s) for s in shape)
        self.despeckle = bool(despeckle)
        self.last_quality = float("nan")
        self.whiten = float(whiten)
        self.upsample = int(upsample)
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
        if self.despeckle and a.shape[0] >= 3:
            a = _median3_rows(a)
        a = (a - a.mean(axis=1, keepdims=True)) * self.window
        return sfft.rfft2(a, workers=self.workers)

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
        py = iy - ny if iy > ny // 2 else iy
        px = ix - nx if ix > nx // 2 else ix
        u = self.upsample
        if u <= 1:
            return float(px), float(py)
        region = int(np.ceil(u * 1.5))
        centre = np.fix(region / 2.0)
        # refine around the peak on the 1/u grid
        py_u, px_u = round(py * u) / u, round(px * u) / u
        up = _upsampled_idft(cross, nx, region, u, (centre - py_u * u, centre - px_u * u))
        jy, jx = np.unravel_index(int(np.argmax(up)), up.shape)
        return float(px_u + (jx - centre) / u), float(py_u + (jy - centre) / u)


def phase_shift(reference: np.ndarray, moving: np.ndarray, upsample: int = 20, whiten: float = 0.5,
                lowpass: float = 0.3) -> tuple[float, float]:
    """Subpixel shift ``(dx, dy)`` (px) of ``moving`` relative to ``reference``.

    Parameters
    ----------
    reference, moving : 2-D arrays of the same shape.
    upsample : the result is resolved to 1/upsample px.
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
    >>> [round(v, 2) for v in phase_shift(ref, mov)]
    [1.25, -0.5]
    """
    reference = np.asarray(reference)
    moving = np.asarray(moving)
    if reference.shape != moving.shape or reference.ndim != 2:
        raise ValueError(f"need two 2-D images of one shape, got {reference.shape} and {moving.shape}")
    pc = PhaseCorrelator(reference.shape, upsample=upsample, lowpass=lowpass, whiten=whiten)
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
