"""HAADF-STEM frames of the virtual specimen.

Contrast (mass-thickness / Z contrast, intensities relative to Au(Pt) = 1):
vacuum dark, Na-β''-alumina grains mid-grey with a small orientation-dependent
(channelling) contrast per grain, GBs a slightly darker line, ZrO2 particles and
the Au(Pt) electrode bright, the thick backbone/Na-source frame brighter than the
window (thicker). **Na filaments are brighter** than the grain they sit on: they
grow out of the lamella surface, so they add projected mass (Na is light, so the
contrast is weak and grows with the seed's size; in the paper early seeds are only
seen in differential images).

Noise: detector counts are Poisson with mean ``intensity × electrons per pixel ×
detector_efficiency`` where electrons per pixel = probe current × dwell / e;
each scan line gets a small multiplicative offset (scan-line noise). The
specimen drifts smoothly (sub-pixel shift) and the overall brightness changes
slowly. All of it is a deterministic function of the experiment time and a
seed, so frames do not depend on when they are polled.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

ELEMENTARY_CHARGE_C = 1.602176634e-19


@dataclass
class HaadfParams:
    """Imaging conditions and contrast of the virtual HAADF detector."""

    probe_current_A: float = 5e-11       #: 50 pA as in the paper
    dwell_s: float = 4e-6                #: per pixel
    detector_efficiency: float = 0.25    #: fraction of probe electrons reaching the HAADF detector at intensity 1
    vacuum: float = 0.02
    grain: float = 0.40
    grain_spread: float = 0.06           #: ± orientation contrast between grains
    gb_dip: float = 0.05                 #: darker GB line (depth)
    zro2: float = 0.85
    electrode: float = 1.0               #: Au(Pt)
    backbone: float = 0.65
    source: float = 0.70                 #: Na-source frame (thick, right)
    filament: float = 0.25               #: extra intensity of a fully grown Na seed (brighter)
    filament_r_ref_px: float = 3.0       #: radius at which a seed reaches full contrast
    blur_px: float = 0.8                 #: probe/resolution blur (Gaussian sigma)
    thickness_gradient: float = 0.05     #: relative intensity change across the window (wedge)
    scanline_noise: float = 0.01         #: relative std of a scan line's gain
    drift_velocity_px_s: tuple = (0.0012, -0.0008)   #: (x, y) steady drift
    drift_wander_px: float = 1.5         #: amplitude of the slow wandering drift
    brightness_amplitude: float = 0.04   #: relative slow brightness change
    brightness_period_s: float = 2400.0

    def electrons_per_pixel(self) -> float:
        """Probe electrons per pixel (probe current × dwell / e)."""
        return self.probe_current_A * self.dwell_s / ELEMENTARY_CHARGE_C

    def frame_time_s(self, shape) -> float:
        """Time to scan one frame (s)."""
        return self.dwell_s * shape[0] * shape[1]


def static_image(phase: np.ndarray, grains: np.ndarray, grain_level: dict, gb_mask: np.ndarray,
                 p: HaadfParams) -> np.ndarray:
    """Noise-free HAADF intensity of the pristine specimen (float32, Au(Pt) = 1).

    Parameters
    ----------
    phase : (ny, nx) uint8 of ``insitu.virtual.specimen`` phase codes
    grains : (ny, nx) int, grain label (>0) or 0
    grain_level : dict label -> relative orientation contrast in [-1, 1]
    gb_mask : (ny, nx) bool
    p : HaadfParams

    Examples
    --------
    >>> ph = np.zeros((4, 4), np.uint8); ph[2:] = 1
    >>> g = np.where(ph == 1, 1, 0)
    >>> img = static_image(ph, g, {1: 0.0}, np.zeros((4, 4), bool), HaadfParams(blur_px=0))
    >>> bool(img[3, 0] > img[0, 0])
    True
    """
    from insitu.virtual.specimen import BACKBONE, ELECTRODE, GRAIN, SOURCE, VACUUM, ZRO2

    img = np.full(phase.shape, p.vacuum, np.float32)
    img[phase == ZRO2] = p.zro2
    img[phase == ELECTRODE] = p.electrode
    img[phase == BACKBONE] = p.backbone
    img[phase == SOURCE] = p.source
    gm = phase == GRAIN
    lut = np.zeros(int(grains.max()) + 1, np.float32)
    for lab, lev in grain_level.items():
        if 0 <= lab < lut.size:
            lut[lab] = p.grain * (1.0 + p.grain_spread / p.grain * lev)
    img[gm] = lut[grains[gm]]
    ny, nx = phase.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    wedge = 1.0 + p.thickness_gradient * (0.5 - yy / max(ny - 1, 1)) * 2 * 0.5 + \
        p.thickness_gradient * (xx / max(nx - 1, 1) - 0.5) * 0.5
    img[gm] *= wedge[gm].astype(np.float32)
    img[gb_mask & gm] -= p.gb_dip
    if p.blur_px > 0:
        img = ndimage.gaussian_filter(img, p.blur_px)
    return img.astype(np.float32)


def filament_image(shape, xs, ys, radii, p: HaadfParams) -> np.ndarray:
    """Extra intensity of the Na seeds: soft-edged discs, contrast growing with size.

    Examples
    --------
    >>> im = filament_image((21, 21), [10.0], [10.0], [4.0], HaadfParams())
    >>> bool(im[10, 10] > 0.1 and im[0, 0] == 0)
    True
    """
    out = np.zeros(shape, np.float32)
    ny, nx = shape
    for x, y, r in zip(xs, ys, radii):
        if r <= 0:
            continue
        amp = p.filament * min(1.0, r / p.filament_r_ref_px)
        h = int(math.ceil(r + 3))
        y0, y1 = max(0, int(y) - h), min(ny, int(y) + h + 1)
        x0, x1 = max(0, int(x) - h), min(nx, int(x) + h + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        d = np.hypot(yy - y, xx - x)
        # dome (thicker in the middle) with a soft 1-px edge
        prof = np.clip(r + 0.5 - d, 0.0, 1.0) * np.sqrt(np.clip(1.0 - (d / (r + 0.5)) ** 2, 0.0, 1.0))
        out[y0:y1, x0:x1] = np.maximum(out[y0:y1, x0:x1], amp * (0.5 + 0.5 * prof) * (prof > 0))
    return out


class Drift:
    """Specimen drift (px) as a smooth deterministic function of time.

    Steady velocity plus a slow wander (sum of three sinusoids with seeded phases).
    """

    def __init__(self, p: HaadfParams, seed: int = 0):
        rng = np.random.default_rng(seed + 7919)
        self.v = np.asarray(p.drift_velocity_px_s, float)
        self.amp = p.drift_wander_px
        self.periods = rng.uniform(600.0, 3000.0, size=(2, 3))
        self.phases = rng.uniform(0, 2 * np.pi, size=(2, 3))

    def __call__(self, t_s: float) -> np.ndarray:
        """(dx, dy) in px at time ``t_s`` (absolute; subtract the first frame's value)."""
        w = np.sin(2 * np.pi * t_s / self.periods + self.phases) - np.sin(self.phases)
        return self.v * t_s + self.amp / 3.0 * w.sum(axis=1)


def brightness(t_s: float, p: HaadfParams) -> float:
    """Slow relative brightness (gain) change at ``t_s``."""
    return 1.0 + p.brightness_amplitude * math.sin(2 * math.pi * t_s / p.brightness_period_s)


def shift_bandlimited(img: np.ndarray, dx: float, dy: float, pad: int = 16) -> np.ndarray:
    """Move the content of ``img`` by (+dx, +dy) px with a Fourier (band-limited) shift.

    The scan samples the drifting specimen at shifted positions; for a (probe-blurred,
    nearly band-limited) image a Fourier shift is that resampling, without the
    phase-dependent blur of linear interpolation. Edges are padded by reflection so
    nothing wraps around.

    Examples
    --------
    >>> a = np.zeros((32, 32)); a[10, 12] = 1.0
    >>> b = shift_bandlimited(a, 3.0, -2.0)
    >>> tuple(int(v) for v in np.unravel_index(np.argmax(b), b.shape))
    (8, 15)
    """
    p = int(max(pad, np.ceil(max(abs(dx), abs(dy))) + 2))
    big = np.pad(np.asarray(img, np.float64), p, mode="reflect")
    spec = ndimage.fourier_shift(np.fft.rfft2(big), (dy, dx), n=big.shape[1], axis=-1)
    out = np.fft.irfft2(spec, s=big.shape)[p:-p, p:-p]
    return out.astype(np.float32)


def render(base: np.ndarray, seeds_xyr, *, drift_px=(0.0, 0.0), gain: float = 1.0,
           p: HaadfParams | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
    """One HAADF frame (uint16 counts) of the specimen state.

    Parameters
    ----------
    base : (ny, nx) float32
        Noise-free pristine intensity (:func:`static_image`).
    seeds_xyr : sequence of (x_px, y_px, r_px)
        Filament seeds in specimen coordinates.
    drift_px : (dx, dy)
        Where the specimen appears in the frame: a feature at specimen ``(x, y)``
        is imaged at ``(x + dx, y + dy)``.
    gain : float
        Slow brightness factor.
    p : HaadfParams
    rng : numpy Generator (noise)

    Examples
    --------
    >>> base = np.full((32, 32), 0.4, np.float32)
    >>> f = render(base, [(16, 16, 4.0)], rng=np.random.default_rng(0))
    >>> f.dtype.name, bool(f[14:19, 14:19].mean() > f[:8, :8].mean())
    ('uint16', True)
    """
    p = p or HaadfParams()
    rng = rng or np.random.default_rng()
    img = base
    if len(seeds_xyr):
        xs, ys, rs = zip(*seeds_xyr)
        fil = filament_image(base.shape, xs, ys, rs, p)
        if p.blur_px > 0:
            fil = ndimage.gaussian_filter(fil, p.blur_px)
        img = base + fil
    dx, dy = float(drift_px[0]), float(drift_px[1])
    if abs(dx) > 1e-6 or abs(dy) > 1e-6:
        img = shift_bandlimited(img, dx, dy)
    scale = p.electrons_per_pixel() * p.detector_efficiency * gain
    line = 1.0 + p.scanline_noise * rng.standard_normal(img.shape[0])[:, None]
    lam = np.clip(img * line * scale, 0, None)
    counts = rng.poisson(lam)
    return np.clip(counts, 0, 65535).astype(np.uint16)
