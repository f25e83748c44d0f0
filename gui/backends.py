"""What feeds the window: the engine on instruments, a replayed session, or a synthetic feed.

A backend builds its record producer inside the worker thread (opening
instruments or a file can take time, and must never freeze the GUI), and
hands its records to the sinks it is given. Every backend offers:

``run(sinks)`` (blocking, in the worker thread), ``stop(reason)`` (thread-safe,
returns at once, also before ``run`` got going), ``finish(outcome)`` (cleanup in
the worker thread), ``pause()``/``resume()``, and the flags the window needs:
``drives_source`` (True when an instrument output may be on, so Abort must
stay enabled), ``can_pause``.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path


class _Backend:
    kind = "base"
    drives_source = False
    can_pause = True

    def __init__(self):
        self._lock = threading.Lock()
        self._stop_reason: str | None = None
        self.producer = None          # the Engine / Player / feed once built
        self.identities = ""           # instrument identities for the status bar
        self.session_path: str | None = None
        self.duration_s = float("nan")

    def _attach(self, producer) -> bool:
        """Publish the producer; if a stop came first, pass it on. Returns False when stopped."""
        with self._lock:
            self.producer = producer
            reason = self._stop_reason
        if reason is not None:
            self._stop_producer(producer, reason)
            return False
        return True

    def _stop_producer(self, producer, reason: str) -> None:
        producer.stop()

    def stop(self, reason: str = "operator") -> None:
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = reason
            producer = self.producer
        if producer is not None:
            self._stop_producer(producer, reason)

    def pause(self) -> None:
        if self.producer is not None and hasattr(self.producer, "pause"):
            self.producer.pause()

    def resume(self) -> None:
        if self.producer is not None and hasattr(self.producer, "resume"):
            self.producer.resume()

    def armed(self) -> dict:
        """The closed-loop rules armed now (``{}`` when none, or not an engine run)."""
        fn = getattr(self.producer, "armed", None)
        return fn() if callable(fn) else {}

    @property
    def held(self) -> bool:
        """An ``on_seed: hold`` waits for the operator."""
        return getattr(self.producer, "state", None) == "held"

    def disarm(self, rule: str) -> None:
        fn = getattr(self.producer, "disarm", None)
        if callable(fn):
            fn(rule)

    def finish(self, outcome: str) -> None:
        pass

    def renew(self) -> bool:
        """Make ready for another run after one ended (Retry / New run); False when this backend cannot."""
        return False


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

    kind = "feed"

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
    """Plays a recorded session through :class:`insitu.control.replay.Player`; no instrument is touched.

    Pause and speed changes work while playing: the player runs on a
    :class:`ReplayClock`, and a gate (the first sink) holds the player thread
    while paused.
    """

    kind = "replay"

    def __init__(self, session_path: str | Path, speed: float = 1.0):
        super().__init__()
        self.session_path = str(session_path)
        self.speed = float(speed)
        self.clock = ReplayClock(self.speed)
        self._running = threading.Event()
        self._running.set()
        self.identities = f"replay of {Path(session_path).name} (no instruments)"

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

    def _gate(self, record) -> None:
        while not self._running.is_set() and self._stop_reason is None:
            self._running.wait(0.05)

    def run(self, sinks) -> str:
        from insitu.control.replay import Player

        self.clock = clock = ReplayClock(self.speed)
        if not self._running.is_set():
            clock.pause()
        player = Player(self.session_path, speed=self.speed, sinks=(self._gate, *sinks), clock=clock)
        self.duration_s = float(getattr(player, "duration_s", float("nan")))
        self.t_first = float(getattr(player, "t_first", 0.0))
        if not self._attach(player):
            return "stopped"
        return player.run() or "complete"

    def finish(self, outcome: str) -> None:
        p = self.producer
        if p is not None and hasattr(p, "close"):
            p.close()


class EngineBackend(_Backend):
    """Runs a protocol with :class:`insitu.control.engine.Engine` on real or mock instruments, recording a session.

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

    kind = "engine"
    drives_source = True

    def __init__(self, config, config_text: str, protocol, out_path, *, overwrite: bool = False,
                 time_scale: float = 1.0, seed: int = 0, open_instruments=None):
        super().__init__()
        self._open_instruments = open_instruments
        if time_scale != 1.0 and not config.is_mock:
            from insitu.core.errors import UserError

            raise UserError("--time-scale is only allowed with mock instruments")
        self.config = config
        self.probe_current_A = config.beam.probe_current_A
        #: expected frames per second (for the planned duration of acquire steps)
        self.frame_rate_hz = float(config.frames.rate_hz)
        self.config_text = config_text
        self.protocol = protocol
        self.session_path = str(out_path)
        self.overwrite = overwrite
        self.time_scale = time_scale
        self.seed = seed
        self.instruments = None
        self.writer = None
        self.identities = "connecting on Start…"

    def _stop_producer(self, producer, reason: str) -> None:
        producer.request_abort(reason)

    def run(self, sinks) -> str:
        from insitu.core.clock import Clock
        from insitu.control.engine import Engine
        from insitu.core.session import SessionWriter

        if self._open_instruments is not None:
            open_instruments = self._open_instruments
        else:
            from insitu.instruments import open_instruments

        from insitu.core.errors import StoppedEarly

        if self._stop_reason is not None:
            raise StoppedEarly(f"{self._stop_reason}: stopped before the run started (nothing switched on)")
        clock = Clock(self.time_scale)
        self.instruments = inst = open_instruments(self.config, clock, seed=self.seed)
        ids = []
        for name, part in (("source_meter", inst.source_meter), ("beam_blanker", inst.blanker),
                           ("frames", inst.frames)):
            idn = getattr(part, "idn", None) if part is not None else None
            if idn:
                ids.append(str(idn))
        self.identities = " | ".join(ids) or "instruments open"
        self.writer = SessionWriter(self.session_path, overwrite=self.overwrite, start_time_iso=clock.start_iso,
                                    protocol_text=getattr(self.protocol, "text", "") or "",
                                    instruments_text=self.config_text, program="insitu gui")
        for name, part in (("source_meter", inst.source_meter), ("beam_blanker", inst.blanker),
                           ("frames", inst.frames)):
            idn = getattr(part, "idn", None) if part is not None else None
            if idn:
                try:
                    self.writer.set_instrument(name, {"identity": str(idn)})
                except Exception:
                    pass
        engine = Engine(self.protocol, inst, sinks=(self.writer, *sinks))
        if not self._attach(engine):  # Abort came while connecting: the engine never switched anything on
            raise StoppedEarly(f"{self._stop_reason}: stopped before the run started (nothing switched on)")
        from insitu.seedwatch import attach as attach_seed_watcher

        watcher = attach_seed_watcher(engine)   # until: {seeds}, on_seed: the detector in its own thread
        try:
            return engine.run()
        finally:
            if watcher is not None:
                watcher.stop(timeout_s=5.0)

    def renew(self) -> bool:
        """A new run (after a fault: Retry) into the next free session name, with fresh connections."""
        with self._lock:
            self._stop_reason = None
            self.producer = None
        self.instruments = self.writer = None
        self.session_path = str(next_free_path(self.session_path))
        self.identities = "connecting on Start…"
        return True

    def finish(self, outcome: str) -> None:
        inst, writer = self.instruments, self.writer
        try:
            if writer is not None and inst is not None and getattr(inst, "specimen", None) is not None:
                try:
                    inst.specimen.write_truth(writer)
                except Exception:
                    pass
        finally:
            try:
                if writer is not None:
                    writer.close({"complete": "complete", "aborted": "aborted"}.get(outcome, "fault"))
            finally:
                if inst is not None:
                    inst.close()
