"""Live analysis (drift, differential image, seeds) in its own thread.

The analysis takes the newest frame whenever it is free (frames that arrive
while it works are skipped, as on the display), so it never slows the
engine or the GUI; the GUI collects results from :attr:`results`.
"""
from __future__ import annotations

import threading

from .worker import LatestSlot


class AnalysisThread(threading.Thread):
    """Feed frames from ``frames`` (a :class:`LatestSlot` of FrameRecords) to a LiveAnalyzer.

    Parameters
    ----------
    frames : LatestSlot
        Filled by the record queue (one of its ``frame_slots``).
    analyzer : object with ``feed(frame, time_s)``, optional
        Default: :class:`insitu.analysis.pipeline.LiveAnalyzer`.

    max_rate_hz : float
        At most this many frames analysed per wall second (the newest is
        taken each time), so that an accelerated mock run does not starve
        the engine thread of the interpreter lock.

    A daemon thread: it holds nothing that needs a safe stop.
    """

    def __init__(self, frames: LatestSlot, analyzer=None, *, max_rate_hz: float = 4.0):
        super().__init__(name="insitu-live-analysis", daemon=True)
        if analyzer is None:
            from insitu.analysis.pipeline import LiveAnalyzer

            analyzer = LiveAnalyzer(workers=1)
        self.analyzer = analyzer
        self.frames = frames
        self.results = LatestSlot()
        self.new_seeds: list = []          # (time_s, seed) of every seed confirmed; GUI pops them
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.error: str | None = None
        self.n_fed = 0
        self._shape = None
        self.min_interval_s = 1.0 / max_rate_hz if max_rate_hz > 0 else 0.0

    def run(self) -> None:
        import time

        last = 0.0
        while not self._stop.is_set():
            wait = last + self.min_interval_s - time.monotonic()
            if wait > 0:
                self._stop.wait(wait)
                continue
            rec = self.frames.take()
            if rec is None:
                self._stop.wait(0.02)
                continue
            if self._shape is not None and rec.data.shape != self._shape:
                continue  # a different series (should not happen within a run)
            last = time.monotonic()
            try:
                res = self.analyzer.feed(rec.data, rec.time_s)
            except Exception as exc:  # analysis must never take the GUI down
                self.error = f"{type(exc).__name__}: {exc}"
                return
            self._shape = rec.data.shape
            self.n_fed += 1
            new = getattr(res, "new_seeds", None) or []
            if new:
                with self._lock:
                    self.new_seeds.extend((rec.time_s, s) for s in new)
            self.results.put(res)

    def pop_new_seeds(self) -> list:
        with self._lock:
            out, self.new_seeds = self.new_seeds, []
        return out

    def stop(self) -> None:
        self._stop.set()
