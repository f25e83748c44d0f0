"""What feeds the window: the engine on instruments, a replayed session, or a synthetic feed.

A backend builds its record producer inside the worker thread (opening
instruments or a file can take time, and must never freeze the GUI), and
hands its records to the sinks it is given. Every backend offers:

``run(sinks)`` (blocking, in the worker thread), ``stop(reason)`` (thread-safe,
returns at once, also before ``run`` got going), ``finish(outcome)`` (cleanup in
the worker thread), ``pause()``/``resume()``, ``overlay_source()``, and the
flags the window needs (:class:`_Backend`: ``drives_source``, ``can_pause``,
``can_change_speed``, ``progress_records``, ``needs_protocol``, ``can_renew``
...). The window reads these capabilities; it never asks which kind of
source it has. Engine and replay runs go through :mod:`insitu.runner`, the
same runner as the command line.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

from insitu.runner import Stoppable


class _Backend(Stoppable):
    """What the window asks of any source; subclasses say what they can do through these flags
    (the window never asks what kind of source it has)."""

    #: a name for messages and the worker thread (display only)
    label = "source"
    #: the window title / header text
    mode_name = "source"
    #: an instrument output may be on while running: Abort must stay enabled, closing asks first
    drives_source = False
    can_pause = True
    #: the replay speed can change while running
    can_change_speed = False
    #: the ProgressRecords the source sends are the protocol's progress (else the window derives it
    #: from record times and the recorded step events)
    progress_records = True
    #: Start needs a protocol loaded
    needs_protocol = False
    #: after a run: Start offers another into the next free file name (Retry / New run)
    can_renew = False
    #: the status bar's word for the session file
    session_label = "session"
    #: button texts when they differ from Start / ABORT
    start_text: str | None = None
    abort_text: str | None = None
    identities = ""           # instrument identities for the status bar
    #: called with the run's own seed watcher when the run analyses its frames itself (a protocol
    #: with seed rules, see :class:`insitu.runner.ProtocolRunner`), before its first frame: the
    #: window sets it so that its live view shows that analysis instead of repeating it
    on_seed_watcher = None

    def __init__(self):
        super().__init__()            # .producer: the Runner / feed once built
        self.session_path: str | None = None
        self._duration_s = float("nan")

    # -- closed loop (until:, on_seed:); nothing for sources without an engine
    @property
    def engine(self):
        """The engine while a protocol runs (the runner's producer), else None."""
        return getattr(self.producer, "engine", None)

    def armed(self) -> dict:
        """The closed-loop rules armed now (``{}`` when none, or no engine)."""
        fn = getattr(self.engine, "armed", None)
        return fn() if callable(fn) else {}

    @property
    def held(self) -> bool:
        """An ``on_seed: hold`` waits for the operator (Resume)."""
        return getattr(self.engine, "state", None) == "held"

    def disarm(self, rule: str) -> None:
        """Disarm ``"on_seed"`` or the present step's ``"until"`` (said as an event)."""
        fn = getattr(self.engine, "disarm", None)
        if callable(fn):
            fn(rule)

    @property
    def duration_s(self) -> float:
        """Planned or recorded length of the run (experiment s; NaN when unknown)."""
        return self._known_duration_s()

    def _known_duration_s(self) -> float:
        return self._duration_s

    @duration_s.setter
    def duration_s(self, value: float) -> None:
        self._duration_s = float(value)

    _attach = Stoppable._publish

    def finish(self, outcome: str) -> None:
        pass

    def renew(self) -> bool:
        """Make ready for another run after one ended (Retry / New run); False when this backend cannot."""
        return False

    def overlay_source(self):
        """A callable giving ``(microstructure, gb_table or None, note)`` for the GB/electrode overlays,
        or None when this source has none (yet)."""
        return None


def next_free_path(path) -> Path:
    """``run.h5`` → ``run-2.h5`` (``-3``, ... while those exist): a new session never replaces an old one.

    Examples
    --------
    >>> next_free_path("/nonexistent/run.h5").name
    'run-2.h5'
    >>> next_free_path("/nonexistent/run-2.h5").name
    'run-3.h5'
    """
    import re

    p = Path(path)
    m = re.fullmatch(r"(.*)-(\d+)", p.stem)
    stem, k = (m.group(1), int(m.group(2)) + 1) if m else (p.stem, 2)
    while (p.parent / f"{stem}-{k}{p.suffix}").exists():
        k += 1
    return p.parent / f"{stem}-{k}{p.suffix}"


class FeedBackend(_Backend):
    """A :class:`~insitu.gui.feed.SyntheticFeed` (tests, benchmarks, demos without files)."""

    label = "feed"
    mode_name = "synthetic feed"

    def __init__(self, **feed_kwargs):
        super().__init__()
        self.feed_kwargs = feed_kwargs
        self.identities = "synthetic feed (no instruments)"
        self.duration_s = feed_kwargs.get("duration_s", 60.0)

    def run(self, sinks) -> str:
        from .feed import SyntheticFeed

        feed = SyntheticFeed(sinks, **self.feed_kwargs)
        if not self._attach(feed):
            return "aborted"
        return feed.run()


class ReplayClock:
    """A replay clock that can pause and change speed while running (thread-safe).

    Reads experiment seconds like :class:`~insitu.core.clock.Clock`; ``time_scale``
    is the present speed. Changing speed or pausing rebases the clock, so the
    time already played is kept.

    Examples
    --------
    >>> c = ReplayClock(speed=2.0)
    >>> c.pause(); t = c.now(); c.now() == t
    True
    """

    def __init__(self, speed: float = 1.0):
        self._lock = threading.Lock()
        self._rate = float(speed)
        self._base = 0.0
        self._wall = time.monotonic()
        self._paused = False

    @property
    def time_scale(self) -> float:
        return self._rate

    def _now_locked(self) -> float:
        if self._paused:
            return self._base
        return self._base + (time.monotonic() - self._wall) * self._rate

    def now(self) -> float:
        with self._lock:
            return self._now_locked()

    def _rebase(self) -> None:
        self._base = self._now_locked()
        self._wall = time.monotonic()

    def set_speed(self, speed: float) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed!r}")
        with self._lock:
            self._rebase()
            self._rate = float(speed)

    def pause(self) -> None:
        with self._lock:
            self._rebase()
            self._paused = True

    def resume(self) -> None:
        with self._lock:
            self._rebase()
            self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    def sleep(self, dt_s: float) -> None:
        if dt_s > 0:
            time.sleep(dt_s / self._rate)


class ReplayBackend(_Backend):
    """Plays a recorded session through :class:`insitu.runner.ReplayRunner`; no instrument is touched.

    Pause and speed changes work while playing: the player runs on a
    :class:`ReplayClock`, and a gate (the first sink) holds the player thread
    while paused.
    """

    label = "replay"
    mode_name = "replay"
    can_change_speed = True
    progress_records = False       # progress follows the record times and the recorded step events
    session_label = "replaying"
    start_text = "Play"
    abort_text = "STOP REPLAY  (no instrument)"

    def __init__(self, session_path: str | Path, speed: float = 1.0):
        super().__init__()
        self.session_path = str(session_path)
        self.speed = float(speed)
        self.clock = ReplayClock(self.speed)
        self._running = threading.Event()
        self._running.set()
        self.identities = f"replay of {Path(session_path).name} (no instruments)"

    @property
    def _player(self):
        return getattr(self.producer, "player", None)

    def _known_duration_s(self) -> float:
        p = self._player
        return float(p.duration_s) if p is not None else self._duration_s

    @property
    def t_first(self) -> float:
        """Time (s) of the first recorded record."""
        p = self._player
        return float(p.t_first) if p is not None else 0.0

    def set_speed(self, speed: float) -> None:
        """Change the replay speed (from the next record on)."""
        self.speed = float(speed)
        self.clock.set_speed(self.speed)

    def pause(self) -> None:
        self.clock.pause()
        self._running.clear()

    def resume(self) -> None:
        self.clock.resume()
        self._running.set()

    def stop(self, reason: str = "operator") -> None:
        super().stop(reason)
        self._running.set()   # release a paused gate

    def _stop_producer(self, producer, reason: str) -> None:
        producer.request_abort(reason)

    def _gate(self, record) -> None:
        while not self._running.is_set() and self._stop_reason is None:
            self._running.wait(0.05)

    def run(self, sinks) -> str:
        from insitu.core.errors import StoppedEarly
        from insitu.runner import ReplayRunner

        self.clock = clock = ReplayClock(self.speed)
        if not self._running.is_set():
            clock.pause()
        runner = ReplayRunner(self.session_path, None, speed=self.speed, clock=clock, program="insitu gui",
                              handle_signals=False)
        if not self._attach(runner):
            return "stopped"
        try:
            return runner.run((self._gate, *sinks)) or "complete"
        except StoppedEarly:          # stopped while the file was being opened
            return "stopped"

    def overlay_source(self):
        from .overlays import microstructure_from_session

        path = self.session_path
        return lambda: (microstructure_from_session(path), None, "")


class EngineBackend(_Backend):
    """Runs a protocol through :class:`insitu.runner.ProtocolRunner` (the same runner as ``insitu run``)
    on real or mock instruments, recording a session (and its log file).

    Parameters
    ----------
    config : InstrumentsConfig
    config_text : str
        The instruments TOML, stored in the session.
    protocol : Protocol
    out_path : path of the session file to write
    overwrite : bool
    time_scale : float
        Experiment seconds per wall second (mock instruments only).
    open_instruments : callable, optional
        ``open_instruments(config, clock, seed=...) -> Instruments``; default
        :func:`insitu.instruments.open_instruments` (tests inject plain mocks).
    """

    label = "engine"
    drives_source = True
    needs_protocol = True
    can_renew = True

    def __init__(self, config, config_text: str, protocol, out_path, *, overwrite: bool = False,
                 time_scale: float = 1.0, seed: int = 0, open_instruments=None):
        super().__init__()
        self._open_instruments = open_instruments
        if time_scale != 1.0 and not config.is_mock:
            from insitu.core.errors import UserError

            raise UserError("--time-scale is only allowed with mock instruments")
        self.config = config
        self.mode_name = "mock instruments" if config.is_mock else "live"
        self.probe_current_A = config.beam.probe_current_A
        #: expected frames per second (for the planned duration of acquire steps)
        self.frame_rate_hz = float(config.frames.rate_hz)
        self.config_text = config_text
        self.protocol = protocol
        self.session_path = str(out_path)
        self.overwrite = overwrite
        self.time_scale = time_scale
        self.seed = seed

    @property
    def runner(self):
        return self.producer

    @property
    def instruments(self):
        """The open instruments while a run is on (None before)."""
        return getattr(self.producer, "instruments", None)

    @property
    def writer(self):
        return getattr(self.producer, "writer", None)

    @property
    def identities(self) -> str:
        inst = self.instruments
        if inst is None:
            return "connecting on Start…"
        from insitu.runner import identities

        return identities(inst)

    def _stop_producer(self, producer, reason: str) -> None:
        producer.request_abort(reason)

    def run(self, sinks) -> str:
        from insitu.core.errors import StoppedEarly
        from insitu.runner import ProtocolRunner

        if self._stop_reason is not None:
            raise StoppedEarly(f"{self._stop_reason}: stopped before the run started (nothing switched on)")
        runner = ProtocolRunner(self.protocol, self.config, self.config_text, self.session_path,
                                overwrite=self.overwrite, time_scale=self.time_scale, seed=self.seed,
                                program="insitu gui", open_instruments=self._open_instruments,
                                handle_signals=False, on_seed_watcher=self.on_seed_watcher)
        self._attach(runner)   # a stop that came first reaches the runner: it stops before switching on
        return runner.run(sinks)

    def renew(self) -> bool:
        """A new run (after a fault: Retry) into the next free session name, with fresh connections."""
        with self._lock:
            self._stop_reason = None
            self.producer = None
        self.session_path = str(next_free_path(self.session_path))
        return True

    def overlay_source(self):
        spec = getattr(self.instruments, "specimen", None)
        if spec is None or getattr(spec, "microstructure", None) is None:
            return None
        sim = getattr(spec, "simulation", None)
        return lambda: (spec.microstructure, getattr(sim, "gb_table", None),
                        "GB jumps from the virtual specimen's transport simulation")
