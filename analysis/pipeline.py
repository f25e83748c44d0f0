"""The analysis pipeline: frame by frame (:class:`LiveAnalyzer`) and on a whole input (:func:`analyze`).

Per frame: drift against a running reference (phase correlation on a central
crop) → differential image in σ → candidates → tracks → seeds. Each frame
costs the same and memory does not grow with the series (a few frame-sized
arrays plus the seed list).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from insitu.analysis.differential import DifferentialImager
from insitu.analysis.registration import PhaseCorrelator
from insitu.analysis.seeds import SEED_COLUMNS, Candidate, Seed, SeedTracker, find_candidates

__all__ = ["FrameResult", "LiveAnalyzer", "analyze", "MIN_FRAMES"]


@dataclass
class FrameResult:
    """What one new frame gave.

    ``dx_px, dy_px``: drift of this frame relative to the first frame (a feature at p in the
    first frame is at p + (dx, dy) in this one). ``differential``: float32 image in σ units in
    first-frame coordinates, None for the first frame. ``seeds``: all seeds confirmed so far
    (first-frame coordinates; add (dx, dy) to draw them on this frame); ``new_seeds``: those
    confirmed by this frame; ``candidates``: this frame's blobs (not yet seeds).
    """

    index: int
    time_s: float
    dx_px: float
    dy_px: float
    differential: np.ndarray | None
    candidates: list[Candidate] = field(default_factory=list)
    seeds: list[Seed] = field(default_factory=list)
    new_seeds: list[Seed] = field(default_factory=list)


class LiveAnalyzer:
    """Incremental drift correction, differential imaging and seed detection.

    Parameters
    ----------
    sigma_px : smoothing of the differential image (px), matched to the smallest seeds.
    threshold : detection level (σ) of a blob's peak in the differential image.
    low : level (σ) at which a blob's area and centroid are measured.
    persistence : frames a blob must be seen in to count as a seed.
    gate_px : association distance (px, plus the seed radius) between frames.
    reg_crop : registration uses a central crop of at most this size (px).
    upsample : drift resolution 1/upsample px.
    ref_every : the registration reference is refreshed every this many frames.

    Example
    -------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> la = LiveAnalyzer()
    >>> for k in range(5):
    ...     f = rng.poisson(100, (64, 64)).astype(float)
    ...     if k >= 2:
    ...         f[30:35, 20:25] += 50
    ...     r = la.feed(f, 2.0 * k)
    >>> t = la.seeds_table()
    >>> list(t["first_frame"]), [round(float(v)) for v in t["x_px"]], [round(float(v)) for v in t["y_px"]]
    ([2], [22], [32])
    """

    def __init__(self, *, sigma_px: float = 1.5, threshold: float = 4.5, low: float = 2.5,
                 persistence: int = 2, gate_px: float = 4.0, reg_crop: int = 512, upsample: int = 20,
                 ref_every: int = 5, workers: int = 2):
        self.params = dict(sigma_px=sigma_px, threshold=threshold, low=low, persistence=persistence,
                           gate_px=gate_px, reg_crop=reg_crop, upsample=upsample, ref_every=ref_every)
        self.threshold = float(threshold)
        self.low = float(low)
        self.reg_crop = int(reg_crop)
        self.upsample = int(upsample)
        self.ref_every = int(ref_every)
        self.workers = workers
        self.sigma_px = float(sigma_px)
        self.tracker = SeedTracker(gate_px=gate_px, persistence=persistence)
        self.shape: tuple[int, int] | None = None
        self.n_frames = 0
        self.times: list[float] = []
        self.drift: list[tuple[float, float]] = []
        self._imager: DifferentialImager | None = None
        self._pc: PhaseCorrelator | None = None
        self._crop: tuple[slice, slice] | None = None
        self._ref_spec = None

    # -- registration --------------------------------------------------------------------------
    def _setup(self, shape) -> None:
        self.shape = tuple(int(s) for s in shape)
        ny, nx = self.shape
        self._imager = DifferentialImager(self.shape, sigma_px=self.sigma_px, workers=self.workers)
        m = self._imager.margin + 1   # the reference is empty within the margin
        cy = max(8, min(ny - 2 * m, self.reg_crop))
        cx = max(8, min(nx - 2 * m, self.reg_crop))
        cy, cx = min(cy, ny), min(cx, nx)
        y0, x0 = (ny - cy) // 2, (nx - cx) // 2
        self._crop = (slice(y0, y0 + cy), slice(x0, x0 + cx))
        self._pc = PhaseCorrelator((cy, cx), upsample=self.upsample, workers=self.workers)

    def _register(self, frame: np.ndarray) -> tuple[float, float]:
        spec = self._pc.spectrum(frame[self._crop])
        if self._ref_spec is None:
            self._ref_spec = spec
            return 0.0, 0.0
        return self._pc.shift(self._ref_spec, spec)

    # -- public ----------------------------------------------------------------------------------
    def feed(self, frame: np.ndarray, time_s: float) -> FrameResult:
        """Analyse the next frame (2-D array) taken at ``time_s`` (s)."""
        frame = np.asarray(frame)
        if frame.ndim != 2:
            raise ValueError(f"a frame must be a 2-D image, got shape {frame.shape}")
        if self.shape is None:
            self._setup(frame.shape)
        elif frame.shape != self.shape:
            raise ValueError(f"frame {self.n_frames} has shape {frame.shape}, the series has {self.shape}")
        k = self.n_frames
        frame = frame.astype(np.float32, copy=False)
        dx, dy = self._register(frame)
        z = self._imager.update(frame, dx, dy)
        cands: list[Candidate] = []
        new: list[Seed] = []
        if z is not None:
            cands = find_candidates(z, self.threshold, self.low, region=self._imager.last_valid)
            new = self.tracker.update(k, time_s, cands)
        # refresh the registration reference from the running (drift-corrected) reference
        if k > 0 and k % self.ref_every == 0:
            ref = self._imager.reference[self._crop]
            seen = self._imager.seen[self._crop]
            if not seen.all():
                ref = np.where(seen, ref, ref[seen].mean() if seen.any() else 0.0)
            self._ref_spec = self._pc.spectrum(ref)
        self.n_frames += 1
        self.times.append(float(time_s))
        self.drift.append((float(dx), float(dy)))
        return FrameResult(index=k, time_s=float(time_s), dx_px=float(dx), dy_px=float(dy), differential=z,
                           candidates=cands, seeds=list(self.tracker.seeds), new_seeds=new)

    def seeds_table(self) -> dict[str, np.ndarray]:
        """Seeds confirmed so far, as columns ``id, first_frame, first_time_s, x_px, y_px, sign,
        area_px, peak_snr, last_frame``."""
        return self.tracker.table()

    def drift_table(self) -> dict[str, np.ndarray]:
        """``frame, time_s, dx_px, dy_px`` of every frame fed so far."""
        d = np.array(self.drift, float).reshape(-1, 2)
        return dict(frame=np.arange(len(d)), time_s=np.array(self.times, float), dx_px=d[:, 0], dy_px=d[:, 1])

    def why_nothing(self) -> str:
        """A one-line reason when no seed was found."""
        need = MIN_FRAMES
        if self.n_frames < need:
            return (f"only {self.n_frames} frame{'s' if self.n_frames != 1 else ''}: need at least {need} "
                    f"(1 reference + {self.tracker.persistence} for persistence)")
        if self.shape is not None and min(self.shape) < 4 * self._imager.margin:
            return (f"frames of {self.shape[1]}×{self.shape[0]} px are too small: the drift-corrected "
                    f"region is under {2 * self._imager.margin} px wide")
        return (f"no change passed {self.threshold:g} σ in {self.tracker.persistence} frames "
                f"out of {self.n_frames}")


#: frames needed before a seed can be confirmed (1 reference + persistence 2)
MIN_FRAMES = 3


def analyze(input_path, out_dir, microstructure=None, simulation=None, progress: Callable | None = None,
            **options) -> dict[str, Path]:
    """Run the whole analysis on a session file or a folder of frames; write the outputs to ``out_dir``.

    See :mod:`insitu.analysis.report` and ``docs/analysis.md``; the work is done by
    :func:`insitu.analysis.run.run_analysis`.
    """
    from insitu.analysis.analysis_run import run_analysis

    return run_analysis(input_path, out_dir, microstructure=microstructure, simulation=simulation,
                        progress=progress, **options)
