"""Live analysis in the loop: recorded frames -> the seed detector (own thread) -> the engine's inbox.

:class:`SeedWatcher` is a record sink (like the session writer): it takes the
:class:`~insitu.core.records.FrameRecord` s a run records, queues them without
waiting, and feeds them in its own thread to
:class:`~insitu.analysis.pipeline.LiveAnalyzer`. Each seed the detector
confirms becomes a :class:`~insitu.core.records.SeedRecord` handed to ``post``
(e.g. :meth:`insitu.control.engine.Engine.post_seed`), which the engine drains
every tick and reacts to (``until: {seeds: N}``, ``on_seed:``). The control
thread never runs the detector.

Frames are numbered in the order the watcher receives them: the recorded
frames of the session, from 0, so a replay of the session
(:func:`replay_triggers`) numbers them the same way.

Example
-------
>>> import numpy as np
>>> from insitu.core.records import FrameRecord
>>> got = []
>>> w = SeedWatcher(got.append).start()
>>> rng = np.random.default_rng(0)
>>> for k in range(10):
...     f = rng.poisson(100, (96, 96)).astype(float)
...     if k >= 5:
...         f[48:53, 32:37] += 60          # a bright 5-px seed appears in frame 5
...     w(FrameRecord(25.0 * k, f, 0.0, 0.0, False, 0.0, 2e-8))
>>> w.stop()
>>> [(s.first_frame, s.confirm_frame, round(s.x_px), round(s.y_px)) for s in got]
[(5, 7, 34, 50)]
"""
from __future__ import annotations

import queue
import threading
import traceback
from typing import Callable, Iterable

import numpy as np

from insitu.analysis.pipeline import FrameResult, LiveAnalyzer
from insitu.core.records import FrameRecord, SeedRecord

_STOP = object()


class SeedWatcher:
    """Feed recorded frames to the live seed detector in a thread of its own; post confirmed seeds.

    Parameters
    ----------
    post : callable
        Receives each confirmed seed as a :class:`SeedRecord` (from the watcher's thread).
    analyzer : LiveAnalyzer, optional
        The detector (default: ``LiveAnalyzer(workers=1)``, the settings ``insitu analyze`` uses).
    on_error : callable, optional
        Receives one line when the detector fails (the run goes on; no more seeds are posted).
    result_sinks : iterable of callables, optional
        Each receives every :class:`~insitu.analysis.pipeline.FrameResult` (from the watcher's
        thread, after the seeds are posted), so that a live view shows this analysis instead of
        analysing the frames a second time (the GUI's, :mod:`insitu.gui.analysis_thread`). More
        can be appended to :attr:`result_sinks` before the first frame. A sink must not wait; one
        that raises is dropped (the detection goes on), its error in :attr:`sink_error`.
    """

    def __init__(self, post: Callable[[SeedRecord], None], *, analyzer: LiveAnalyzer | None = None,
                 on_error: Callable[[str], None] | None = None,
                 result_sinks: Iterable[Callable[[FrameResult], None]] = ()):
        self.post = post
        self.analyzer = analyzer if analyzer is not None else LiveAnalyzer(workers=1)
        self.on_error = on_error
        self.result_sinks: list[Callable[[FrameResult], None]] = list(result_sinks)
        self.sink_error: str | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        #: frames received (the next frame's index) and frames analysed
        self.n_received = 0
        self.n_analysed = 0
        #: every seed posted, in order
        self.seeds: list[SeedRecord] = []
        self.error: str | None = None
        self._done = threading.Event()

    # -- the sink side (any thread, never waits) --------------------------------------------------
    def __call__(self, record) -> None:
        """Take a record; frames are queued for the detector, everything else is ignored."""
        if isinstance(record, FrameRecord):
            self._queue.put((self.n_received, float(record.time_s), record.data))
            self.n_received += 1

    # -- the detector side ------------------------------------------------------------------------------
    def analyse(self, index: int, time_s: float, data: np.ndarray) -> list[SeedRecord]:
        """Feed frame ``index`` (taken at ``time_s``, s) to the detector; post and return the seeds it confirms."""
        res = self.analyzer.feed(np.asarray(data), time_s)
        self.n_analysed += 1
        out = []
        for s in res.new_seeds:
            k = index if s.confirmed_frame is None else int(s.confirmed_frame)
            rec = SeedRecord(float(time_s), int(s.id), float(s.x_px), float(s.y_px), int(s.first_frame), k,
                             float(time_s))
            out.append(rec)
            self.seeds.append(rec)
            self.post(rec)
        for sink in list(self.result_sinks):
            try:
                sink(res)
            except Exception as exc:  # noqa: BLE001 - a failing view must not stop the loop's detector
                self.result_sinks.remove(sink)
                if self.sink_error is None:
                    self.sink_error = f"{type(exc).__name__}: {exc}"
        return out

    @property
    def done(self) -> bool:
        """The detector thread has ended: every frame queued before :meth:`stop` is analysed (or
        skipped after an error), every result handed to the sinks."""
        return self._done.is_set()

    def _loop(self) -> None:
        try:
            self._analyse_queue()
        finally:
            self._done.set()

    def _analyse_queue(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self.error is not None:
                continue
            try:
                self.analyse(*item)
            except Exception as exc:  # noqa: BLE001 - the run must go on without live seeds
                self.error = f"live seed detection stopped at frame {item[0]}: {type(exc).__name__}: {exc}"
                if self.on_error is not None:
                    try:
                        self.on_error(self.error)
                    except Exception:
                        traceback.print_exc()

    def start(self) -> "SeedWatcher":
        """Start the detector thread (returns self)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="seed-watcher", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float | None = None) -> None:
        """Analyse the frames already queued, then end the thread (waits at most ``timeout_s``)."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout_s)
            self._thread = None


def attach(engine, **kw) -> SeedWatcher | None:
    """Give ``engine`` a running :class:`SeedWatcher` when its protocol reacts to seeds (else None).

    The watcher joins the engine's sinks (it sees every recorded frame) and posts to
    :meth:`~insitu.control.engine.Engine.post_seed`; a detector failure becomes an ``info``
    event. Stop it with :meth:`SeedWatcher.stop` after the run.
    """
    if not engine.needs_seeds:
        return None
    watcher = SeedWatcher(engine.post_seed, on_error=lambda msg: engine.note("info", msg), **kw)
    engine.sinks.append(watcher)
    return watcher.start()


def _step_starts(events) -> list[tuple[float, int]]:
    """(clock time, flat step index) of every ``step`` event ``[i/n] ...`` of a session."""
    out = []
    for t, kind, msg in events:
        if kind == "step" and msg.startswith("["):
            head = msg[1:msg.find("]")]
            i, _, _ = head.partition("/")
            if i.isdigit():
                out.append((float(t), int(i) - 1))
    return out


#: events after which the engine drains no more seeds (the run ended, or an abort began the ramp-down)
_LAST_DRAIN_KINDS = ("abort", "end")


def replay_triggers(session_path, *, analyzer: LiveAnalyzer | None = None) -> tuple[list, list]:
    """Replay a recorded session through the player and a :class:`SeedWatcher`; the rules it fires.

    The recorded frames go through :class:`insitu.control.replay.Player` into a
    SeedWatcher, as in the live run; the seeds it confirms are judged by the same
    rules (:mod:`insitu.control.rules`) against the recorded step starts and
    current readings. Seeds are taken in the order of their confirmation frames,
    up to the event that ended the steps.

    Returns
    -------
    (seeds, triggers) : list of SeedRecord, list of Trigger
    """
    from insitu.control.plan import plan
    from insitu.control.protocol import parse_protocol
    from insitu.control.replay import Player
    from insitu.control.rules import UntilWatch, seed_trigger

    seeds: list[SeedRecord] = []
    watcher = SeedWatcher(seeds.append, analyzer=analyzer).start()
    player = Player(session_path, speed=1e9, sinks=[watcher])
    try:
        player.run()
        watcher.stop()
        session = player.session
        protocol = parse_protocol(session.protocol_text, str(session_path))
        events = list(session.events)
        t_bias = np.asarray(session.bias["time"], float)
        i_bias = np.asarray(session.bias["current"], float)
    finally:
        player.close()
    if watcher.error:
        raise RuntimeError(watcher.error)
    flat = plan(protocol)
    starts = _step_starts(events)
    t_end = min([t for t, k, _ in events if k in _LAST_DRAIN_KINDS] or [np.inf])
    seeds = [s for s in seeds if s.confirm_time_s <= t_end]
    triggers = []
    for s in seeds:
        trig = seed_trigger(protocol.on_seed, s)
        if trig is not None:
            triggers.append((s.confirm_time_s, trig))
    for j, (t0, idx) in enumerate(starts):
        st = flat[idx]
        if st.until is None:
            continue
        t1 = starts[j + 1][0] if j + 1 < len(starts) else t_end
        w = UntilWatch(st.until, t0)
        pending = [(s.confirm_time_s, 0, s) for s in seeds if t0 <= s.confirm_time_s < t1]
        pending += [(float(t), 1, float(i)) for t, i in zip(t_bias, i_bias) if t0 <= t <= t1]
        for t, kind, what in sorted(pending, key=lambda p: (p[0], p[1])):
            trig = w.seed(what) if kind == 0 else w.current(what)
            if trig is not None:
                triggers.append((t, trig))
                break
    triggers.sort(key=lambda p: p[0])
    return seeds, [t for _, t in triggers]
