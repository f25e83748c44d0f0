"""Synthetic HAADF-STEM time series with known filament seeds (test generator).

A static specimen (Voronoi grains of different brightness, bright particles)
is imaged frame after frame with

* sample drift: a smooth random walk of several pixels with subpixel steps
  (applied by a Fourier shift of the band-limited scene, so the truth is exact);
* Poisson counting noise and scan-line noise (a random offset per image row);
* a slow global brightness change (decay plus a small oscillation);
* one-frame artefacts: blobs of either contrast and short bright streaks;
* filament seeds of both signs that appear at random frames (never in the
  first ``warmup`` frames) and grow in radius and contrast.

Coordinates: ``x`` is the column, ``y`` the row, pixel centres at integers, in
the coordinates of the first frame. A feature at first-frame position ``p``
appears in frame ``k`` at ``p + drift[k]`` (``drift = (dx, dy)`` in px).

Example
-------
>>> s = make_series(n_frames=20, shape=(128, 128), seed=1)
>>> s.frames.shape
(20, 128, 128)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Series:
    frames: np.ndarray          # (n, ny, nx) float32 counts
    times: np.ndarray           # (n,) s
    drift: np.ndarray           # (n, 2) true (dx, dy) px of frame k relative to frame 0
    seeds: dict                 # x_px, y_px, first_frame, sign, r0, growth (arrays)
    artefacts: list = field(default_factory=list)  # (frame, x, y) of one-frame artefacts


def _fourier_shift(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    ny, nx = img.shape
    ky = np.fft.fftfreq(ny)[:, None]
    kx = np.fft.rfftfreq(nx)[None, :]
    ramp = np.exp(-2j * np.pi * (ky * dy + kx * dx))
    return np.fft.irfft2(np.fft.rfft2(img) * ramp, s=img.shape)


def _gauss_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    ny, nx = img.shape
    ky = np.fft.fftfreq(ny)[:, None]
    kx = np.fft.rfftfreq(nx)[None, :]
    g = np.exp(-2 * (np.pi * sigma) ** 2 * (ky ** 2 + kx ** 2))
    return np.fft.irfft2(np.fft.rfft2(img) * g, s=img.shape)


def _add_disc(img, x, y, r, amp, soft=0.7):
    """Add ``amp`` × a soft-edged disc of radius r at (x, y) to img, in place (local window only)."""
    h = int(np.ceil(r + 6 * soft)) + 1
    y0, y1 = max(0, int(y) - h), min(img.shape[0], int(y) + h + 1)
    x0, x1 = max(0, int(x) - h), min(img.shape[1], int(x) + h + 1)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1]
    d = np.hypot(xx - x, yy - y)
    img[y0:y1, x0:x1] += amp * 0.5 * (1.0 - np.tanh((d - r) / soft))


def make_series(n_frames: int = 40, shape=(160, 160), seed: int = 0, n_seeds: int | None = None,
                counts: float | None = None, drift_px: float = 6.0, frame_time_s: float = 2.0,
                warmup: int = 3, artefact_rate: float = 0.5, decay: float = 0.3,
                scanline_sigma: float = 0.03) -> Series:
    """Generate a series.

    Parameters
    ----------
    n_frames, shape : series length and frame shape (ny, nx).
    seed : random seed (everything is reproducible from it).
    n_seeds : number of filament seeds (default: about one per 5000 px, at least 3).
    counts : mean electron counts per pixel in the first frame (default random 60–200).
    drift_px : typical total drift over the series (px).
    frame_time_s : time between frames (s); small jitter is added.
    warmup : seeds never appear before this frame.
    artefact_rate : mean number of one-frame artefacts per frame.
    decay : fractional brightness loss over the series.
    scanline_sigma : row-offset noise as a fraction of the mean counts.
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    pad = int(np.ceil(drift_px * 2)) + 8
    cy, cx = ny + 2 * pad, nx + 2 * pad
    if counts is None:
        counts = float(rng.uniform(60, 200))
    # --- static scene on a padded canvas, canvas coordinate = first-frame coordinate + pad
    n_grains = max(6, int(cy * cx / 2500))
    gy = rng.uniform(0, cy, n_grains)
    gx = rng.uniform(0, cx, n_grains)
    from scipy.spatial import cKDTree

    yy, xx = np.mgrid[0:cy, 0:cx].astype(np.float64)
    _, label = cKDTree(np.column_stack([gy, gx])).query(np.column_stack([yy.ravel(), xx.ravel()]))
    scene = rng.uniform(0.75, 1.25, n_grains)[label.reshape(cy, cx)]
    n_part = max(2, int(cy * cx / 4000))
    for _ in range(n_part):
        px, py = rng.uniform(0, cx), rng.uniform(0, cy)
        _add_disc(scene, px, py, rng.uniform(1.5, 4.0), rng.uniform(0.4, 1.2), soft=1.0)
    scene = _gauss_blur(scene, 1.0)  # probe size: band-limits the scene

    # --- drift: smooth random walk, subpixel steps, first frame at 0
    steps = rng.normal(0, 1, (n_frames, 2))
    steps = np.cumsum(steps, axis=0)
    steps = steps - steps[0]
    steps += np.linspace(0, 1, n_frames)[:, None] * rng.normal(0, 1, 2)[None, :] * n_frames ** 0.5
    scale = drift_px / max(1e-9, np.abs(steps).max())
    drift = steps * scale
    drift[0] = 0.0

    # --- seeds (first-frame coordinates), well separated, away from the border
    if n_seeds is None:
        n_seeds = max(3, int(ny * nx / 5000))
    margin = 12 + drift_px
    sx, sy = [], []
    tries = 0
    while len(sx) < n_seeds and tries < 10000:
        tries += 1
        x = rng.uniform(margin, nx - 1 - margin)
        y = rng.uniform(margin, ny - 1 - margin)
        if all(np.hypot(x - a, y - b) > 20 for a, b in zip(sx, sy)):
            sx.append(x)
            sy.append(y)
    n_seeds = len(sx)
    sx, sy = np.array(sx), np.array(sy)
    last_start = max(warmup + 1, n_frames - 6)
    first = rng.integers(warmup, last_start, n_seeds)
    sign = rng.choice([-1, 1], n_seeds)
    r0 = rng.uniform(1.6, 2.4, n_seeds)
    growth = rng.uniform(0.1, 0.35, n_seeds)          # px per frame
    c0 = rng.uniform(0.12, 0.18, n_seeds)             # contrast at appearance (fraction)
    c1 = rng.uniform(0.25, 0.45, n_seeds)             # contrast when grown

    base_times = np.arange(n_frames) * frame_time_s
    times = base_times + rng.uniform(-0.05, 0.05, n_frames) * frame_time_s
    times[0] = 0.0
    frames = np.empty((n_frames, ny, nx), np.float32)
    artefacts = []
    for k in range(n_frames):
        img = scene.copy()
        # seeds live on the specimen: add them before the drift
        for i in range(n_seeds):
            age = k - first[i]
            if age < 0:
                continue
            r = min(r0[i] + growth[i] * age, 9.0)
            c = c0[i] + (c1[i] - c0[i]) * min(1.0, age / 8.0)
            _add_disc(img, sx[i] + pad, sy[i] + pad, r, sign[i] * c)
        img = _fourier_shift(img, drift[k, 0], drift[k, 1])[pad:pad + ny, pad:pad + nx]
        bright = (1.0 - decay * k / max(1, n_frames - 1)) * (1 + 0.02 * np.sin(0.7 * k))
        lam = np.clip(img * counts * bright, 0, None)
        # one-frame artefacts (in frame coordinates)
        n_art = rng.poisson(artefact_rate)
        extra = np.zeros_like(lam)
        for _ in range(n_art):
            ax, ay = rng.uniform(5, nx - 5), rng.uniform(5, ny - 5)
            if rng.random() < 0.7:
                _add_disc(extra, ax, ay, rng.uniform(1.5, 4.0),
                          rng.choice([-1, 1]) * rng.uniform(0.3, 0.8) * counts)
            else:
                row = int(ay)
                x0 = int(ax)
                extra[row, max(0, x0 - 15):x0 + 15] += rng.uniform(1.0, 2.0) * counts
            artefacts.append((k, ax - drift[k, 0], ay - drift[k, 1]))
        lam = np.clip(lam + extra, 0, None)
        img = rng.poisson(lam).astype(np.float64)
        img += rng.normal(0, scanline_sigma * counts * bright, (ny, 1))
        frames[k] = img
    seeds = dict(x_px=sx, y_px=sy, first_frame=first, sign=sign, r0=r0, growth=growth)
    return Series(frames=frames, times=times, drift=drift, seeds=seeds, artefacts=artefacts)


def score(table: dict, truth: dict, radius_px: float = 4.0) -> dict:
    """Match detected seeds to the truth (see :func:`insitu.analysis.image.seeds.match_seeds`)."""
    from insitu.analysis.image.seeds import match_seeds

    return match_seeds(table, truth, radius_px)
