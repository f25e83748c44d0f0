"""Folder watch: image files written by the microscope software become frames.

During a run, every new *complete* image file (Velox ``.emd``, DigitalMicrograph
``.dm3``/``.dm4``, TIFF) that appears in the folder is read with
:func:`insitu.core.readers.read_file` and delivered as frames. A file counts as
complete when its size and modification time have not changed for
``settle_s`` seconds and it opens; temporary names (``~x.emd``, ``.x.emd``,
``x.emd.tmp``, ``x.part``...) and files that were already there at
:meth:`FolderWatchSource.start` are ignored. A file that still fails to read
after a few settled attempts is skipped and listed in ``skipped``.

Each frame's time is the experiment clock when the file was first seen (a
multi-frame file spreads its frames back from that moment by their recorded
spacing); ``meta`` keeps the file name, the frame's index and time in the file,
the pixel size and the file's own metadata.
"""
from __future__ import annotations

import fnmatch
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from insitu.core.clock import Clock

from .interfaces import Frame
from .producer import DEFAULT_MAXSIZE, BackgroundProducer

_TEMP_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".crdownload", ".download", "~")


def is_candidate(name: str, pattern: str | None = None) -> bool:
    """True for a finished-looking image file name (supported suffix, not a temporary name, matches ``pattern``)."""
    from insitu.core.readers import SUPPORTED_SUFFIXES

    low = name.lower()
    if name.startswith((".", "~", "$")) or low.endswith(_TEMP_SUFFIXES):
        return False
    if not low.endswith(SUPPORTED_SUFFIXES):
        return False
    return pattern is None or fnmatch.fnmatch(name, pattern)


@dataclass
class _Pending:
    first_seen_t: float      # experiment clock when first seen
    size: int
    mtime_ns: int
    stable_since: float      # time.monotonic() when size/mtime last changed
    attempts: int = 0


class FolderWatchSource:
    """FrameSource over a folder that the microscope software writes image files into.

    Parameters
    ----------
    path : str or Path
        Folder to watch (must exist).
    clock : Clock
        Experiment clock for the frame times.
    pattern : str, optional
        Shell pattern the file names must match, e.g. ``"HAADF*.emd"``.
    settle_s : float
        A file is read once its size and mtime have been stable this long
        (wall-clock seconds: files are written in real time).
    max_attempts : int
        Settled reads that may fail before a file is skipped.
    scan_interval_s : float
        Wall time between two scans of the folder.
    max_queued : int
        Frames read but not yet polled that are kept (beyond: the oldest is dropped, counted in ``dropped``).

    The scanning and reading run in a background thread
    (:class:`~insitu.drivers.producer.BackgroundProducer`): ``poll()`` only takes
    the frames read so far, so a slow disk, a large file or a hung network
    share never holds up the caller.

    Example
    -------
    >>> src = FolderWatchSource("D:/Velox/export", Clock())   # doctest: +SKIP
    >>> src.start(); frames = src.poll()                      # doctest: +SKIP
    """

    def __init__(self, path, clock: Clock | None = None, pattern: str | None = None, settle_s: float = 0.5,
                 max_attempts: int = 3, scan_interval_s: float = 0.1, max_queued: int = DEFAULT_MAXSIZE):
        from insitu.core.errors import UserError

        self.path = Path(path)
        if not self.path.is_dir():
            raise UserError(f"{self.path}: folder to watch does not exist")
        self.clock = clock or Clock()
        self.pattern = pattern
        self.settle_s = float(settle_s)
        self.max_attempts = int(max_attempts)
        #: typical frame period (unknown for a folder: the microscope decides)
        self.period_s = None
        self._lock = threading.Lock()
        self._running = False
        self._known: set[str] = set()      # delivered, skipped, or there before start
        self._pending: dict[str, _Pending] = {}
        self._count = 0
        #: (file name, reason) of files that could not be read
        self.skipped: list[tuple[str, str]] = []
        #: file names delivered, in order
        self.delivered: list[str] = []
        #: wall time between two scans of the folder (s)
        self.scan_interval_s = float(scan_interval_s)
        self._producer = BackgroundProducer(self._step, name=f"folder:{self.path.name}", maxsize=max_queued)

    def _scan(self):
        try:
            with os.scandir(self.path) as it:
                return [(e.name, e.stat()) for e in it if e.is_file() and is_candidate(e.name, self.pattern)]
        except FileNotFoundError:
            return []

    def start(self) -> None:
        """Begin watching: files already in the folder are not frames of this run."""
        with self._lock:
            self._known = {name for name, _ in self._scan()}
            self._pending.clear()
            self._running = True
        self._producer.start()

    def poll(self) -> list[Frame]:
        """Frames from files that completed since the last call; never blocks (the reading is done in a
        background thread, see :mod:`insitu.drivers.producer`)."""
        return self._producer.drain()

    @property
    def dropped(self) -> int:
        """Frames read but dropped because nobody polled them in time (the queue was full)."""
        return self._producer.dropped

    @property
    def hung(self) -> bool:
        """True when :meth:`stop` found the reading thread stuck (e.g. an unreachable share)."""
        return self._producer.hung

    def _step(self) -> tuple[list[Frame], float]:
        """One scan of the folder and the reading of every settled file (producer thread)."""
        from insitu.core.errors import UserError
        from insitu.core.readers import read_file

        with self._lock:
            if not self._running:
                return [], self.scan_interval_s
            scan = self._scan()
            now_wall = time.monotonic()
            now = self.clock.now()   # after the scan: a file is never dated before it was seen
            ready = []
            for name, st in scan:
                if name in self._known:
                    continue
                p = self._pending.get(name)
                if p is None or st.st_size != p.size or st.st_mtime_ns != p.mtime_ns:
                    first = p.first_seen_t if p is not None else now
                    attempts = p.attempts if p is not None else 0
                    self._pending[name] = _Pending(first, st.st_size, st.st_mtime_ns, now_wall, attempts)
                    continue
                if st.st_size > 0 and now_wall - p.stable_since >= self.settle_s:
                    ready.append((p.first_seen_t, name))
        out: list[Frame] = []
        for first_t, name in sorted(ready):
            p = self._pending[name]
            try:
                stack = read_file(self.path / name)   # slow (and may block on a share): no lock held
            except (UserError, OSError, ValueError, KeyError) as exc:
                p.attempts += 1
                p.stable_since = time.monotonic()  # wait another settle period before retrying
                if p.attempts >= self.max_attempts:
                    self.skipped.append((name, str(exc)))
                    self._known.add(name)
                    self._pending.pop(name, None)
                continue
            self._pending.pop(name, None)
            self._known.add(name)
            self.delivered.append(name)
            t_last = float(stack.times_s[-1])
            file_meta = {k: v for k, v in stack.meta.items() if k != "frame_datetime_s"}
            for k in range(stack.n_frames):
                meta = {"pixel_size_m": stack.pixel_size_m, "file": name, "file_frame": k,
                        "file_time_s": float(stack.times_s[k]), "file_start_epoch_s": stack.start_epoch_s,
                        "file_meta": file_meta}
                out.append(Frame(self._count, first_t - (t_last - float(stack.times_s[k])),
                                 stack.frames[k], meta))
                self._count += 1
        return out, self.scan_interval_s

    def stop(self) -> bool:
        """Stop watching; False (and :attr:`hung`) when the reading thread is stuck and was left behind."""
        with self._lock:
            self._running = False
        return self._producer.stop()

    def close(self) -> None:
        self.stop()
