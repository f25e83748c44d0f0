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
from .producer import DEFAULT_MAXSIZE, BackgroundProducer


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
    max_queued : int
        Frames read but not yet polled that are kept (beyond: the oldest is dropped, counted in ``dropped``).

    The frames are read from the file in a background thread
    (:class:`~insitu.drivers.producer.BackgroundProducer`); ``poll()`` only takes
    those read so far.

    Example
    -------
    >>> src = ReplayFrameSource("run.h5", Clock(), speed=2.0)   # doctest: +SKIP
    >>> src.start(); frames = src.poll()                        # doctest: +SKIP
    """

    def __init__(self, path, clock: Clock | None = None, speed: float = 1.0, loop: bool = False,
                 max_queued: int = DEFAULT_MAXSIZE):
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
        self._producer = BackgroundProducer(self._step, name="replay", maxsize=max_queued)

    def start(self) -> None:
        with self._lock:
            self._t0 = self.clock.now()
            self._next = 0
        self._producer.start()

    def poll(self) -> list[Frame]:
        """The frames due since the last call; never waits (they are read in a background thread)."""
        return self._producer.drain()

    @property
    def dropped(self) -> int:
        """Frames read but dropped because nobody polled them in time (the queue was full)."""
        return self._producer.dropped

    def _step(self) -> tuple[list[Frame], float]:
        """Read the frames due now from the session file (producer thread); the wall time to the next one."""
        with self._lock:
            if self._t0 is None:
                return [], 0.05
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
                if len(out) >= self._producer.maxsize:
                    break   # a long-late step (a paused clock let go) hands over what it has first
            nxt = self._t0 + self._rel[self._next] if self._next < self.n_frames else None
        scale = getattr(self.clock, "time_scale", 1.0)
        wait = 0.05 if nxt is None else (nxt - self.clock.now()) / scale
        return out, min(0.05, max(0.0, wait))

    @property
    def finished(self) -> bool:
        """True when every frame has been delivered (never with ``loop``)."""
        return not self.loop and self._next >= self.n_frames and self._producer.depth == 0

    def stop(self) -> bool:
        """Stop playing; False when the reading thread did not end in time (reported, left behind)."""
        with self._lock:
            self._t0 = None
        return self._producer.stop()

    def close(self) -> None:
        ended = self.stop()
        if ended:
            self._session.close()
