"""Keep the engine (or a replay) off the GUI thread.

The engine runs in a plain :class:`threading.Thread`; it hands its records to
a :class:`RecordQueue` sink, whose ``__call__`` only appends to a deque or
replaces a slot and so never waits for the GUI. The GUI drains the queue from a
``QTimer``. Frames are not queued: only the newest one is kept (older ones
are counted as dropped), so a slow display never builds a backlog. Abort goes
straight from the GUI thread to ``engine.request_abort()``, which is
thread-safe and returns at once, so even a frozen GUI cannot keep the engine
from ramping down: the engine thread does that on its own.
"""
from __future__ import annotations

import inspect
import threading
import time
from collections import deque
from typing import Any, Callable, NamedTuple

from insitu.core.records import FrameRecord


class LatestSlot:
    """Holds only the newest ``depth`` items put in it; ``take()`` returns the oldest of them.

    With ``depth`` 1 a taker always gets the newest item. With ``depth`` 2 (the
    GUI's frames) two frames that arrive together (frames come asynchronously to
    the display timer, e.g. one late and the next on time) are both shown, one a
    timer tick after the other, and the backlog never exceeds one frame.

    Examples
    --------
    >>> s = LatestSlot()
    >>> s.put(1); s.put(2)
    >>> s.take(), s.take(), s.n_dropped
    (2, None, 1)
    >>> s2 = LatestSlot(depth=2)
    >>> s2.put(1); s2.put(2); s2.put(3)
    >>> s2.take(), s2.take(), s2.take(), s2.n_dropped
    (2, 3, None, 1)
    """

    def __init__(self, depth: int = 1):
        self._items: deque = deque()
        self.depth = int(depth)
        self._lock = threading.Lock()
        self.n_put = 0
        self.n_dropped = 0

    def put(self, item) -> None:
        with self._lock:
            if len(self._items) >= self.depth:
                self._items.popleft()
                self.n_dropped += 1
            self._items.append(item)
            self.n_put += 1

    def take(self):
        with self._lock:
            return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        """Items waiting."""
        with self._lock:
            return len(self._items)


class FrameInfo(NamedTuple):
    """A frame's metadata without its pixels (read it by name).

    Examples
    --------
    >>> FrameInfo(1.5, 10.0, 2e-9, False, 40.0, 5e-9).dose
    40.0
    """

    time_s: float
    bias_V: float
    current_A: float
    blanked: bool
    dose: float             # e/Å², cumulative
    pixel_size_m: float

    @classmethod
    def of(cls, record: FrameRecord) -> "FrameInfo":
        return cls(record.time_s, record.bias_V, record.current_A, record.blanked, record.dose,
                   record.pixel_size_m)


class RecordQueue:
    """A sink for the engine or a replay :class:`~insitu.control.replay.Player`, drained by the GUI.

    Non-frame records go into a bounded deque; each frame's metadata goes
    there too (as :class:`FrameInfo`, for plots and sync checks), while its
    pixels go to :attr:`frames` (newest only) and to any extra frame slots
    (e.g. the live-analysis thread).

    Parameters
    ----------
    max_records : int
        Bound on the undrained backlog (oldest dropped beyond it), so a GUI
        that stops draining cannot exhaust memory.
    """

    def __init__(self, max_records: int = 500_000):
        self._records: deque = deque(maxlen=max_records)
        self.frames = LatestSlot(depth=2)   # a pair arriving together is shown over two timer ticks
        self.frame_slots: list[LatestSlot] = [self.frames]

    def __call__(self, record) -> None:
        if isinstance(record, FrameRecord):
            self._records.append(FrameInfo.of(record))
            for slot in self.frame_slots:
                slot.put(record)
        else:
            self._records.append(record)

    write = __call__

    def drain(self, limit: int | None = None) -> list:
        """Take every queued non-pixel record (up to ``limit``) in arrival order."""
        out = []
        pop = self._records.popleft
        n = len(self._records) if limit is None else min(limit, len(self._records))
        for _ in range(n):
            try:
                out.append(pop())
            except IndexError:
                break
        return out

    def __len__(self) -> int:
        return len(self._records)


def _takes_argument(fn) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params)


class SourceThread(threading.Thread):
    """Runs ``run()`` of an engine or player in a background thread.

    Parameters
    ----------
    run : callable
        Blocking call (``Engine.run`` or ``Player.run``).
    stop : callable
        Thread-safe request to stop (``Engine.request_abort`` or ``Player.stop``);
        called with a reason string when it accepts one.
    finish : callable, optional
        ``finish(outcome)`` runs in this thread after ``run`` returns or
        raises (close the session file, close instruments), where outcome is
        ``complete``, ``stopped`` (a replay stopped early), ``aborted`` or ``fault``.
    name : str
        What runs, for messages and the thread's name (``engine``, ``replay``, ``feed``).

    The thread is not a daemon: if the interpreter is asked to exit while an
    engine still runs, it waits for the engine to reach 0 V with output off.
    """

    def __init__(self, run: Callable[[], Any], stop: Callable[..., Any], *,
                 finish: Callable[[str], Any] | None = None, name: str = "engine"):
        super().__init__(name=f"insitu-{name}", daemon=False)
        self._run_fn = run
        self._stop_fn = stop
        self._finish = finish
        self.label = name
        self.outcome: str | None = None     # complete | stopped | aborted | fault (None while running)
        self.message: str = ""
        self.started_at = None
        self.finished_at = None

    def run(self) -> None:
        from insitu.core.errors import StoppedEarly

        self.started_at = time.monotonic()
        outcome, message = "fault", ""
        try:
            result = self._run_fn()
            outcome = "stopped" if result == "stopped" else "complete"   # a replay stopped by the operator
        except StoppedEarly as exc:
            outcome, message = "aborted", str(exc)
        except Exception as exc:  # InstrumentError or a bug: the engine has already made the output safe
            outcome, message = "fault", f"{type(exc).__name__}: {exc}"
        finally:
            try:
                if self._finish is not None:
                    self._finish(outcome)
            except Exception as exc:  # never hide the run's outcome
                message = (message + "; " if message else "") + f"while closing: {exc}"
            self.message = message
            self.finished_at = time.monotonic()
            self.outcome = outcome

    def request_stop(self, reason: str = "operator") -> None:
        """Ask the engine/player to stop; returns at once (safe from any thread)."""
        if _takes_argument(self._stop_fn):
            self._stop_fn(reason)
        else:
            self._stop_fn()

    @property
    def running(self) -> bool:
        return self.is_alive() and self.outcome is None
