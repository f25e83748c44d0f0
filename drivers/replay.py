"""A frame source that plays back the frames of a recorded session file.

Frames come at ``speed`` × their recorded spacing on the experiment clock,
starting when :meth:`ReplayFrameSource.start` is called; each carries its
recorded pixel size and time in ``meta``. Useful to rehearse a protocol with
real images, or to feed the analysis as if live.
"""
from __future__ import annotations

import threading

import numpy as np

from insitu.core.clock import Clock

from .interfaces import Frame


class ReplayFrameSource:
    """FrameSource over the frames of a session file.

    Parameters
    ----------
    path : str or Path
        Session file (see :mod:`insitu.core.session`).
    clock : Clock
        The experiment clock frames are timed on.
    speed : float
        Playback speed (1 = recorded spacing).
    loop : bool
        Start again from the first frame after the last (default False).

    Example
    -------
    >>> src = ReplayFrameSource("run.h5", Clock(), speed=2.0)   # doctest: +SKIP
    >>> src.start(); frames = src.poll()                        # doctest: +SKIP
    """

    def __init__(self, path, clock: Clock | None = None, speed: float = 1.0, loop: bool = False):
        from insitu.core.errors import UserError
        from insitu.core.session import open_session

        if not speed > 0:
            raise UserError(f"replay speed must be > 0, got {speed!r}")
        self.clock = clock or Clock()
        self.speed = float(speed)
        self.loop = bool(loop)
        self._session = open_session(path)
        if self._session.n_frames == 0:
            self._session.close()
            raise UserError(f"{path}: the session holds no frames to replay")
        t = np.asarray(self._session.frame_table["time"], float)
        self._rel = (t - t[0]) / self.speed  # delivery offsets on the clock
        steps = np.diff(self._rel)
        #: typical frame period on the experiment clock (s), for protocol timing estimates
        self.period_s = float(np.median(steps)) if steps.size and np.median(steps) > 0 else 1.0
        self.frame_shape = self._session.frame_shape
        self.n_frames = self._session.n_frames
        self._lock = threading.Lock()
        self._t0: float | None = None
        self._next = 0
        self._count = 0
        self._cycle_s = float(self._rel[-1] + self.period_s)

    def start(self) -> None:
        with self._lock:
            self._t0 = self.clock.now()
            self._next = 0

    def poll(self) -> list[Frame]:
        with self._lock:
            if self._t0 is None:
                return []
            now = self.clock.now()
            out = []
            while True:
                if self._next >= self.n_frames:
                    if not self.loop:
                        break
                    self._next = 0
                    self._t0 += self._cycle_s
                due = self._t0 + self._rel[self._next]
                if due > now:
                    break
                i = self._next
                ft = self._session.frame_table
                out.append(Frame(self._count, float(due), np.asarray(self._session.frame(i)),
                                 {"pixel_size_m": float(ft["pixel_size"][i]), "source": str(self._session.path),
                                  "recorded_index": i, "recorded_time_s": float(ft["time"][i]),
                                  "recorded_bias_V": float(ft["bias"][i])}))
                self._next += 1
                self._count += 1
            return out

    @property
    def finished(self) -> bool:
        """True when every frame has been delivered (never with ``loop``)."""
        return not self.loop and self._next >= self.n_frames

    def stop(self) -> None:
        with self._lock:
            self._t0 = None

    def close(self) -> None:
        self.stop()
        self._session.close()
