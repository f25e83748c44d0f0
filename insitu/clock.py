"""One monotonic clock for a whole experiment.

Every record (bias sample, beam state, frame, event) carries ``Clock.now()``:
seconds since the clock was started. With ``time_scale`` > 1 (mock instruments
only) the clock runs faster than the wall: an hour-long protocol takes
``3600 / time_scale`` real seconds, and every mock instrument reads the same
accelerated time.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone


class Clock:
    """Seconds since start, optionally accelerated.

    Parameters
    ----------
    time_scale : float
        Experiment seconds per real second (1 for real instruments).

    Examples
    --------
    >>> clk = Clock()
    >>> 0.0 <= clk.now() < 1.0
    True
    """

    def __init__(self, time_scale: float = 1.0):
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        self.time_scale = float(time_scale)
        self._t0 = time.monotonic()
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
        """Experiment time in s since start."""
        return (time.monotonic() - self._t0) * self.time_scale

    def sleep(self, dt_s: float) -> None:
        """Sleep ``dt_s`` experiment seconds (no-op for dt <= 0)."""
        if dt_s > 0:
            time.sleep(dt_s / self.time_scale)

    def sleep_until(self, t_s: float) -> None:
        """Sleep until experiment time ``t_s``."""
        self.sleep(t_s - self.now())
