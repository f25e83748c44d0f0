"""Live analysis (drift, differential image, seeds) in its own thread.

The analysis takes the newest frame whenever it is free (frames that arrive
while it works are skipped, as on the display), so it never slows the
engine or the GUI; the GUI collects results from :attr:`results`.

A closed-loop run already analyses every recorded frame in its seed watcher
(:class:`insitu.seedwatch.SeedWatcher`, for ``until: {seeds}`` and
``on_seed:``). Then :meth:`AnalysisThread.follow` makes this thread show the
watcher's results instead of running a second detector on the same frames
(on two cores that would double the analysis cost of the experiment).
"""
from __future__ import annotations

import threading

from .worker import LatestSlot


class AnalysisThread(threading.Thread):
    """Feed frames from ``frames`` (a :class:`LatestSlot` of FrameRecords) to a LiveAnalyzer,
    or pass on the results of a run's seed watcher (:meth:`follow`).

    Parameters
    ----------
    frames : LatestSlot
        Filled by the record queue (one of its ``frame_slots``).
    analyzer : object with ``feed(frame, time_s)``, optional
        Default: :class:`insitu.analysis.pipeline.LiveAnalyzer`.

    max_rate_hz : float
        At most this many frames analysed (or results passed on) per wall
        second (the newest is taken each time), so that an accelerated mock run
        does not starve the engine thread of the interpreter lock.

    The results in :attr:`results` have their frame-sized differential image
    ready (enlarged here from a coarse working grid, not on the GUI thread).
    A daemon thread: it holds nothing that needs a safe stop.

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> watcher = NS(analyzer="the loop's detector", result_sinks=[], error=None)
    >>> a = AnalysisThread(LatestSlot(), analyzer="unused")
    >>> a.follow(watcher)
    >>> watcher.result_sinks[0](NS(time_s=2.0, new_seeds=["s1"], differential=None))
    >>> a.analyzer, a.n_shared, a.pop_new_seeds()
    ("the loop's detector", 1, [(2.0, 's1')])
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
        self._halt = threading.Event()
        self._finish = threading.Event()
        self.error: str | None = None
        #: frames this thread fed to its own analyzer
        self.n_fed = 0
        #: results received from the followed seed watcher (each analysed once, there)
        self.n_shared = 0
        self._watcher = None
        self._shared = LatestSlot()        # the watcher's newest result, not yet passed on
        self._shape = None
        self.min_interval_s = 1.0 / max_rate_hz if max_rate_hz > 0 else 0.0

    def follow(self, watcher) -> None:
        """Show the results of ``watcher`` (a :class:`~insitu.seedwatch.SeedWatcher` already analysing
        every frame of the run) instead of analysing frames here. Call before the run's first frame
        (:class:`~insitu.runner.ProtocolRunner` ``on_seed_watcher``); any thread."""
        with self._lock:
            self.analyzer = watcher.analyzer
            self._watcher = watcher
        watcher.result_sinks.append(self._take_shared)

    def _take_shared(self, res) -> None:
        """A result of the followed watcher (its thread; never waits)."""
        new = getattr(res, "new_seeds", None) or []
        with self._lock:
            self.n_shared += 1
            if new:   # every seed, also of results the display skips
                self.new_seeds.extend((res.time_s, s) for s in new)
        self._shared.put(res)

    def run(self) -> None:
        import time

        last = 0.0
        while not self._halt.is_set():
            wait = last + self.min_interval_s - time.monotonic()
            if wait > 0:
                self._halt.wait(wait)
                continue
            if self._watcher is not None:
                self.frames.take()           # the watcher analyses every frame: nothing to do here
                if self._watcher.error is not None:
                    self.error = self._watcher.error
                    return
                res = self._shared.take()
                if res is None:
                    if self._finish.is_set() and self._watcher.done:
                        break                # the run has ended and its watcher has said all
                    self._halt.wait(0.02)
                    continue
                last = time.monotonic()
                self._publish(res)
                continue
            rec = self.frames.take()
            if rec is None:
                self._halt.wait(0.02)
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
            self._publish(res)
        res = self._shared.take()            # the watcher's last result, once it has stopped
        if res is not None:
            self._publish(res)

    def _publish(self, res) -> None:
        getattr(res, "differential", None)   # enlarge a coarse differential here, not on the GUI thread
        self.results.put(res)

    def pop_new_seeds(self) -> list:
        with self._lock:
            out, self.new_seeds = self.new_seeds, []
        return out

    def stop(self) -> None:
        """End the thread now."""
        self._halt.set()

    def finish(self) -> None:
        """The run has ended: end the thread once the followed watcher has analysed the frames it
        still holds and their results are passed on (it may lag the run by seconds, when its first
        frames load or compile the detector's kernels), or now when no watcher is followed."""
        if self._watcher is None:
            self.stop()
        else:
            self._finish.set()
