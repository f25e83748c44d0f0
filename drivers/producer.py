"""Background producer: a frame source's slow work off the caller's thread.

Every frame source does its reading, decoding or rendering in a
:class:`BackgroundProducer` thread that feeds a bounded queue; the source's
``poll()`` only drains that queue, so it never blocks the engine's control
loop, whatever the disk, the network share or the renderer does.

What the producer guarantees:

* ``poll()`` (:meth:`BackgroundProducer.drain`) takes a lock held only for
  queue operations, never for the slow work: it returns at once.
* The queue is bounded (``maxsize`` items, ``max_bytes`` of their ``data``). When it is full the *oldest*
  frame is dropped and counted in :attr:`BackgroundProducer.dropped` (the
  engine turns a rising count into an event); nothing is dropped silently.
* An exception in the producer's step does not end the thread: it is kept
  and raised by the next ``drain()`` that has no frames to return (the engine
  logs it and the run goes on), and the step is retried after ``retry_s``.
* ``stop()`` waits at most ``join_timeout_s`` for the thread. A thread stuck
  in a read (an unreachable network share) is left behind as a daemon thread,
  reported in :attr:`BackgroundProducer.hung`, and cannot deliver anything
  afterwards.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Callable


#: frames a source may hold undelivered
DEFAULT_MAXSIZE = 64
#: bytes of frames a source may hold undelivered (8 frames of 4096² uint16)
DEFAULT_MAX_BYTES = 256 << 20
#: how long stop() waits for the producer thread (wall s) before reporting it hung
JOIN_TIMEOUT_S = 1.0


class BackgroundProducer:
    """Run ``step()`` repeatedly in a daemon thread; its frames go to a bounded queue.

    Parameters
    ----------
    step : callable
        ``step() -> (items, wait_s)``: the items produced now (possibly none)
        and the wall time to wait before the next call. It may block (a slow
        read); the queue and ``drain()`` do not wait for it.
    name : str
        Thread name (shown in a hung-thread report).
    maxsize : int
        Most items held undelivered; beyond it the oldest is dropped and counted.
    max_bytes : int
        Most bytes (of the items' ``data`` arrays) held undelivered; the newest item is always kept.
    retry_s : float
        Wall time to wait after ``step()`` raised.
    join_timeout_s : float
        Longest wait in :meth:`stop` for the thread to end.

    Example
    -------
    >>> import itertools, time
    >>> n = itertools.count()
    >>> p = BackgroundProducer(lambda: ([next(n)], 0.01), name="demo", maxsize=4)
    >>> p.start(); time.sleep(0.2); got = p.drain(); p.stop()
    True
    >>> 1 <= len(got) <= 4 and p.dropped + len(got) >= 4
    True
    """

    def __init__(self, step: Callable[[], tuple[list, float]], *, name: str, maxsize: int = DEFAULT_MAXSIZE,
                 max_bytes: int = DEFAULT_MAX_BYTES, retry_s: float = 1.0, join_timeout_s: float = JOIN_TIMEOUT_S):
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize!r}")
        self._step = step
        self.name = name
        self.maxsize = int(maxsize)
        self.max_bytes = int(max_bytes)
        self._bytes = 0
        self.retry_s = float(retry_s)
        self.join_timeout_s = float(join_timeout_s)
        self._lock = threading.Lock()
        self._queue: deque = deque()
        self._errors: deque = deque(maxlen=8)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._generation = 0
        #: items dropped because the queue was full (oldest first)
        self.dropped = 0
        #: items handed out by drain()
        self.delivered = 0
        #: items put into the queue
        self.produced = 0
        #: True when a stop() found the thread still busy after ``join_timeout_s`` (left behind, daemon)
        self.hung = False

    # ------------------------------------------------------------------ the thread
    def _run(self, generation: int, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                items, wait_s = self._step()
            except Exception as exc:  # noqa: BLE001 - reported through drain(); the thread goes on
                with self._lock:
                    if generation == self._generation:
                        self._errors.append(exc)
                stop.wait(self.retry_s)
                continue
            if items:
                self._put(generation, items)
            if wait_s > 0:
                stop.wait(wait_s)

    def _put(self, generation: int, items) -> None:
        with self._lock:
            if generation != self._generation:  # a thread left behind by stop(): its items are not wanted
                return
            for item in items:
                n = _nbytes(item)
                while self._queue and (len(self._queue) >= self.maxsize or self._bytes + n > self.max_bytes):
                    self._bytes -= _nbytes(self._queue.popleft())
                    self.dropped += 1
                self._queue.append(item)
                self._bytes += n
                self.produced += 1

    # ------------------------------------------------------------------ the caller's side
    @property
    def running(self) -> bool:
        return self._thread is not None and not self._stop.is_set()

    @property
    def depth(self) -> int:
        """Items waiting in the queue now."""
        with self._lock:
            return len(self._queue)

    def start(self) -> None:
        """Start a fresh producer thread with an empty queue (a running one is stopped first)."""
        if self._thread is not None:
            self.stop()
        with self._lock:
            self._generation += 1
            self._queue.clear()
            self._bytes = 0
            self._errors.clear()
            generation = self._generation
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(generation, self._stop),
                                        name=f"producer-{self.name}", daemon=True)
        self._thread.start()

    def drain(self) -> list:
        """Everything queued now, oldest first; never waits for the producer.

        Raises the oldest error the producer met when there is nothing to return.
        """
        with self._lock:
            out = list(self._queue)
            self._queue.clear()
            self._bytes = 0
            self.delivered += len(out)
            if not out and self._errors:
                raise self._errors.popleft()
        return out

    def stop(self) -> bool:
        """Stop the thread; True when it ended within ``join_timeout_s``.

        A thread that did not (stuck in a read) is left behind as a daemon thread and
        :attr:`hung` is set; whatever it produces later is discarded.
        """
        thread, self._thread = self._thread, None
        self._stop.set()
        with self._lock:
            self._generation += 1   # a late item from this thread is discarded
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(self.join_timeout_s)
        if thread.is_alive():
            self.hung = True
            return False
        return True


def _nbytes(item) -> int:
    """Bytes of an item's ``data`` array (0 for items without one)."""
    return int(getattr(getattr(item, "data", None), "nbytes", 0) or 0)
