"""One monotonic clock for a whole experiment.

Every record (bias sample, beam state, frame, event) carries ``Clock.now()``:
seconds since the clock was started. With ``time_scale`` > 1 (mock instruments
only) the clock runs faster than the wall: an hour-long protocol takes
``3600 / time_scale`` real seconds, and every mock instrument reads the same
accelerated time.

An accelerated clock is *elastic*: the engine tells it how far it may run
(:meth:`Clock.hold_at`, its next tick), and when the engine falls behind (a
loaded machine) the clock waits for it instead of running ahead. So a mock run
has every sample of its timeline whatever the load; only the wall time
stretches. A real-time clock (``time_scale`` 1) is never held: real instruments
keep real time.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime, timezone


class Clock:
    """Seconds since start, optionally accelerated.

    Parameters
    ----------
    time_scale : float
        Experiment seconds per real second (1 for real instruments).
    elastic : bool, optional
        Whether :meth:`hold_at` may stop the clock (default: when ``time_scale`` != 1,
        which only mock instruments allow).

    Examples
    --------
    >>> clk = Clock()
    >>> 0.0 <= clk.now() < 1.0
    True
    >>> fast = Clock(1000.0)
    >>> fast.hold_at(0.5); time.sleep(0.01)      # 10 ms of wall time = 10 s unheld
    >>> fast.now()
    0.5
    """

    def __init__(self, time_scale: float = 1.0, *, elastic: bool | None = None):
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        self.time_scale = float(time_scale)
        self.elastic = (self.time_scale != 1.0) if elastic is None else bool(elastic)
        self._t0 = time.monotonic()
        self._limit: float | None = None
        self._lock = threading.Lock()
        self.start_datetime = datetime.now(timezone.utc).astimezone()

    def restart(self) -> None:
        """Set time zero (and the start date) to now.

        For set-up that must not eat into the experiment's time: building a
        virtual specimen takes a second or two of wall time, which an
        accelerated clock would otherwise count as minutes. Call it only
        before anything has been timestamped.
        """
        self._t0 = time.monotonic()
        self.start_datetime = datetime.now(timezone.utc).astimezone()

    @property
    def start_iso(self) -> str:
        """Start time as ISO 8601 with the local UTC offset."""
        return self.start_datetime.isoformat()

    def now(self) -> float:
        """Experiment time in s since start (never beyond a :meth:`hold_at` limit; never decreasing)."""
        if self._limit is None:
            return (time.monotonic() - self._t0) * self.time_scale
        with self._lock:
            wall = time.monotonic()
            t = (wall - self._t0) * self.time_scale
            if self._limit is not None and t > self._limit:
                # whoever holds the clock is late: stop here, and let the lost wall time go
                t = self._limit
                self._t0 = wall - t / self.time_scale
            return t

    def hold_at(self, t_s: float) -> None:
        """Let the clock run no further than ``t_s`` until the next call (elastic clocks only).

        The engine calls it with its next tick's time: a late engine then finds
        the clock waiting at that tick rather than past it, and no sample is lost.
        """
        if self.elastic:
            with self._lock:
                self._limit = float(t_s)

    def release(self) -> None:
        """Let the clock run freely again."""
        with self._lock:
            self._limit = None

    def sleep(self, dt_s: float) -> None:
        """Sleep ``dt_s`` experiment seconds (no-op for dt <= 0)."""
        if dt_s > 0:
            time.sleep(dt_s / self.time_scale)

    def sleep_until(self, t_s: float) -> None:
        """Sleep until experiment time ``t_s``."""
        self.sleep(t_s - self.now())
