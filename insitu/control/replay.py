"""Replay a recorded session: its records re-emitted to sinks at ``speed`` × the recorded timing.

The same sinks a live run feeds (a :class:`~insitu.core.session.SessionWriter`,
live analysis, the GUI) receive :class:`~insitu.core.records.BiasSample`,
:class:`~insitu.core.records.BeamSample`, :class:`~insitu.core.records.EventRecord` and
:class:`~insitu.core.records.FrameRecord` with their recorded times, in time order,
each when the replay clock reaches it.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from insitu.core.clock import Clock
from insitu.core.records import BeamSample, BiasSample, EventRecord, FrameRecord, ProgressRecord


def _merged(session) -> list[tuple[float, int, str, int]]:
    """(time, kind order, kind, row) of every record, sorted by time (stable by kind then row)."""
    items: list[tuple[float, int, str, int]] = []
    for order, (kind, times) in enumerate((("event", [e[0] for e in session.events]),
                                           ("beam", session.beam["time"]),
                                           ("bias", session.bias["time"]),
                                           ("frame", session.frame_table["time"]))):
        items.extend((float(t), order, kind, i) for i, t in enumerate(times) if np.isfinite(t))
    items.sort()
    return items


class Player:
    """Re-emit a recorded session to sinks at ``speed`` × its recorded timing.

    Parameters
    ----------
    session_path : str or Path
    speed : float
        1 = recorded timing, 10 = ten times faster.
    sinks : iterable of callables
        Each receives every record (``sink(record)``).
    clock : Clock, optional
        Replay clock; by default ``Clock(time_scale=speed)`` started at ``run()``.
        Record time ``t`` is emitted when the clock has advanced ``t - t_first``
        since ``run()``; a clock that pauses (``now()`` stands still) or
        changes ``time_scale`` is followed.

    Example
    -------
    >>> got = []
    >>> Player("run.h5", speed=10, sinks=[got.append]).run()   # doctest: +SKIP
    """

    def __init__(self, session_path, speed: float = 1.0, sinks: Iterable[Callable] = (), clock: Clock | None = None):
        from insitu.core.errors import UserError
        from insitu.core.session import open_session

        if not (speed > 0 and np.isfinite(speed)):
            raise UserError(f"replay speed must be a finite number > 0, got {speed!r}")
        self.path = Path(session_path)
        self.speed = float(speed)
        self.sinks = list(sinks)
        self._clock = clock
        self.session = open_session(self.path)
        self._items = _merged(self.session)
        self.t_first = self._items[0][0] if self._items else 0.0
        self.t_last = self._items[-1][0] if self._items else 0.0
        self._stop = threading.Event()
        self.n_emitted = 0
        self.state = "idle"

    @property
    def duration_s(self) -> float:
        """Recorded span (s) from the first to the last record; the replay takes ``duration_s / speed``."""
        return self.t_last - self.t_first

    def _record(self, kind: str, i: int):
        s = self.session
        if kind == "bias":
            b = s.bias
            return BiasSample(float(b["time"][i]), float(b["setpoint"][i]), float(b["voltage"][i]),
                              float(b["current"][i]), bool(b["compliance"][i]))
        if kind == "beam":
            b = s.beam
            return BeamSample(float(b["time"][i]), bool(b["blanked"][i]), float(b["dose_rate"][i]))
        if kind == "event":
            return EventRecord.from_row(*s.events[i])   # a step event gets its step fields back
        ft = s.frame_table
        return FrameRecord(float(ft["time"][i]), np.asarray(s.frame(i)), float(ft["bias"][i]),
                           float(ft["current"][i]), bool(ft["blanked"][i]), float(ft["dose"][i]),
                           float(ft["pixel_size"][i]), float(ft["drift_x"][i]), float(ft["drift_y"][i]),
                           meta={"replay_of": str(self.path), "index": i})

    def run(self) -> str:
        """Emit every record at its time; returns ``"complete"`` or ``"stopped"``."""
        clock = self._clock or Clock(time_scale=self.speed)
        t0 = clock.now()
        self.state = "running"
        n_frames = self.session.n_frames
        for t, _, kind, i in self._items:
            due = t - self.t_first
            # wait in short slices so that a clock that pauses or changes speed (GUI) is followed
            while not self._stop.is_set():
                remaining = due - (clock.now() - t0)
                if remaining <= 0:
                    break
                scale = clock.time_scale if clock.time_scale > 0 else 1.0
                self._stop.wait(min(remaining / scale, 0.05))
            if self._stop.is_set():
                break
            rec = self._record(kind, i)
            for sink in self.sinks:
                sink(rec)
            self.n_emitted += 1
            if kind == "frame":
                progress = ProgressRecord(t, i, n_frames, "replay", due, self.duration_s - due)
                for sink in self.sinks:
                    sink(progress)
        self.state = "done"
        return "stopped" if self._stop.is_set() else "complete"

    def stop(self) -> None:
        """Stop at the next record (thread-safe, returns at once)."""
        self._stop.set()

    def close(self) -> None:
        self.session.close()


def replay(session_path, speed: float = 1.0, sinks: Iterable[Callable] = ()) -> str:
    """Play a session to ``sinks`` and close it (see :class:`Player`)."""
    p = Player(session_path, speed, sinks)
    try:
        return p.run()
    finally:
        p.close()


__all__ = ["Player", "replay"]
