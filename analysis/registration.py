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


def _hann2d(shape) -> np.ndarray:
    wy = np.hanning(shape[0]).astype(np.float32)
    wx = np.hanning(shape[1]).astype(np.float32)
    return wy[:, None] * wx[None, :]


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


class PhaseCorrelator:
    """Reusable phase correlation for images of one shape (caches the window and weights).

    Parameters
    ----------
    shape : (ny, nx) of the images to compare.
    upsample : subpixel resolution 1/upsample px.
    lowpass : relative cut-off (fraction of Nyquist) of a Gaussian weight on the whitened
        cross-power spectrum; suppresses noise-dominated high frequencies.

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
                 workers: int = 2):
        self.shape = tuple(int(s) for s in shape)
        self.whiten = float(whiten)
        self.upsample = int(upsample)
        self.workers = workers
        self.window = _hann2d(self.shape)
        ky = sfft.fftfreq(self.shape[0])[:, None]
        kx = sfft.rfftfreq(self.shape[1])[None, :]
        self.weight = np.exp(-((ky ** 2 + kx ** 2) / (0.5 * lowpass) ** 2)).astype(np.float32)

    def spectrum(self, img: np.ndarray) -> np.ndarray:
        """Windowed half FFT of an image without its row means (the input to :meth:`shift`).

        Removing each row's mean discards scan-line noise (a random offset per scan line),
        which would otherwise pull the vertical shift towards the reference's rows.
        """
        a = np.asarray(img, np.float32)
        a = (a - a.mean(axis=1, keepdims=True)) * self.window
        return sfft.rfft2(a, workers=self.workers)

    def shift(self, ref_spec: np.ndarray, mov_spec: np.ndarray) -> tuple[float, float]:
        """(dx, dy) of the moving image relative to the reference, from their spectra."""
        cross = mov_spec * np.conj(ref_spec)
        mag = np.abs(cross)
        eps = 1e-12 * (float(mag.max()) + 1e-30)
        if self.whiten == 1.0:
            cross /= mag + eps
        elif self.whiten > 0:
            cross /= (mag + eps) ** self.whiten
        cross *= self.weight
        corr = sfft.irfft2(cross, s=self.shape, workers=self.workers)
        ny, nx = corr.shape
        iy, ix = np.unravel_index(int(np.argmax(corr)), corr.shape)
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
