"""A synthetic record producer: drives the GUI without instruments or files.

:class:`SyntheticFeed` emits the same records as the engine or a replay
(:mod:`insitu.core.records`) at configurable rates on an (accelerated)
:class:`~insitu.core.clock.Clock`. The GUI tests and ``bench/bench_gui.py`` use
it to measure the display alone; it touches no instrument.
"""
from __future__ import annotations

import threading

import numpy as np

from insitu.core.clock import Clock
from insitu.core.records import BeamSample, BiasSample, EventRecord, FrameRecord, ProgressRecord


def make_frames(shape=(1024, 1024), n: int = 4, seed: int = 0) -> list[np.ndarray]:
    """``n`` HAADF-like uint16 frames (smooth grains + Poisson noise), cheap to cycle through."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    base = 800 + 200 * np.sin(xx / 37.0) * np.cos(yy / 53.0) + 100 * np.sin((xx + yy) / 91.0)
    return [rng.poisson(np.clip(base, 1, None)).astype(np.uint16) for _ in range(n)]


class SyntheticFeed:
    """Emit bias samples, progress, beam, events and frames to ``sinks`` until ``duration_s``.

    Parameters
    ----------
    sinks : sequence of callables
    duration_s : float
        Experiment seconds to run.
    sample_interval_s : float
        Bias sample period (experiment s).
    frame_rate_hz : float
        Frames per experiment second (0: none).
    frame_shape : (ny, nx)
    time_scale : float
        Experiment seconds per wall second.
    pixel_size_m : float
    frames : list of arrays, optional
        Frames to cycle through (default: :func:`make_frames`).

    ``run()`` blocks; ``stop()``/``request_abort()``, ``pause()``, ``resume()``
    are thread-safe, as on the engine.
    """

    def __init__(self, sinks=(), *, duration_s: float = 60.0, sample_interval_s: float = 0.1,
                 frame_rate_hz: float = 10.0, frame_shape=(256, 256), time_scale: float = 1.0,
                 pixel_size_m: float = 5e-9, frames=None, clock: Clock | None = None):
        self.sinks = list(sinks)
        self.duration_s = float(duration_s)
        self.sample_interval_s = float(sample_interval_s)
        self.frame_rate_hz = float(frame_rate_hz)
        self.clock = clock or Clock(time_scale)
        self.pixel_size_m = pixel_size_m
        self._frames = frames if frames is not None else (make_frames(frame_shape) if frame_rate_hz > 0 else [])
        self._stop = threading.Event()
        self._paused = threading.Event()
        self.state = "idle"
        self.n_frames = 0
        self.n_samples = 0

    def _emit(self, rec) -> None:
        for s in self.sinks:
            s(rec)

    def voltage_at(self, t_s: float) -> float:
        """Setpoint (V): ramp to 10 V over the first 10 % of the run, then a slow triangle 10–17 V."""
        ramp = 0.1 * self.duration_s
        if t_s < ramp:
            return 10.0 * t_s / ramp
        phase = ((t_s - ramp) / max(self.duration_s - ramp, 1e-9) * 4) % 2
        return 10.0 + 7.0 * (phase if phase < 1 else 2 - phase)

    def run(self) -> str:
        self.state = "running"
        clk = self.clock
        t_next_sample = 0.0
        t_next_frame = 0.0
        period = 1.0 / self.frame_rate_hz if self.frame_rate_hz > 0 else float("inf")
        dose = 0.0
        dose_rate = 100.0
        self._emit(EventRecord(clk.now(), "start", "synthetic feed"))
        self._emit(BeamSample(clk.now(), False, dose_rate))
        t_pause_total = 0.0
        t0 = clk.now()
        try:
            while not self._stop.is_set():
                if self._paused.is_set():
                    t0 = clk.now()
                    self.state = "paused"
                    while self._paused.is_set() and not self._stop.is_set():
                        self._stop.wait(0.01)
                    t_pause_total += clk.now() - t0
                    self.state = "running"
                    continue
                now = clk.now()
                tp = now - t0 - t_pause_total
                end = tp >= self.duration_s
                tp = min(tp, self.duration_s)   # late wake-up: still emit everything due up to the end
                while t_next_sample <= tp:
                    v = self.voltage_at(t_next_sample)
                    i = v / 50e6 * (1 + 0.02 * np.sin(t_next_sample))
                    ts = t0 + t_pause_total + t_next_sample  # record time: when it was due
                    self._emit(BiasSample(ts, v, v, i, False))
                    self._emit(ProgressRecord(ts, int(tp // (self.duration_s / 5)), 5, "synthetic", tp,
                                              self.duration_s - tp))
                    self.n_samples += 1
                    t_next_sample += self.sample_interval_s
                while t_next_frame <= tp:
                    data = self._frames[self.n_frames % len(self._frames)]
                    dose += dose_rate * period
                    v = self.voltage_at(t_next_frame)
                    self._emit(FrameRecord(t0 + t_pause_total + t_next_frame, data, v, v / 50e6, False, dose,
                                           self.pixel_size_m))
                    self.n_frames += 1
                    t_next_frame += period
                if end:
                    break
                nxt = min(t_next_sample, t_next_frame) + t0 + t_pause_total
                self._stop.wait(max(0.0, (nxt - clk.now()) / clk.time_scale))
        finally:
            self._emit(EventRecord(clk.now(), "end", "aborted" if self._stop.is_set() else "complete"))
            self.state = "done"
        return "complete"

    def emit_all(self) -> None:
        """Emit the whole run at once (no waiting), with record times 0 … ``duration_s``."""
        period = 1.0 / self.frame_rate_hz if self.frame_rate_hz > 0 else float("inf")
        dose_rate = 100.0
        self._emit(EventRecord(0.0, "start", "synthetic feed"))
        self._emit(BeamSample(0.0, False, dose_rate))
        n_s = int(np.floor(self.duration_s / self.sample_interval_s + 1e-9)) + 1
        n_f = int(np.floor(self.duration_s / period + 1e-9)) + 1 if self._frames else 0
        ts = np.arange(n_s) * self.sample_interval_s
        tf = np.arange(n_f) * period
        i = j = 0
        while i < n_s or j < n_f:
            if j >= n_f or (i < n_s and ts[i] <= tf[j]):
                t = float(ts[i])
                v = self.voltage_at(t)
                self._emit(BiasSample(t, v, v, v / 50e6 * (1 + 0.02 * np.sin(t)), False))
                i += 1
            else:
                t = float(tf[j])
                v = self.voltage_at(t)
                self._emit(FrameRecord(t, self._frames[j % len(self._frames)], v, v / 50e6, False,
                                       dose_rate * t, self.pixel_size_m))
                j += 1
        self.n_samples, self.n_frames = n_s, n_f
        self._emit(EventRecord(self.duration_s, "end", "complete"))

    def stop(self, reason: str = "operator") -> None:
        self._stop.set()

    request_abort = stop

    def pause(self) -> None:
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()


def record_synthetic_session(path, *, duration_s: float = 10.0, sample_interval_s: float = 0.1,
                             frame_rate_hz: float = 1.0, frame_shape=(128, 128), overwrite: bool = True):
    """Write a session file from a :class:`SyntheticFeed` as fast as the disk allows (tests, benchmarks).

    Returns the path. Record times are the feed's experiment times (s), as if recorded live.
    """
    from insitu.core.session import SessionWriter

    clock = Clock()
    with SessionWriter(path, overwrite=overwrite, start_time_iso=clock.start_iso, program="insitu.gui.feed",
                       when_full="wait") as wr:  # as fast as the disk allows, every frame kept
        SyntheticFeed([wr], duration_s=duration_s, sample_interval_s=sample_interval_s,
                      frame_rate_hz=frame_rate_hz, frame_shape=frame_shape, clock=clock).emit_all()
        wr.close("complete")
    return path
