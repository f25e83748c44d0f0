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

from insitu.analysis.image.differential import DifferentialImager, upsample_fourier
from insitu.analysis.image.evidence import EvidenceAccumulator
from insitu.analysis.image.registration import PhaseCorrelator
from insitu.analysis.image.seeds import SEED_COLUMNS, Candidate, Seed, SeedTracker, find_candidates
from insitu.core.errors import UserError

__all__ = ["FrameResult", "LiveAnalyzer", "analyze", "MIN_FRAMES"]


@dataclass
class FrameResult:
    """What one new frame gave.

    ``dx_px, dy_px``: drift of this frame relative to the first frame (a feature at p in the
    first frame is at p + (dx, dy) in this one). ``differential``: float32 image in σ units in
    first-frame coordinates, frame-sized, None for the first frame (for large frames it is
    computed on a grid of ``differential_step`` px, kept in ``differential_raw``, and enlarged on
    first access). ``seeds``: all seeds confirmed so far (first-frame coordinates; add (dx, dy) to
    draw them on this frame); ``new_seeds``: those confirmed by this frame; ``candidates``: this
    frame's blobs (not yet seeds).
    """

    index: int
    time_s: float
    dx_px: float
    dy_px: float
    differential_raw: np.ndarray | None
    evidence_raw: np.ndarray | None = None
    candidates: list[Candidate] = field(default_factory=list)
    seeds: list[Seed] = field(default_factory=list)
    new_seeds: list[Seed] = field(default_factory=list)
    differential_step: int = 1
    frame_shape: tuple | None = None
    _full: np.ndarray | None = field(default=None, repr=False)

    @property
    def differential(self) -> np.ndarray | None:
        if self._full is None:
            self._full = self._enlarged(self.differential_raw)
        return self._full

    @property
    def evidence(self) -> np.ndarray | None:
        """The accumulated evidence of change (σ, frame-sized; see :mod:`insitu.analysis.image.evidence`)."""
        return self._enlarged(self.evidence_raw)

    def _enlarged(self, raw):
        if raw is None or self.differential_step == 1:
            return raw
        st = self.differential_step
        full = np.zeros(self.frame_shape, np.float32)
        rep = np.repeat(np.repeat(raw, st, axis=0), st, axis=1)
        # working pixel j sits at frame position st·j: centre the blocks on it
        h = st // 2
        full[:rep.shape[0] - h, :rep.shape[1] - h] = rep[h:, h:]
        return full


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
    ref_every : the registration reference is refreshed every this many frames.
    step : "auto" (2 for frames of 768 px and more, else 1) or 1 or 2: the differential image
        and the detection work on a grid of this step (the 1.5 px smoothing leaves nothing finer).
    split_prominence : a blob of the finest scale whose peaks stand this many σ (and a quarter of
        their height) above the saddle between them, ``split_distance_px`` or more apart, is split
        into one candidate per peak (:func:`~insitu.analysis.image.seeds.split_blob`): a young seed
        beside an older, grown one. 0 turns splitting off.
    split_distance_px : least distance (frame px) between the peaks of a split blob.
    min_quality : a drift is accepted when the correlation peak stands this many standard
        deviations above the correlation surface (about 5 for unrelated images); otherwise
        the previous drift is kept.

    Example
    -------
    A 5 × 5 px change (+50 counts on 100) from frame 7 of twelve (frames under
    :data:`MIN_FRAME_PX` (96) px give the noise model too few pixels per brightness bin: they get
    their drift only, no differential and no seeds):

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> la = LiveAnalyzer()
    >>> for k in range(12):
    ...     f = rng.poisson(100, (96, 96)).astype(float)
    ...     if k >= 7:
    ...         f[40:45, 60:65] += 50
    ...     r = la.feed(f, 2.0 * k)
    >>> t = la.seeds_table()
    >>> t["first_frame"].tolist(), [round(float(v)) for v in t["x_px"]], [round(float(v)) for v in t["y_px"]]
    ([7], [62], [42])
    """

    def __init__(self, *, sigma_px: float = 1.5, threshold: float = 6.0, low: float = 2.5,
                 persistence: int = 2, gate_px: float = 4.0, reg_crop: int = 512,
                 ref_every: int = 5, min_quality: float = 7.0, step: int | str = "auto", workers: int = 2,
                 scales_px=(0.0, 2.0, 3.7), lags=(1, 2, 4, 8), alpha: float = 0.02, freeze_level: float = 4.0,
                 mature_frames: int = 5, min_roundness: float = 0.25, warmup: int = 2,
                 split_prominence: float = 3.0, split_distance_px: float = 4.0):
        self.params = dict(sigma_px=sigma_px, threshold=threshold, low=low, persistence=persistence,
                           gate_px=gate_px, reg_crop=reg_crop, ref_every=ref_every,
                           min_quality=min_quality, step=step, scales_px=list(scales_px), lags=list(lags),
                           alpha=alpha, freeze_level=freeze_level, split_prominence=split_prominence,
                           split_distance_px=split_distance_px)
        self.scales_px = tuple(float(v) for v in scales_px)
        self.lags = tuple(int(v) for v in lags)
        self.alpha = float(alpha)
        self.freeze_level = float(freeze_level)
        self.mature_frames = int(mature_frames)
        self.min_roundness = float(min_roundness)
        self.split_prominence = float(split_prominence)
        self.split_distance_px = float(split_distance_px)
        self.gate_px = float(gate_px)
        self.warmup = int(warmup)
        #: working px next to the edge of the drift-corrected region where no seed is looked for
        self.border = 2
        self.step_option = step
        self.threshold = float(threshold)
        self.low = float(low)
        self.reg_crop = int(reg_crop)
        self.ref_every = int(ref_every)
        self.min_quality = float(min_quality)
        #: frames whose drift could not be measured (held at the previous value)
        self.n_unregistered = 0
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
        st = self.step_option
        if st == "auto":
            st = 2 if min(ny, nx) >= 768 else 1
        if st not in (1, 2):
            raise ValueError(f"step must be 1, 2 or 'auto', got {st!r}")
        self.step = int(st)
        self._imager = DifferentialImager(self.shape, sigma_px=self.sigma_px, alpha=self.alpha,
                                          workers=self.workers, step=self.step)
        # matched filters for blobs of σ 1.5 (the smoothing itself) to about 5 frame px
        self._evidence = EvidenceAccumulator(self._imager.shape,
                                             scales=tuple(s / self.step for s in self.scales_px), lags=self.lags)
        self._freeze = None
        m = (self._imager.margin + 1) * self.step   # the reference is empty within the margin
        cy = max(8, min(ny - 2 * m, self.reg_crop))
        cx = max(8, min(nx - 2 * m, self.reg_crop))
        cy, cx = min(cy, ny), min(cx, nx)
        y0, x0 = (ny - cy) // 2, (nx - cx) // 2
        self._crop = (slice(y0, y0 + cy), slice(x0, x0 + cx))
        self._pc = PhaseCorrelator((cy, cx), workers=self.workers)
        #: frames too small for a drift-corrected differential (nothing left inside the margins)
        self.too_small = min(ny, nx) < (2 * self._imager.margin + MIN_SIZE) * self.step
        #: frames large enough for the drift but too small for a calibrated differential
        #: (:data:`MIN_FRAME_PX`): drift only, no differential, no seeds
        self.drift_only = not self.too_small and min(ny, nx) < MIN_FRAME_PX

    def _register(self, frame: np.ndarray) -> tuple[float, float]:
        spec = self._pc.spectrum(frame[self._crop])
        if self._ref_spec is None:
            self._ref_spec = spec
            return 0.0, 0.0
        dx, dy = self._pc.shift(self._ref_spec, spec)
        if not self._pc.last_quality >= self.min_quality:
            # no structure in common with the reference (noise only, beam blanked, a jump out of
            # the field): keep the last drift rather than follow a noise peak
            self.n_unregistered += 1
            return self.drift[-1] if self.drift else (0.0, 0.0)
        return dx, dy

    # -- public ----------------------------------------------------------------------------------
    def feed(self, frame: np.ndarray, time_s: float) -> FrameResult:
        """Analyse the next frame (2-D array) taken at ``time_s`` (s); the incremental detector API.

        Contract (kept stable for closed-loop protocols, e.g. "end a hold when N new seeds are
        confirmed"):

        * ``result.new_seeds`` lists the seeds **confirmed by this frame**, each exactly once over
          the series, in no particular order; ``result.seeds`` lists all confirmed so far.
        * A :class:`~insitu.analysis.image.seeds.Seed` carries ``id`` (1, 2, … in order of confirmation,
          never reused), ``sign`` (+1 brighter, −1 darker), ``x_px, y_px`` (first-frame pixel
          coordinates, x = column; refined while the seed's first ``position_hits`` (6) detections
          come in, fixed after), ``first_frame`` and ``first_time_s`` (the estimated onset of the
          change, fixed at confirmation; may be earlier than the confirmation) and
          ``confirmed_frame`` (the index of the frame whose ``feed`` returned it). The objects
          are live: ``last_frame``, ``area_px`` and ``peak_snr`` grow as the seed does.
        * Frames are numbered from 0 in the order fed. A seed can be confirmed from frame
          ``n_init + warmup + persistence − 1`` (6) on; a change already present in the first
          frames is part of the reference and is not reported (see docs/analysis.md).
        * Bounded cost: each call does the same work on frame-sized arrays, plus work linear in
          the number of live tracks and of this frame's candidates; memory does not grow with
          the number of frames (only with the number of seeds).

        Raises ValueError for a frame that is not 2-D or whose shape differs from the first.
        """
        frame = np.asarray(frame)
        if frame.ndim != 2:
            raise ValueError(f"a frame must be a 2-D image, got shape {frame.shape}")
        if self.shape is None:
            self._setup(frame.shape)
        elif frame.shape != self.shape:
            raise ValueError(f"frame {self.n_frames} has shape {frame.shape}, the series has {self.shape}")
        k = self.n_frames
        frame = frame.astype(np.float32, copy=False)
        if self.too_small:
            return self._without_differential(time_s, float("nan"), float("nan"))
        dx, dy = self._register(frame)
        if self.drift_only:
            return self._without_differential(time_s, dx, dy)
        z = self._imager.update(frame, dx, dy, freeze=self._freeze)
        ev = None
        self.times.append(float(time_s))
        cands: list[Candidate] = []
        new: list[Seed] = []
        if z is not None:
            sl = self._imager.last_valid
            outside = np.ones(z.shape, bool)
            outside[sl] = False
            if self._freeze is not None:
                outside |= self._freeze
            if self._imager.count > self._imager.n_init + self.warmup:
                if self._imager._grad is not None and (self._evidence.edges is None or k % 8 == 0):
                    self._evidence.set_edges(self._imager._grad[2])
                rvar = None if self._freeze is None else self._imager.reference_variance(self._freeze)
                ev = self._evidence.push(z, exclude=outside, ref_var=rvar)
            else:
                # the first differentials share the error of a reference of only a few frames, which
                # would look persistent: they do not enter the evidence (a seed that began meanwhile
                # is dated from the first frame that does)
                ev = np.zeros_like(z)
                self._evidence.per_scale = None
            b = self.border
            inner = (slice(sl[0].start + b, max(sl[0].start + b, sl[0].stop - b)),
                     slice(sl[1].start + b, max(sl[1].start + b, sl[1].stop - b)))
            cands = self._candidates(inner) if self._evidence.per_scale is not None else []
            cands = self._scaled(cands, k)
            new = self.tracker.update(k, time_s, cands)
            # the reference stops following where a change is under way, once it holds enough frames
            # that its own noise cannot lock it (a young reference is still averaging)
            if self._imager.count - self._imager.n_init >= self.mature_frames:
                self._freeze = np.abs(ev) > self.freeze_level
        # refresh the registration reference from the running (drift-corrected) reference
        if k == self._imager.n_init - 1 or (k > 0 and k % self.ref_every == 0):
            ref, seen = self._reference_crop()
            if not seen.all():
                ref = np.where(seen, ref, ref[seen].mean() if seen.any() else 0.0)
            self._ref_spec = self._pc.spectrum(ref)
        self.n_frames += 1
        self.drift.append((float(dx), float(dy)))
        return FrameResult(index=k, time_s=float(time_s), dx_px=float(dx), dy_px=float(dy), differential_raw=z, evidence_raw=ev,
                           candidates=cands, seeds=list(self.tracker.seeds), new_seeds=new,
                           differential_step=self.step, frame_shape=self.shape)

    def _without_differential(self, time_s: float, dx: float, dy: float) -> FrameResult:
        """Count a frame that gets no differential (:attr:`too_small`, :attr:`drift_only`) with its
        drift (NaN when none was measured)."""
        k = self.n_frames
        self.n_frames += 1
        self.times.append(float(time_s))
        self.drift.append((float(dx), float(dy)))
        return FrameResult(index=k, time_s=float(time_s), dx_px=float(dx), dy_px=float(dy), differential_raw=None)

    def _candidates(self, region) -> list[Candidate]:
        """Blobs of each scale's evidence; where scales overlap, the finest one that sees the blob.

        A coarse scale detects a weak, growing seed first but merges close neighbours and
        places them less well; a finer scale separates and places them.
        """
        out: list[Candidate] = []
        for i, ev in enumerate(self._evidence.per_scale):
            reach = self.gate_px / self.step + 2 * self._evidence.scales[i]
            new = find_candidates(ev, self.threshold, self.low, region=region, min_roundness=self.min_roundness,
                                  split_prominence=self.split_prominence if i == 0 else 0.0,
                                  split_distance=self.split_distance_px / self.step)
            if out and new:
                ox, oy, os_ = (np.array([getattr(o, a) for o in out]) for a in ("x", "y", "sign"))
                cx, cy, cs = (np.array([getattr(c, a) for c in new]) for a in ("x", "y", "sign"))
                near = (np.hypot(cx[:, None] - ox[None], cy[:, None] - oy[None]) <= reach) & (cs[:, None] == os_[None])
                new = [c for c, n in zip(new, near.any(axis=1)) if not n]
            out += new
        out.sort(key=lambda c: -c.peak)
        return out

    def _scaled(self, cands: list[Candidate], k: int) -> list[Candidate]:
        """Candidates of the working grid in frame px; those that may start a new track (not
        near a track of their sign) with the frame at which their change began."""
        st = self.step
        tracks = self.tracker.seeds + self.tracker.tentative
        fresh = np.ones(len(cands), bool)
        if tracks and cands:
            tx, ty, ts = (np.array(v) for v in zip(*[(t.x_px, t.y_px, t.sign) for t in tracks]))
            # a candidate farther than the plain gate from the tracks may be a seed beside a grown one
            tg = np.full(len(tracks), self.tracker.gate_px)
            cx = np.array([c.x for c in cands]) * st
            cy = np.array([c.y for c in cands]) * st
            cs = np.array([c.sign for c in cands])
            d = np.hypot(cx[:, None] - tx[None], cy[:, None] - ty[None])
            fresh = ~((d <= tg[None]) & (cs[:, None] == ts[None])).any(axis=1)
        out = []
        for c, f in zip(cands, fresh):
            on = None
            if f:
                on = max(0, k - self._evidence.onset(int(round(c.y)), int(round(c.x)), c.sign))
            out.append(Candidate(x=c.x * st, y=c.y * st, sign=c.sign, peak=c.peak, area=c.area * st * st,
                                 onset=on, onset_time_s=None if on is None else self.times[on]))
        return out

    def _reference_crop(self):
        """The running reference over the registration crop, at frame resolution, and where it holds data."""
        st = self.step
        if st == 1:
            return self._imager.reference[self._crop], self._imager.seen[self._crop]
        ys, xs = self._crop
        y0, x0 = ys.start // st, xs.start // st
        ny, nx = -(-(ys.stop - ys.start) // st), -(-(xs.stop - xs.start) // st)
        ref = upsample_fourier(self._imager.reference[y0:y0 + ny, x0:x0 + nx], st)
        seen = np.repeat(np.repeat(self._imager.seen[y0:y0 + ny, x0:x0 + nx], st, 0), st, 1)
        oy, ox = ys.start - y0 * st, xs.start - x0 * st
        h, w = ys.stop - ys.start, xs.stop - xs.start
        return ref[oy:oy + h, ox:ox + w], seen[oy:oy + h, ox:ox + w]

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
        need = self._imager.n_init + self.tracker.persistence if self._imager else 3 + self.tracker.persistence
        if self.shape is not None and self.too_small:
            return (f"frames of {self.shape[1]}×{self.shape[0]} px are too small: need at least "
                    f"{(2 * self._imager.margin + MIN_SIZE) * self.step} px on each side for drift correction and "
                    f"differential images")
        if self.shape is not None and self.drift_only:
            return (f"frames of {self.shape[1]}×{self.shape[0]} px are too small for differential images: "
                    f"need at least {MIN_FRAME_PX} px on each side for the noise model measured from the "
                    "frames (the drift was measured)")
        if self.n_frames < need:
            return (f"only {self.n_frames} frame{'s' if self.n_frames != 1 else ''}: need at least {need} "
                    f"({need - self.tracker.persistence} for the reference + {self.tracker.persistence} "
                    "for persistence)")
        return (f"no change passed {self.threshold:g} σ in {self.tracker.persistence} frames "
                f"out of {self.n_frames}")


#: frames needed before a seed can be confirmed (median of 3 for the reference + persistence 2)
MIN_FRAMES = 5
#: smallest useful width (px) of the drift-corrected region
MIN_SIZE = 16
#: smallest frame side (px) whose differential the noise model calibrates (it needs 20 sampled
#: pixels in its reference-level bins); smaller frames get the drift only. Measured on Poisson
#: noise, 30 frames, 4 series each: 96, 92 and 88 px give a differential of standard deviation
#: 0.93-1.01 and no false seed; 80 px 4.6-5.2 (σ 5x too small) and a false seed; 64 px an
#: all-zero differential.
MIN_FRAME_PX = 96


def _open_input(path):
    """('session', Session) or ('frames', FrameFolder) for a path; UserError otherwise."""
    from insitu.analysis.image.frames_io import SUFFIXES, open_frames

    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such file or folder")
    if p.is_dir() or p.suffix.lower() in SUFFIXES:
        return "frames", open_frames(p)
    from insitu.core.session import open_session

    try:
        return "session", open_session(p)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{p}: not a session file or an image file ({exc.__class__.__name__}: {exc})") from None


def _read_or_fail(reader, source, what: str):
    """``reader(source)``, with any failure but a UserError turned into one naming ``source``."""
    try:
        return reader(source)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{source}: cannot read the {what}: {exc}") from None


def _load_correlation_inputs(microstructure, simulation):
    from insitu.analysis.transport.microstructure import Microstructure, read_microstructure

    micro = microstructure
    if micro is not None and not isinstance(micro, Microstructure):
        micro = _read_or_fail(read_microstructure, microstructure, "microstructure")
    sim = simulation
    if sim is not None and not hasattr(sim, "gb_table"):
        from insitu.analysis.transport.simulator import load_result

        sim = _read_or_fail(load_result, simulation, "simulation result")
    return micro, sim


class _DriftCsv:
    def __init__(self, path: Path):
        self.path = path
        self.fh = open(path, "w", newline="")
        self.w = csv.writer(self.fh)
        self.w.writerow(["frame", "dx_px", "dy_px"])

    def add(self, k: int, dx: float, dy: float) -> None:
        self.w.writerow([k, f"{dx:.4f}", f"{dy:.4f}"])
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


class _DiffH5:
    """differential.h5: /differential (n, ny, nx) float16 in σ, /frame, /time_s; one chunk a frame.

    Large frames are analysed on a grid of ``pixel_step`` (attribute) px, and stored so.
    """

    def __init__(self, path: Path):
        self.path = path
        self.f = None
        self.n = 0

    def add(self, k: int, t: float, z: np.ndarray, step: int = 1) -> None:
        import h5py

        if self.f is None:
            self.f = h5py.File(self.path, "w")
            ny, nx = z.shape
            self.f.create_dataset("differential", shape=(0, ny, nx), maxshape=(None, ny, nx),
                                  chunks=(1, ny, nx), dtype="f2")
            self.f.create_dataset("frame", shape=(0,), maxshape=(None,), dtype="i8", chunks=(1024,))
            self.f.create_dataset("time_s", shape=(0,), maxshape=(None,), dtype="f8", chunks=(1024,))
            self.f["differential"].attrs.update(units="sigma", pixel_step=step,
                                                coordinates="first frame (x = column, y = row); pixel (i, j) is "
                                                            "at frame position (pixel_step·i, pixel_step·j)",
                                                description="registered frame minus running reference, "
                                                            "divided by the local noise")
        n = self.n + 1
        for name in ("differential", "frame", "time_s"):
            self.f[name].resize(n, axis=0)
        self.f["differential"][self.n] = np.clip(z, -6e4, 6e4).astype(np.float16)
        self.f["frame"][self.n] = k
        self.f["time_s"][self.n] = t
        self.n = n
        if n % 20 == 0:
            self.f.flush()

    def close(self) -> None:
        if self.f is None:
            import h5py

            with h5py.File(self.path, "w") as f:   # an empty but valid file
                f.create_dataset("differential", shape=(0, 0, 0), dtype="f2")
                f.create_dataset("frame", shape=(0,), dtype="i8")
                f.create_dataset("time_s", shape=(0,), dtype="f8")
        else:
            self.f.close()
            self.f = None


def write_seeds_csv(table: dict, path) -> Path:
    """Write a seeds table with the binding columns (:data:`SEED_COLUMNS`)."""
    path = Path(path)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(SEED_COLUMNS)
        for i in range(len(table["id"])):
            w.writerow([int(table["id"][i]), int(table["first_frame"][i]), f"{table['first_time_s'][i]:.4f}",
                        f"{table['x_px'][i]:.3f}", f"{table['y_px'][i]:.3f}", int(table["sign"][i]),
                        int(table["area_px"][i]), f"{table['peak_snr'][i]:.3f}", int(table["last_frame"][i])])
    return path


def analyze(input_path, out_dir, microstructure=None, simulation=None, progress: Callable | None = None, *,
            live: bool = False, map_transform=None, poll_s: float = 0.5, idle_timeout_s: float = 120.0,
            **options) -> dict[str, Path]:
    """Run the whole analysis on a session file or a folder of frames; write the outputs to ``out_dir``.

    Parameters
    ----------
    input_path : session file (.h5), folder of frames (TIFF / Velox .emd / DM .dm3 .dm4, optional
        frames.csv ``index,time_s``) or one image file.
    out_dir : output folder (created).
    microstructure, simulation : a microstructure file (or :class:`Microstructure`) and a simulation
        folder (or :class:`SimulationResult`); both needed for the correlation.
    progress : called as ``progress(frames_done, frames_total_or_None)``.
    live : follow a session while it is being written until it is closed (or idle for idle_timeout_s).
    map_transform : :class:`~insitu.analysis.correlate.MapTransform` (microstructure -> frame px).
    options : passed to :class:`LiveAnalyzer`.

    Returns
    -------
    dict of paths: ``drift`` (drift.csv), ``differential`` (differential.h5), ``seeds`` (seeds.csv),
    ``report`` (report.html), ``summary`` (summary.json: counts, notes, statistics) and, with a
    microstructure and a simulation, ``correlation`` (correlation.csv) and ``statistics`` (statistics.json).
    What was computed before an error stays on disk (drift.csv row by row, seeds.csv on the way out).
    """
    import json
    import time

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot create the output folder: {exc.strerror}") from None
    kind, src = _open_input(input_path)
    micro, sim = _load_correlation_inputs(microstructure, simulation)
    if (micro is None) != (sim is None):
        raise UserError("the correlation needs both --microstructure and --simulation")
    if kind == "session" and src.n_frames == 0 and not live:
        src.close()
        raise UserError(f"{input_path}: the session has no frames to analyse")

    paths = dict(drift=out / "drift.csv", differential=out / "differential.h5", seeds=out / "seeds.csv",
                 report=out / "report.html", summary=out / "summary.json")
    la = LiveAnalyzer(**options)
    drift_csv = _DriftCsv(paths["drift"])
    diff_h5 = _DiffH5(paths["differential"])
    first = last = best_z = None
    best_idx, best_new = None, -1
    notes: list[str] = []

    def check_map(shape):
        if micro is not None and (map_transform is None or map_transform.is_identity) \
                and tuple(micro.grains.shape) != tuple(shape):
            raise UserError(f"{microstructure}: the map is {micro.grains.shape[1]}×{micro.grains.shape[0]} px but "
                            f"the frames are {shape[1]}×{shape[0]} px: give --map-transform "
                            "scale,rotation_deg,offset_x,offset_y")

    def handle(k, t, frame):
        nonlocal first, last, best_z, best_idx, best_new
        frame = np.asarray(frame)
        if frame.ndim != 2:
            raise UserError(f"{input_path}: frame {k} is not a 2-D image (shape {frame.shape})")
        if k == 0:
            check_map(frame.shape)
            first = frame.astype(np.float32)
        try:
            r = la.feed(frame, t)
        except ValueError as exc:
            raise UserError(f"{input_path}: {exc}") from None
        last = frame
        drift_csv.add(k, r.dx_px, r.dy_px)
        if r.differential_raw is not None:
            diff_h5.add(k, t, r.differential_raw, r.differential_step)
            if len(r.new_seeds) >= best_new:   # show the latest frame that confirmed the most seeds
                best_new = len(r.new_seeds)
                best_z, best_idx = FrameResult(k, t, r.dx_px, r.dy_px, r.differential_raw.copy(),
                                               differential_step=r.differential_step,
                                               frame_shape=r.frame_shape), k
        if progress is not None:
            progress(k + 1, None if live else total)

    total = src.n_frames if kind == "session" else None
    try:
        if kind == "frames":
            for k, t, frame in src.iter_frames():
                handle(k, t, frame)
            if src.n_read == 0:
                raise UserError(f"{input_path}: no frames")
        else:
            if src.n_frames:
                check_map(src.frame_shape)
            done = 0
            idle_since = time.monotonic()
            while True:
                for k, t, frame in src.iter_frames(done):
                    handle(k, t, frame)
                    done = k + 1
                    idle_since = time.monotonic()
                if not live or src.closed_cleanly:
                    if live:
                        src.refresh()
                        for k, t, frame in src.iter_frames(done):
                            handle(k, t, frame)
                            done = k + 1
                    break
                if time.monotonic() - idle_since > idle_timeout_s:
                    notes.append(f"stopped following the session: no new frame for {idle_timeout_s:g} s "
                                 f"and it is not closed (status {src.status!r})")
                    break
                time.sleep(poll_s)
                src.refresh()
            if done == 0:
                raise UserError(f"{input_path}: the session has no frames to analyse")
    finally:
        drift_csv.close()
        diff_h5.close()
        write_seeds_csv(la.seeds_table(), paths["seeds"])

    seeds = la.seeds_table()
    if la.n_unregistered:
        notes.append(f"{la.n_unregistered} of {la.n_frames} frames had no structure in common with the reference "
                     "(noise only, beam blanked or a jump): their drift was held at the previous value.")
    if not len(seeds["id"]):
        notes.append("No seeds found: " + la.why_nothing() + ".")
    summary = dict(input=str(input_path), n_frames=la.n_frames, frame_shape=list(la.shape or ()),
                   n_seeds=int(len(seeds["id"])), notes=notes, params=la.params)

    # -- ground truth (virtual specimen sessions) ----------------------------------------------------
    bias = None
    frame_pixel_m = None
    if kind == "session":
        bias = dict(time=src.bias["time"], voltage=src.bias["voltage"], current=src.bias["current"])
        ps = np.asarray(src.frame_table.get("pixel_size", []), float) if src.n_frames else np.zeros(0)
        frame_pixel_m = float(ps[0]) if ps.size and np.isfinite(ps[0]) and ps[0] > 0 else None
        if src.has("/entry/sample/truth/seeds"):
            from insitu.analysis.image.seeds import match_seeds

            truth = src.group("/entry/sample/truth/seeds")
            if "x_px" in truth and "y_px" in truth and "first_frame" in truth:
                sc = match_seeds(seeds, truth, radius_px=4.0)
                summary["truth"] = {k: sc[k] for k in ("tp", "fp", "fn", "f1", "mean_error_px", "median_latency")}
                notes.append(f"Against the recorded ground truth ({len(truth['x_px'])} seeds): F1 {sc['f1']:.2f}, "
                             f"mean position error {sc['mean_error_px']:.2f} px, median latency "
                             f"{sc['median_latency']} frames.")
        src.close()

    # -- correlation -----------------------------------------------------------------------------
    stats = None
    gb_map = None
    if micro is not None:
        from insitu.analysis import correlate as cor
        from insitu.analysis.transport.microstructure import boundary_pixels

        tr = map_transform or cor.MapTransform()
        bpix = boundary_pixels(micro.grains)
        table = cor.correlate_seeds(seeds, micro.grains, sim.gb_table, micro.electrodes, transform=tr, bpix=bpix)
        neg = cor.negative_electrode(getattr(sim, "potentials", {}) or {})
        pts = cor.gb_point_table(bpix, sim.gb_table)
        if getattr(sim, "floating", None):
            from insitu.analysis.transport.simulator import floating_message

            notes.append(f"Simulation: {floating_message(sim.floating)} (excluded: no current, no jump).")
        if neg is None or neg not in micro.electrodes:
            notes.append("No statistics: the simulation has no negative electrode (two electrodes at "
                         "different potentials are needed).")
        else:
            # the interface class in frame px: from the frames' pixel size, else the map's voxel size
            px_m = frame_pixel_m or float(micro.voxel_size_m) / tr.scale
            population = cor.gb_population(bpix, sim.gb_table, micro.electrodes, neg,
                                           current_density=sim.current_density, scale=tr.scale,
                                           interface_px=cor.INTERFACE_DISTANCE_M / px_m)
            stats, per_seed, gbs = cor.gb_statistics(table, population)
            stats["interface_distance_m"] = cor.INTERFACE_DISTANCE_M
            table.update(per_seed)
            paths["statistics"] = out / "statistics.json"
            paths["statistics"].write_text(json.dumps(stats, indent=2))
            paths["gb_statistics"] = out / "gb_statistics.csv"
            _write_columns(gbs, paths["gb_statistics"])
            summary["statistics"] = stats
        paths["correlation"] = out / "correlation.csv"
        _write_columns(table, paths["correlation"])
        jm = np.full(micro.grains.shape, np.nan)
        iy = np.clip(np.rint(pts["y"]).astype(int), 0, jm.shape[0] - 1)
        ix = np.clip(np.rint(pts["x"]).astype(int), 0, jm.shape[1] - 1)
        jm[iy, ix] = np.abs(pts["jump"])
        gb_map = dict(grains=micro.grains, jump_map=jm, seeds_x=table["x_map"], seeds_y=table["y_map"],
                      electrodes=micro.electrodes)

    from insitu.analysis.report import write_report

    write_report(paths["report"], title="insitu analysis", source=input_path, n_frames=la.n_frames, seeds=seeds,
                 drift=la.drift_table(), first_frame=first, last_frame=last,
                 last_drift=la.drift[-1] if la.drift else (0.0, 0.0),
                 differential=best_z.differential if best_z is not None else None,
                 differential_index=best_idx, bias=bias, gb_map=gb_map, stats=stats, notes=notes, params=la.params,
                 pixel_size_m=getattr(src, "pixel_size_m", None))
    paths["summary"].write_text(json.dumps(summary, indent=2, default=float))
    return paths


def _write_columns(table: dict, path: Path) -> None:
    cols = list(table)
    n = len(table[cols[0]]) if cols else 0
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for i in range(n):
            row = []
            for c in cols:
                v = table[c][i]
                if isinstance(v, (bool, np.bool_)):
                    row.append("true" if v else "false")
                elif isinstance(v, (float, np.floating)):
                    row.append(f"{float(v):.6g}")
                else:
                    row.append(v)
            w.writerow(row)
