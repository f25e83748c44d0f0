"""The session file: a crash-safe, NeXus-shaped HDF5 record of one experiment.

Layout (binding, see DESIGN.md)::

    /entry                 NXentry: start_time, end_time, program, version (also NeXus
                           program_name@version), protocol (YAML), instruments (TOML),
                           status (running | complete | aborted | fault | recording_failed | interrupted)
    /entry/instrument/<n>  NXcollection per instrument: identity, settings found / set
    /entry/bias            NXlog: time (s), setpoint (V), voltage (V), current (A), compliance
    /entry/beam            NXlog: time (s), blanked, dose_rate (e/Å²/s)
    /entry/events          NXcollection: time (s), kind, message
    /entry/frames          NXdata signal="data" interpretation="image" axes=[time, y, x]:
                           data (n, ny, nx) one frame a chunk, time (s), bias (V), current (A),
                           blanked, dose (e/Å²), drift_x, drift_y (px), pixel_size (m), y, x (m)

Crash safety: the writer uses HDF5 SWMR (single writer, multiple readers).
Every group, dataset and attribute is created *before* SWMR starts; while a
run goes on, the writer only appends rows to existing datasets and overwrites
fixed-size values (``status``, ``end_time``).

Writer thread: :meth:`SessionWriter.write` never touches the file. It puts the
record in a queue and returns at once; one writer thread owns the HDF5 file,
writes what is queued and flushes at least once a second (after a batch when
a second has passed, and on a timer in quiet periods). So the engine's
control loop never waits for the disk. Bias samples, beam changes and events
are never dropped (they are small; their queue is not bounded). Frames are:
when the frames waiting in the queue reach ``max_queue_frames`` or
``max_queue_bytes`` (the disk is slower than the frames arrive), a new frame
is dropped (``when_full="drop"``, for live recording: the control loop must
not wait) or ``write`` waits for room (``when_full="wait"``, for imports and
other offline writers that must keep every frame). Every drop is counted
(:attr:`SessionWriter.frames_dropped`) and said in ``/entry/events`` (kind
``frames``: the first drop at once, then at most one summary every
:data:`DROP_EVENT_PERIOD_S`, and a total at close). :meth:`SessionWriter.close`
drains the queue first, waiting at most ``close_timeout_s``; when that is hit
the frames still queued are given up (counted, an event and a warning on the
``insitu.core.session`` logger) and the small records are still written. A
``kill -9`` leaves a file that holds everything up to the last flush. The writer holds an advisory lock on the file for the whole run
(:mod:`insitu.core.writelock`): a second writer is refused, and the first reader
that finds the lock gone finishes the file as ``interrupted``
(:func:`recover_interrupted`), after which plain ``h5py.File(path)`` and
HyperSpy open it. A failed write stops the recording (:class:`RecordingFailed`,
status ``recording_failed``); a truncated file is refused before HDF5 reads it
(:mod:`insitu.core.superblock`). Readers drop trailing rows
whose time is still NaN (resized but not yet written when the writer died).
A log that never received a record holds one such placeholder row (HyperSpy's
NeXus reader cannot read zero-size datasets).

Structural changes that cannot wait (the frames dataset, whose shape and
dtype are known only from the first frame unless ``frame_shape`` and
``frame_dtype`` are given; :meth:`SessionWriter.set_instrument`;
:meth:`SessionWriter.write_group`) close the file cleanly, reopen it
without SWMR, make the change, flush and restart SWMR: a few milliseconds
during which nothing else writes.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from insitu import __version__
from insitu.core.errors import InstrumentError, StoppedEarly, UserError
from insitu.core.records import BeamSample, BiasSample, EventRecord, FrameRecord, ProgressRecord, SeedRecord
from insitu.core.superblock import check_not_truncated, repair_session
from insitu.core.writelock import WriteLock, try_lock, writer_alive

log = logging.getLogger(__name__)

#: statuses a writer closes with (``recording_failed`` replaces any of them after a failed write)
CLOSE_STATUSES = ("complete", "aborted", "fault")
#: every final status: ``interrupted`` is written by the first reader that finds the writer dead
STATUSES = CLOSE_STATUSES + ("recording_failed", "interrupted")


#: frames waiting to be written that make the queue full (``when_full`` decides what happens then)
MAX_QUEUE_FRAMES = 256
#: bytes of frames waiting to be written that make the queue full (8 frames of 4096² uint16)
MAX_QUEUE_BYTES = 256 << 20
#: at most one "frames dropped" event per this many seconds (wall) while the recorder is behind
DROP_EVENT_PERIOD_S = 10.0
#: how long close() waits for the writer thread to write what is queued (wall s)
CLOSE_TIMEOUT_S = 60.0
#: when_full choices
WHEN_FULL = ("drop", "wait")

#: free space (bytes) kept on the session's disk beyond the next write: below it the recording stops as
#: failed while HDF5 can still write the status and close the file (a write HDF5 meets with ENOSPC leaves
#: its cache unable to close the file cleanly)
RESERVE_BYTES = 1 << 20


class RecordingFailed(InstrumentError):
    """Writing the session file failed (disk full, I/O error): a fault, the run must stop (exit 2)."""


class _ReaderConflict(RuntimeError):
    """A structural change while this process also reads the file (a usage error, not a write failure)."""
_ISO_LEN = 64
_STATUS_LEN = 16
_KIND_LEN = 32
_MESSAGE_LEN = 512

# name -> (numpy dtype, units or None); column order is the row order of write()
BIAS_COLUMNS = {"time": ("f8", "s"), "setpoint": ("f8", "V"), "voltage": ("f8", "V"),
                "current": ("f8", "A"), "compliance": ("bool", None)}
BEAM_COLUMNS = {"time": ("f8", "s"), "blanked": ("bool", None), "dose_rate": ("f8", "e/Å^2/s")}
EVENT_COLUMNS = {"time": ("f8", "s"), "kind": (h5py.string_dtype("utf-8", _KIND_LEN), None),
                 "message": (h5py.string_dtype("utf-8", _MESSAGE_LEN), None)}
FRAME_COLUMNS = {"time": ("f8", "s"), "bias": ("f8", "V"), "current": ("f8", "A"), "blanked": ("bool", None),
                 "dose": ("f8", "e/Å^2"), "drift_x": ("f8", "px"), "drift_y": ("f8", "px"),
                 "pixel_size": ("f8", "m")}


def _now_iso() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat()


def _fixed(text: str, nbytes: int) -> bytes:
    """UTF-8 encode and cut to ``nbytes`` without splitting a character."""
    raw = str(text).encode("utf-8")
    if len(raw) <= nbytes:
        return raw
    return raw[:nbytes].decode("utf-8", errors="ignore").encode("utf-8")


def _text(value) -> str:
    """Decode an HDF5 string value (bytes, str, numpy scalar/array) to ``str``."""
    if isinstance(value, np.ndarray):
        value = value[()] if value.shape == () else value.ravel()[0]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").rstrip("\x00")
    return str(value)


def _write_fixed_text(ds: h5py.Dataset, start: int | None, arr: np.ndarray) -> None:
    """Write UTF-8 bytes into a fixed-length UTF-8 string dataset (rows from ``start``, or the scalar)."""
    from h5py import h5s

    if start is None:
        ds.id.write(h5s.ALL, h5s.ALL, np.asarray(arr), mtype=ds.id.get_type())
        return
    fspace = ds.id.get_space()
    fspace.select_hyperslab((start,), (len(arr),))
    mspace = h5s.create_simple((len(arr),))
    ds.id.write(mspace, fspace, arr, mtype=ds.id.get_type())


class _Table:
    """Buffered append-only columns (1-D resizable datasets) in one group."""

    def __init__(self, group_path: str, columns: dict):
        self.group_path = group_path
        self.columns = columns
        self.pending: list[tuple] = []

    def create(self, f: h5py.File, chunk_rows: int = 1024, start_iso: str = "") -> None:
        g = f[self.group_path]
        for name, (dtype, units) in self.columns.items():
            dt = np.dtype(dtype)
            fill = np.nan if dt.kind == "f" else None
            ds = g.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dt,
                                  chunks=(chunk_rows,), fillvalue=fill)
            if units:
                ds.attrs["units"] = units
            if name == "time" and start_iso:
                ds.attrs["start"] = start_iso  # NeXus NXlog: times are relative to this

    def pad_if_empty(self, f: h5py.File) -> None:
        """Give an empty log one placeholder row (time NaN, which readers drop).

        HyperSpy's NeXus reader cannot read zero-size datasets, and the session
        file must open there.
        """
        g = f[self.group_path]
        if g["time"].shape[0] == 0:
            for name in self.columns:
                g[name].resize((1,))

    def commit(self, f: h5py.File) -> None:
        if not self.pending:
            return
        rows, self.pending = self.pending, []
        g = f[self.group_path]
        n = len(rows)
        cols = list(zip(*rows))
        # time first is deliberate: a reader trims rows whose time is still NaN
        for (name, (dtype, _)), values in zip(self.columns.items(), cols):
            ds = g[name]
            old = ds.shape[0]
            ds.resize((old + n,))
            if dtype == "bool":
                arr = np.asarray(values, dtype=bool)
            elif np.dtype(dtype).kind == "S":
                size = np.dtype(dtype).itemsize
                arr = np.array([_fixed(v, size) for v in values], dtype=f"S{size}")
                _write_fixed_text(ds, old, arr)
                continue
            else:
                arr = np.asarray(values, dtype=dtype)
            ds[old:] = arr


class SessionWriter:
    """Crash-safe writer of a session file (SWMR HDF5, layout in the module docstring).

    Parameters
    ----------
    path : str or Path
        File to create. An existing file is refused unless ``overwrite``.
    overwrite : bool
        Replace an existing file.
    start_time_iso : str
        ISO 8601 time of clock zero (``Clock.start_iso``); every record's
        ``time_s`` is seconds since then.
    protocol_text, instruments_text : str
        The protocol YAML and instruments TOML as the user wrote them.
    program : str
        Name written to ``/entry/program_name``.
    frame_shape : tuple (ny, nx), optional
    frame_dtype : numpy dtype, optional
        When both are given the frames dataset is created up front and the
        first frame needs no restructuring step.
    flush_interval_s : float
        Longest time buffered records stay in memory (default 1 s).
    when_full : {"drop", "wait"}
        What :meth:`write` does with a frame when the frames queued for the
        writer thread reach ``max_queue_frames`` or ``max_queue_bytes``:
        ``"drop"`` it (counted in :attr:`frames_dropped`, said in the events;
        live recording, where the caller must not wait) or ``"wait"`` for room
        (imports and other offline writers). Other records are never dropped.
    max_queue_frames, max_queue_bytes : int
        Bounds of the frame queue.
    close_timeout_s : float
        Longest wait in :meth:`close` for the queue to be written (wall s).

    Status, readable from any thread while recording: :attr:`frames_dropped`,
    :attr:`queue_frames` (frames waiting), :attr:`queue_depth` (records
    waiting), :attr:`n_frames` (frames written).

    Examples
    --------
    >>> import tempfile, os
    >>> from insitu.core.records import BiasSample
    >>> p = os.path.join(tempfile.mkdtemp(), "s.h5")
    >>> with SessionWriter(p, start_time_iso="2026-01-01T00:00:00+00:00") as w:
    ...     w.write(BiasSample(0.0, 0.0, 0.0, 1e-12, False))
    >>> open_session(p).bias["current"].tolist()
    [1e-12]
    """

    def __init__(self, path, *, overwrite: bool = False, start_time_iso: str, protocol_text: str = "",
                 instruments_text: str = "", program: str = "insitu", frame_shape=None, frame_dtype=None,
                 flush_interval_s: float = 1.0, when_full: str = "drop", max_queue_frames: int = MAX_QUEUE_FRAMES,
                 max_queue_bytes: int = MAX_QUEUE_BYTES, close_timeout_s: float = CLOSE_TIMEOUT_S):
        if when_full not in WHEN_FULL:
            raise ValueError(f"when_full must be one of {WHEN_FULL}, got {when_full!r}")
        self.path = Path(path)
        existed = self.path.exists()
        if existed and not overwrite:
            raise UserError(f"{self.path}: file exists; refusing to overwrite it (use --overwrite)")
        if not self.path.parent.is_dir():
            raise UserError(f"{self.path.parent}: output folder does not exist")
        # held for the whole run: readers know the writer is alive, a second writer is refused
        self._wlock = WriteLock(self.path, create=True)
        self._lock = threading.RLock()
        self._closed = False
        #: the first write error (disk full, I/O error); once set nothing more is written but the status
        self.error: BaseException | None = None
        self.flush_interval_s = float(flush_interval_s)
        self._tables = {"bias": _Table("/entry/bias", BIAS_COLUMNS),
                        "beam": _Table("/entry/beam", BEAM_COLUMNS),
                        "events": _Table("/entry/events", EVENT_COLUMNS),
                        "frames": _Table("/entry/frames", FRAME_COLUMNS)}
        self._frame_shape = tuple(int(s) for s in frame_shape) if frame_shape is not None else None
        self._frame_dtype = np.dtype(frame_dtype) if frame_dtype is not None else None
        self._n_frames = 0
        #: frames dropped because their shape differed from the first frame's (each noted in /entry/events)
        self.n_skipped_frames = 0
        self._axes_set = False
        try:
            f = h5py.File(self.path, "w", libver="latest")
        except OSError as exc:
            self._wlock.release()
            if not existed:
                self.path.unlink(missing_ok=True)
            raise UserError(f"{self.path}: cannot create session file: {exc}") from None
        self._f = f
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.attrs["default"] = "frames"
        f.attrs["default"] = "entry"
        f.attrs["creator"] = f"{program} {__version__}"
        f.attrs["HDF5_Version"] = h5py.version.hdf5_version
        entry.create_dataset("start_time", data=_fixed(start_time_iso, _ISO_LEN),
                             dtype=h5py.string_dtype("utf-8", _ISO_LEN))
        entry.create_dataset("end_time", data=b"", dtype=h5py.string_dtype("utf-8", _ISO_LEN))
        entry.create_dataset("status", data=b"running", dtype=h5py.string_dtype("utf-8", _STATUS_LEN))
        entry.create_dataset("program", data=program)          # DESIGN.md names
        entry.create_dataset("version", data=__version__)
        entry.create_dataset("program_name", data=program)     # the NeXus name, with @version
        entry["program_name"].attrs["version"] = __version__
        entry.create_dataset("protocol", data=protocol_text or "")
        entry.create_dataset("instruments", data=instruments_text or "")
        inst = entry.create_group("instrument")
        inst.attrs["NX_class"] = "NXinstrument"
        for name, cls in (("bias", "NXlog"), ("beam", "NXlog"), ("events", "NXcollection"), ("frames", "NXdata")):
            entry.create_group(name).attrs["NX_class"] = cls
        for t in self._tables.values():
            t.create(f, chunk_rows=256 if t.group_path.endswith("frames") else 1024, start_iso=start_time_iso)
        fr = entry["frames"]
        fr.attrs["signal"] = "data"
        fr.attrs["interpretation"] = "image"
        fr.attrs["axes"] = ["time", "y", "x"]
        fr.attrs["time_indices"] = 0
        fr.attrs["y_indices"] = 1
        fr.attrs["x_indices"] = 2
        if self._frame_shape is not None and self._frame_dtype is not None:
            self._create_frames(f, self._frame_shape, self._frame_dtype)
        f.flush()
        f.swmr_mode = True
        self._last_flush = time.monotonic()
        self._dirty = False
        # the queue between write() (any thread) and the writer thread
        self.when_full = when_full
        self.max_queue_frames = int(max_queue_frames)
        self.max_queue_bytes = int(max_queue_bytes)
        self.close_timeout_s = float(close_timeout_s)
        self._cv = threading.Condition(threading.Lock())
        self._queue: list = []
        self._queued_frames = 0
        self._queued_bytes = 0
        self._busy = False           # the writer thread holds records taken from the queue
        self._stop = threading.Event()
        self._give_up_frames = False  # close() timed out: queued frames are counted, not written
        #: frames dropped because the queue was full (live recording), see ``when_full``
        self.frames_dropped = 0
        #: frames still queued when close() gave up waiting (counted, not written)
        self.frames_lost_at_close = 0
        self._drop_reported = 0
        self._drop_event_t = float("-inf")
        self._writer = threading.Thread(target=self._writer_loop, name="session-writer", daemon=True)
        self._writer.start()

    # -- structure ---------------------------------------------------------
    def _create_frames(self, f: h5py.File, shape, dtype) -> None:
        fr = f["/entry/frames"]
        for name in ("data", "y", "x"):
            if name in fr:
                del fr[name]
        ny, nx = shape
        ds = fr.create_dataset("data", shape=(0, ny, nx), maxshape=(None, ny, nx), dtype=dtype,
                               chunks=(1, ny, nx))
        ds.attrs["long_name"] = "frames"
        for name, n in (("y", ny), ("x", nx)):
            a = fr.create_dataset(name, shape=(n,), dtype="f8", fillvalue=np.nan)
            a.attrs["units"] = "m"
        self._frame_shape = (ny, nx)
        self._frame_dtype = np.dtype(dtype)
        self._axes_set = False

    def _restructure(self, change) -> None:
        """Close, reopen without SWMR, apply ``change(h5file)``, flush, restart SWMR (lock held)."""
        self._check_ok()
        self._guarded(self._restructure_unchecked, change)

    def _guarded(self, fn, *args):
        """``fn(*args)``; a failed write (OSError, HDF5's RuntimeError) becomes :class:`RecordingFailed`."""
        try:
            return fn(*args)
        except _ReaderConflict:
            raise
        except (OSError, RuntimeError) as exc:
            raise self._fail(exc) from None

    def _restructure_unchecked(self, change) -> None:
        for t in self._tables.values():
            t.commit(self._f)
        self._f.flush()
        self._f.close()
        try:
            self._f = h5py.File(self.path, "r+", libver="latest")
        except OSError as exc:
            if "lock" not in str(exc):
                raise
            # another process reads the file (a GUI, `insitu info`): its lock must not stop the recording
            self._f = h5py.File(self.path, "r+", libver="latest", locking=False)
        if self._f.swmr_mode:  # another handle in this process kept the file open in SWMR mode
            raise _ReaderConflict(f"{self.path}: cannot add groups while this process also reads the file; "
                               "close readers first or give frame_shape and frame_dtype up front")
        try:
            change(self._f)
        finally:
            self._f.flush()
            self._f.swmr_mode = True
            self._last_flush = time.monotonic()

    def set_instrument(self, name: str, info: dict) -> None:
        """Write ``/entry/instrument/<name>``: identity and settings (nested dicts -> subgroups).

        Calling it again for the same name replaces the group.
        """
        def change(f):
            inst = f["/entry/instrument"]
            if name in inst:
                del inst[name]
            g = inst.create_group(name)
            g.attrs["NX_class"] = "NXcollection"
            _write_dict(g, info)

        with self._lock:
            self._check_open()
            self._restructure(change)

    def write_group(self, path: str, arrays: dict, attrs: dict | None = None) -> None:
        """Write a group of arrays (and attributes) at an absolute ``path``, e.g. ``/entry/sample/truth/seeds``.

        Existing datasets of the same name are replaced; nested dicts become subgroups.
        """
        if not str(path).startswith("/"):
            raise ValueError(f"write_group: path must be absolute, got {path!r}")

        def change(f):
            g = f.require_group(path)
            _write_dict(g, arrays)
            for k, v in (attrs or {}).items():
                g.attrs[k] = v

        with self._lock:
            self._check_open()
            self._restructure(change)

    def modify(self, change) -> None:
        """Apply ``change(h5file)`` to the open file: for writers of their own layouts
        (e.g. a microstructure under ``/entry/sample``). It runs in the same
        restructuring step as :meth:`write_group`, under the writer's lock."""
        with self._lock:
            self._check_open()
            self._restructure(change)

    def recorded_frame_times(self) -> np.ndarray:
        """Times (s) of the frames recorded so far, in order."""
        self.flush()
        with self._lock:
            return np.asarray(self._f["/entry/frames/time"][:self.n_frames], float) if self.n_frames else np.empty(0)

    # -- failures ------------------------------------------------------------
    def _fail(self, exc: BaseException) -> RecordingFailed:
        """Remember the first write error; from now on the file is only given its status."""
        if self.error is None:
            self.error = exc
            from insitu.core.outputs import hdf5_failed

            hdf5_failed(exc, 2)  # when HDF5 itself failed: a fault (exit 2), without its crash at exit
        return RecordingFailed(f"cannot write {self.path}: {_reason(self.error)}")

    def _check_ok(self) -> None:
        if self.error is not None:
            raise RecordingFailed(f"cannot write {self.path}: {_reason(self.error)}")

    # -- records -----------------------------------------------------------
    def write(self, record) -> None:
        """Queue one engine record for the writer thread; thread-safe, returns at once. ProgressRecord is ignored.

        A frame that finds the queue full is dropped and counted (``when_full="drop"``) or waits
        for room (``"wait"``); other records are always queued.

        Raises
        ------
        RecordingFailed
            Writing failed earlier (in the writer thread): a fault.
        """
        if isinstance(record, ProgressRecord):
            return
        if not isinstance(record, (BiasSample, BeamSample, EventRecord, FrameRecord, SeedRecord)):
            raise TypeError(f"SessionWriter cannot record {type(record).__name__}")
        if self._closed:
            return
        self._check_ok()
        nbytes = 0
        if isinstance(record, FrameRecord):
            ndim = np.ndim(record.data)
            if ndim != 2:
                raise ValueError(f"frame must be 2-D, got {ndim} dimension(s)")
            nbytes = max(1, int(getattr(record.data, "nbytes", 1)))
        with self._cv:
            if nbytes:
                while self._full(nbytes):
                    if self.when_full == "drop" or self._stop.is_set():
                        self._dropped(record)
                        return
                    self._cv.wait(0.5)
                    if self.error is not None:
                        self._check_ok()
                self._queued_frames += 1
                self._queued_bytes += nbytes
            self._queue.append(record)
            self._cv.notify_all()

    __call__ = write

    def _full(self, nbytes: int) -> bool:
        """Whether one more frame of ``nbytes`` exceeds the queue bounds (an empty queue always takes one)."""
        if self._queued_frames == 0:
            return False
        return (self._queued_frames + 1 > self.max_queue_frames
                or self._queued_bytes + nbytes > self.max_queue_bytes)

    def _dropped(self, record) -> None:
        """Count a frame not recorded because the queue is full; say so in the events (cv held)."""
        self.frames_dropped += 1
        now = time.monotonic()
        if self._drop_reported == 0 or now - self._drop_event_t >= DROP_EVENT_PERIOD_S:
            new = self.frames_dropped - self._drop_reported
            self._drop_reported = self.frames_dropped
            self._drop_event_t = now
            self._queue.append(EventRecord(
                record.time_s, "frames",
                f"recorder behind: {new} frame(s) dropped (the disk is slower than the frames arrive; "
                f"{self._queued_frames} frames, {self._queued_bytes / 1e6:.0f} MB queued); "
                f"{self.frames_dropped} dropped so far"))

    @property
    def queue_frames(self) -> int:
        """Frames queued for the writer thread, not yet in the file."""
        return self._queued_frames

    @property
    def queue_depth(self) -> int:
        """Records (of any kind) queued or being written, not yet in the file."""
        with self._cv:
            return len(self._queue) + (1 if self._busy else 0)

    # -- the writer thread ---------------------------------------------------
    def _writer_loop(self) -> None:
        period = max(0.02, self.flush_interval_s / 4)
        while True:
            with self._cv:
                if not self._queue and not self._stop.is_set():
                    self._cv.wait(period)
                batch, self._queue = self._queue, []
                self._busy = bool(batch)
                stopping = self._stop.is_set() and not batch
            try:
                with self._lock:
                    self._write_batch(batch)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()
            if stopping:
                return

    def _write_batch(self, batch) -> None:
        """Write queued records and flush when a second has passed (writer thread, ``_lock`` held)."""
        for rec in batch:
            nbytes = max(1, int(getattr(rec.data, "nbytes", 1))) if isinstance(rec, FrameRecord) else 0
            try:
                if self._closed or self.error is not None:
                    continue
                if nbytes and self._give_up_frames:
                    self.frames_lost_at_close += 1
                    continue
                self._write_locked(rec)
            except Exception as exc:  # noqa: BLE001 - the next write() raises it: a fault
                if isinstance(exc, (OSError, RuntimeError)):
                    self._fail(exc)
                elif self.error is None:
                    self.error = exc
            finally:
                if nbytes:
                    with self._cv:
                        self._queued_frames -= 1
                        self._queued_bytes -= nbytes
                        self._cv.notify_all()
        if self._closed or self.error is not None:
            return
        if self._dirty and time.monotonic() - self._last_flush >= self.flush_interval_s:
            try:
                self._flush_locked()
            except Exception as exc:  # noqa: BLE001 - the next write() raises it: a fault
                self._fail(exc)

    def _wait_written(self, timeout_s: float | None) -> bool:
        """Wait until the writer thread has written everything queued now; False on timeout."""
        t_end = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cv:
            while self._queue or self._busy:
                if not self._writer.is_alive():
                    return False
                left = None if t_end is None else t_end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cv.wait(0.1 if left is None else min(left, 0.1))
        return True

    def _write_locked(self, record) -> None:
        if isinstance(record, BiasSample):
            self._tables["bias"].pending.append((record.time_s, record.setpoint_V, record.voltage_V,
                                                 record.current_A, bool(record.compliance)))
        elif isinstance(record, BeamSample):
            self._tables["beam"].pending.append((record.time_s, bool(record.blanked), record.dose_rate))
        elif isinstance(record, EventRecord):
            self._tables["events"].pending.append((record.time_s, record.kind, record.message))
        elif isinstance(record, SeedRecord):
            self._tables["events"].pending.append((record.time_s, "seed", record.message()))
        elif isinstance(record, FrameRecord):
            self._write_frame(record)
        else:
            raise TypeError(f"SessionWriter cannot record {type(record).__name__}")
        self._dirty = True

    def _check_space(self, need_bytes: int) -> None:
        """Fail (disk full) before a write that would leave less than :data:`RESERVE_BYTES` free."""
        try:
            st = os.statvfs(self.path.parent)
        except (OSError, AttributeError):  # pragma: no cover - no statvfs (Windows): HDF5 reports it
            return
        free = st.f_bavail * st.f_frsize
        if free < need_bytes + RESERVE_BYTES:
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: {free / 1e6:.2f} MB free on the "
                                        f"session's disk, {need_bytes / 1e6:.2f} MB to write + "
                                        f"{RESERVE_BYTES / 1e6:.2f} MB kept to close the file")

    def _write_frame(self, rec: FrameRecord) -> None:
        data = np.asarray(rec.data)
        if data.ndim != 2:
            raise ValueError(f"frame must be 2-D, got shape {data.shape}")
        self._check_space(data.nbytes)
        if self._n_frames == 0 and (data.shape != self._frame_shape or data.dtype != self._frame_dtype
                                    or "data" not in self._f["/entry/frames"]):
            self._restructure(lambda f: self._create_frames(f, data.shape, data.dtype))
        elif data.shape != self._frame_shape:
            # e.g. the operator changed the scan size mid-run: keep the run going, say so in the log
            self._tables["events"].pending.append(
                (rec.time_s, "frame", f"frame skipped: shape {data.shape[0]}x{data.shape[1]} differs from the "
                                      f"session's {self._frame_shape[0]}x{self._frame_shape[1]}"))
            self.n_skipped_frames += 1
            return
        fr = self._f["/entry/frames"]
        if not self._axes_set:
            px = float(rec.pixel_size_m)
            scale = px if np.isfinite(px) and px > 0 else 1.0
            fr["y"][...] = np.arange(self._frame_shape[0]) * scale
            fr["x"][...] = np.arange(self._frame_shape[1]) * scale
            self._axes_set = True
        ds = fr["data"]
        n = self._n_frames
        ds.resize(n + 1, axis=0)
        ds[n] = data
        self._n_frames = n + 1
        self._tables["frames"].pending.append((rec.time_s, rec.bias_V, rec.current_A, bool(rec.blanked),
                                               rec.dose, rec.drift_x, rec.drift_y, rec.pixel_size_m))

    # -- flushing ------------------------------------------------------------
    def _flush_locked(self) -> None:
        self._check_space(sum(len(t.pending) for t in self._tables.values()) * 600)  # ≤ 600 B a row
        for t in self._tables.values():
            t.commit(self._f)
        self._f.flush()
        self._last_flush = time.monotonic()
        self._dirty = False

    def flush(self) -> None:
        """Write everything queued and flush the file to disk (RecordingFailed when that fails)."""
        self._wait_written(self.close_timeout_s)
        with self._lock:
            if not self._closed:
                self._check_ok()
                try:
                    self._flush_locked()
                except (OSError, RuntimeError) as exc:
                    raise self._fail(exc) from None

    # -- end -------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self.path}: session writer is closed")

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def n_frames(self) -> int:
        return self._n_frames

    def close(self, status: str = "complete") -> None:
        """Flush everything, write ``end_time`` and ``status`` and close (idempotent).

        After a write error the status is ``recording_failed`` whatever was asked, and
        close raises nothing (the run's own outcome says what happened); a write error
        met here raises :class:`RecordingFailed` after the status has been tried.
        """
        if status not in CLOSE_STATUSES:
            raise ValueError(f"status must be one of {CLOSE_STATUSES}, got {status!r}")
        if self._closed:
            return
        if not self._drain_for_close():
            return
        with self._lock:
            if self._closed:
                return
            failed_before = self.error is not None
            text_rows = 0
            try:
                if not failed_before:
                    try:
                        for t in self._tables.values():
                            t.commit(self._f)
                            t.pad_if_empty(self._f)
                    except Exception as exc:  # noqa: BLE001 - disk full at the end: say so in the file
                        self._fail(exc)
                final = "recording_failed" if self.error is not None else status
                with contextlib.suppress(Exception):
                    text_rows = int(self._f["/entry/events/kind"].shape[0])
                try:
                    _write_status(self._f, final, _now_iso())
                    self._f.flush()  # one flush: the rows and the status together
                except Exception as exc:  # noqa: BLE001 - nothing more can be done for this file
                    if self.error is None:
                        self._fail(exc)
            finally:
                self._closed = True
                try:
                    self._f.close()
                except Exception:  # noqa: BLE001
                    pass
            try:
                if self.error is None and text_rows >= 2:
                    tidy_session(self.path)  # text columns HyperSpy reads; needs the file outside SWMR
            finally:
                self._wlock.release()
            if self.error is not None and not failed_before:
                raise RecordingFailed(f"cannot write {self.path}: {_reason(self.error)}")

    def _drain_for_close(self) -> bool:
        """Let the writer thread write what is queued (at most ``close_timeout_s``), then stop it.

        On timeout the frames still queued are given up (counted in :attr:`frames_lost_at_close`, an
        event, a warning) and the small records are written. False when the writer thread is stuck
        inside HDF5 (a hung disk): the file is left as it is (a reader later marks it ``interrupted``).
        """
        drained = self._wait_written(self.close_timeout_s)
        if not drained:
            with self._cv:
                self._give_up_frames = True
                self._cv.notify_all()
            drained = self._wait_written(min(5.0, self.close_timeout_s))
            lost = self.frames_lost_at_close
            msg = (f"closing: the queue was not written within {self.close_timeout_s:g} s; "
                   f"{lost} queued frame(s) given up, not in the file")
            log.warning("%s: %s", self.path, msg)
            if drained and self.error is None:
                with self._lock:
                    self._tables["events"].pending.append((self._last_time(), "frames", msg))
        with self._cv:
            self._stop.set()
            if self.frames_dropped > self._drop_reported:   # drops since the last event
                self._drop_reported = self.frames_dropped
            self._cv.notify_all()
        self._writer.join(min(5.0, self.close_timeout_s))
        if not self._writer.is_alive():
            with self._cv:   # records that came in while the thread was stopping
                rest, self._queue = self._queue, []
            with self._lock:
                self._write_batch(rest)
        if self._writer.is_alive():
            log.error("%s: the writer thread is stuck (a hung disk?); the file is left unclosed and will "
                      "be marked interrupted by the next reader", self.path)
            self._closed = True
            return False
        if self.frames_dropped and self.error is None:
            with self._lock:
                self._tables["events"].pending.append(
                    (self._last_time(), "frames", f"{self.frames_dropped} frame(s) dropped in all while "
                                                  "the recorder was behind (see the events before)"))
        return True

    def _last_time(self) -> float:
        """Latest time (s) among the records buffered for the file (0 when none): for closing events."""
        ts = [row[0] for t in self._tables.values() for row in t.pending[-1:]]
        return float(max(ts)) if ts else 0.0

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close("complete")
        elif self.error is not None:
            self.close("fault")  # written as recording_failed; the exception in flight says why
        elif issubclass(exc_type, (StoppedEarly, KeyboardInterrupt)):
            self.close("aborted")
        else:
            self.close("fault")
        return False


def _reason(exc: BaseException) -> str:
    """One line for a write error (``No space left on device (errno 28)`` rather than HDF5's stack)."""
    import re

    text = str(exc).strip()
    errno_ = getattr(exc, "errno", None)
    m = re.search(r"errno = (\d+)", text)
    if m and not errno_:
        errno_ = int(m.group(1))
    if errno_:
        detail = getattr(exc, "strerror", None) or os.strerror(errno_)
        return f"{detail} (errno {errno_})"
    lines = text.splitlines()
    return lines[0] if lines else type(exc).__name__


def _write_status(f: h5py.File, status: str, end_iso: str) -> None:
    """Overwrite the fixed-size ``status`` and ``end_time`` (allowed in SWMR mode)."""
    e = f["/entry"]
    for name, text, n in (("end_time", end_iso, _ISO_LEN), ("status", status, _STATUS_LEN)):
        ds = e[name]
        if ds.dtype.kind == "S":
            _write_fixed_text(ds, None, np.array(_fixed(text, n), dtype=f"S{n}"))
        else:
            ds[()] = text


def _tidy(f: h5py.File) -> None:
    """Make a finished file plain: every log cut to its rows with a time, frames to the rows with
    a time and an image, fixed-length text columns rewritten as variable-length text.

    HyperSpy's NeXus reader loads every array of two or more values and refuses
    fixed-length text ("Data type bytes256 not understood"); it skips variable-length
    text. Those cannot be appended in SWMR mode, so the writer appends fixed-length
    rows and converts them here, outside SWMR, when the file is finished.
    """
    entry = f["/entry"]
    for gname, columns in (("bias", BIAS_COLUMNS), ("beam", BEAM_COLUMNS), ("events", EVENT_COLUMNS),
                           ("frames", FRAME_COLUMNS)):
        g = entry.get(gname)
        if g is None or "time" not in g:
            continue
        t = np.asarray(g["time"][()], dtype=float)
        n = min([_valid_rows(t)] + [g[c].shape[0] for c in columns if c in g])
        if gname == "frames" and "data" in g:
            n = min(n, g["data"].shape[0])
            if g["data"].shape[0] != n:
                g["data"].resize(n, axis=0)  # rows resized but never filled: no zeros as frames
        keep = max(n, 1)  # a placeholder row (time NaN) for an empty log: HyperSpy cannot read 0 rows
        for c in columns:
            if c in g and g[c].shape[0] != keep:
                g[c].resize((keep,))
    texts = []
    f.visititems(lambda name, obj: texts.append(obj) if isinstance(obj, h5py.Dataset) and obj.dtype.kind == "S"
                 and obj.size >= 2 else None)  # HyperSpy skips arrays of fewer than two values
    for ds in texts:
        g, name, shape = ds.parent, ds.name.rsplit("/", 1)[1], ds.shape
        values = np.array([_text(v) for v in ds[()].ravel()], dtype=object).reshape(shape)
        attrs = dict(ds.attrs)
        resizable = ds.maxshape[0] is None
        del g[name]
        new = g.create_dataset(name, data=values, dtype=h5py.string_dtype("utf-8"),
                               **({"maxshape": (None,) + values.shape[1:],
                                   "chunks": (max(1, min(len(values), 1024)),) + values.shape[1:]}
                                  if resizable else {}))
        for k, v in attrs.items():
            new.attrs[k] = v


def tidy_session(path: Path) -> bool:
    """:func:`_tidy` on a closed file; False when it cannot be opened for writing now (e.g. a reader in
    this process holds it open), in which case the file stays as the writer left it."""
    try:
        f = h5py.File(path, "r+", libver="latest")
    except OSError as exc:
        if "lock" not in str(exc):
            return False
        try:
            f = h5py.File(path, "r+", libver="latest", locking=False)
        except OSError:
            return False
    try:
        _tidy(f)
    except Exception:  # noqa: BLE001 - best effort: the file stays as the writer left it, readable by h5py
        return False
    finally:
        f.close()
    return True


def _last_time(f: h5py.File) -> float:
    """Latest finite time (s) in any log of the file (nan when none)."""
    ts = []
    for g in ("bias", "beam", "events", "frames"):
        ds = f.get(f"/entry/{g}/time")
        if ds is not None and ds.shape[0]:
            t = np.asarray(ds[()], dtype=float)
            ts.extend(t[np.isfinite(t)][-1:])
    return float(max(ts)) if ts else float("nan")


def recover_interrupted(path) -> bool:
    """Finish the file of a writer that died (``kill -9``, crash): status ``interrupted``.

    Only when nobody holds the writer's lock (:mod:`insitu.core.writelock`); the
    lock is taken for the repair. Clears the superblock's write flags (so plain
    ``h5py.File(path)`` and ``hs.load(path, file_format="NeXus")`` open it),
    drops rows resized but never written, converts text columns
    (:func:`_tidy`), sets ``end_time`` to the start plus the last sample time
    and adds an ``interrupted`` event saying so. Returns True when it repaired
    the file, False when a writer is alive or the file cannot be written here.
    """
    p = Path(path)
    lock = try_lock(p)
    if lock is None:
        return False
    with lock:
        try:
            repair_session(p)
            try:
                f = h5py.File(p, "r+", libver="latest")
            except OSError:
                f = h5py.File(p, "r+", libver="latest", locking=False)
        except (OSError, UserError):
            return False
        with f:
            e = f.get("entry")
            if not isinstance(e, h5py.Group) or "status" not in e:
                return False
            if _text(e["status"][()]) != "running":
                _tidy(f)  # the writer died after writing its status
                return True
            last = _last_time(f)
            _tidy(f)
            try:
                start = datetime.fromisoformat(_text(e["start_time"][()]))
                end_iso = (start + timedelta(seconds=last)).isoformat() if np.isfinite(last) else ""
            except ValueError:
                end_iso = ""
            msg = (f"the writer stopped without closing the file (killed or crashed); the recording ends "
                   f"at its last sample, t = {last:.3f} s" if np.isfinite(last)
                   else "the writer stopped without closing the file (killed or crashed) before any sample")
            ev = e["events"]
            n = _valid_rows(np.asarray(ev["time"][()], float))
            for name, value in (("time", last if np.isfinite(last) else 0.0), ("kind", "interrupted"),
                                ("message", msg)):
                ev[name].resize((n + 1,))
                ev[name][n] = value
            e["status"].attrs["last_sample_time_s"] = last
            _write_status(f, "interrupted", end_iso)
    return True


def _write_dict(g: h5py.Group, d: dict) -> None:
    """Datasets from a dict: str, numbers, bools, arrays; nested dicts -> subgroups; None skipped."""
    for k, v in d.items():
        k = str(k)
        if k in g:
            del g[k]
        if isinstance(v, dict):
            _write_dict(g.create_group(k), v)
        elif v is None:
            continue
        elif isinstance(v, str):
            g.create_dataset(k, data=v)
        elif isinstance(v, (list, tuple)) and v and all(isinstance(x, str) for x in v):
            g.create_dataset(k, data=[str(x) for x in v], dtype=h5py.string_dtype("utf-8"))
        elif isinstance(v, np.ndarray) and v.dtype.kind in "SUO":
            # variable-length text: HyperSpy's NeXus reader refuses fixed-length text arrays
            g.create_dataset(k, data=np.array([_text(x) for x in v.ravel()], dtype=object).reshape(v.shape),
                             dtype=h5py.string_dtype("utf-8"))
        else:
            g.create_dataset(k, data=np.asarray(v))


# ---------------------------------------------------------------------------------------------
# reading

def _open_h5(path: Path, retry_s: float = 1.0) -> tuple[h5py.File, bool]:
    """Open a session read-only: plain first, then SWMR (a live or killed writer's file).

    A file open for writing outside SWMR (a writer adding groups: milliseconds)
    is retried for ``retry_s`` before giving up.
    """
    t_end = time.monotonic() + retry_s
    while True:
        try:
            return h5py.File(path, "r"), False
        except OSError as first:
            try:
                return h5py.File(path, "r", swmr=True), True
            except OSError:
                if "already open for write" in str(first) and time.monotonic() < t_end:
                    time.sleep(0.05)
                    continue
                if "already open for write" in str(first):
                    raise UserError(f"{path}: the file is open for writing outside SWMR by a live writer "
                                    "(changing its structure); try again in a moment") from None
                raise UserError(f"{path}: cannot open as HDF5: {first}") from None


def _check_extents(f: h5py.File, path: Path) -> None:
    """UserError when a dataset's stored bytes lie beyond the end of the file (cut short after the
    end-of-file address a killed writer left): such frames would read back as zeros."""
    size = os.path.getsize(path)
    for name in ("frames/data",) + tuple(f"{g}/time" for g in ("bias", "beam", "events", "frames")):
        ds = f.get(f"/entry/{name}")
        if not isinstance(ds, h5py.Dataset):
            continue
        end = [0]
        if ds.chunks is not None:
            def last(info, end=end):
                end[0] = max(end[0], info.byte_offset + info.size)
            ds.id.chunk_iter(last)
        else:
            off = ds.id.get_offset()
            end[0] = (off or 0) + ds.id.get_storage_size()
        if end[0] > size:
            raise UserError(f"{path}: truncated: /entry/{name} needs {end[0]} bytes, the file has {size} "
                            "(an interrupted copy?); nothing read from it")


def _read_group(g: h5py.Group) -> dict:
    out: dict[str, Any] = {}
    for k, item in g.items():
        if isinstance(item, h5py.Group):
            out[k] = _read_group(item)
        else:
            v = item[()]
            if isinstance(v, bytes):
                v = _text(v)
            elif isinstance(v, np.ndarray) and v.dtype.kind in "SO":
                v = np.array([_text(x) for x in v.ravel()], dtype=object).reshape(v.shape)
            out[k] = v
    out["attrs"] = {k: (_text(v) if isinstance(v, bytes) else v) for k, v in g.attrs.items()}
    return out


def _valid_rows(time_arr: np.ndarray) -> int:
    """Rows up to the last finite time (a killed writer may leave resized, unfilled rows)."""
    ok = np.flatnonzero(np.isfinite(time_arr))
    return int(ok[-1]) + 1 if ok.size else 0


class Session:
    """Read access to a session file (complete, aborted, killed, or still being written).

    Use :func:`open_session`. Logs are read into memory (``bias``, ``beam``,
    ``events``, ``frame_table``); frames are read on demand.
    """

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.exists():
            raise UserError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise UserError(f"{self.path}: is a folder, not a session file")
        #: True when this reader found the writer dead and marked the file ``interrupted``
        self.recovered = False
        self._open()

    def _open(self) -> None:
        """Open (or reopen) and read; finishes a dead writer's file first (:func:`recover_interrupted`)."""
        sb = check_not_truncated(self.path)  # before HDF5: in SWMR mode it would spin on a cut file
        if sb is not None and sb.flags and writer_alive(self.path) is False:
            self.recovered |= recover_interrupted(self.path)
        self._f, self.live = _open_h5(self.path)
        try:
            entry = self._f.get("entry")
            if not isinstance(entry, h5py.Group) or _text(entry.attrs.get("NX_class", b"")) != "NXentry" \
                    or "bias" not in entry or "frames" not in entry:
                raise UserError(f"{self.path}: not an insitu session file (no /entry with bias and frames)")
            _check_extents(self._f, self.path)
            self._read()
            if self.status == "running" and writer_alive(self.path) is False:
                # the writer died while the file was closed between two structural steps
                self._f.close()
                self.recovered |= recover_interrupted(self.path)
                self._f, self.live = _open_h5(self.path)
                self._read()
        except Exception:
            self._f.close()
            raise

    def _read(self) -> None:
        e = self._f["entry"]
        self.start_time = _text(e["start_time"][()])
        self.end_time = _text(e["end_time"][()]) or None
        self.status = _text(e["status"][()])
        self.program = _text(e["program"][()]) if "program" in e else ""
        self.version = _text(e["version"][()]) if "version" in e else ""
        self.protocol_text = _text(e["protocol"][()]) if "protocol" in e else ""
        self.instruments_text = _text(e["instruments"][()]) if "instruments" in e else ""
        self.bias = self._table(e["bias"], BIAS_COLUMNS)
        self.beam = self._table(e["beam"], BEAM_COLUMNS)
        ev = self._table(e["events"], EVENT_COLUMNS)
        self.events = [(float(t), _text(k), _text(m)) for t, k, m in zip(ev["time"], ev["kind"], ev["message"])]
        ft = self._table(e["frames"], FRAME_COLUMNS)
        data = e["frames"].get("data")
        n_data = data.shape[0] if data is not None else 0
        n = min(n_data, len(ft["time"]))
        self.frame_table = {k: v[:n] for k, v in ft.items()}
        self.n_frames = n
        self.frame_shape = tuple(data.shape[1:]) if data is not None else ()
        self.frame_dtype = data.dtype if data is not None else None
        self._data = data

    def _table(self, g: h5py.Group, columns: dict) -> dict:
        arrays = {}
        for name in columns:
            ds = g.get(name)
            arrays[name] = ds[()] if ds is not None else np.zeros(0)
        n = min(len(a) for a in arrays.values())
        n = min(n, _valid_rows(np.asarray(arrays["time"][:n], dtype=float)))
        return {k: v[:n] for k, v in arrays.items()}

    # -- convenience ---------------------------------------------------------
    @property
    def closed_cleanly(self) -> bool:
        """True when the writer closed the file (status complete/aborted/fault)."""
        return self.status in STATUSES

    @property
    def duration_s(self) -> float:
        """Last recorded time (any record), in s since start."""
        ts = [a[-1] for a in (self.bias["time"], self.beam["time"], self.frame_table["time"]) if len(a)]
        ts += [self.events[-1][0]] if self.events else []
        return float(max(ts)) if ts else 0.0

    @property
    def t_first_s(self) -> float:
        """First recorded time (any record), in s since start (0 when nothing was recorded)."""
        ts = [a[0] for a in (self.bias["time"], self.beam["time"], self.frame_table["time"]) if len(a)]
        ts += [self.events[0][0]] if self.events else []
        return float(min(ts)) if ts else 0.0

    @property
    def protocol_name(self) -> str:
        import yaml

        try:
            doc = yaml.safe_load(self.protocol_text) if self.protocol_text else None
        except yaml.YAMLError:
            return ""
        return str(doc.get("name", "")) if isinstance(doc, dict) else ""

    @property
    def pixel_size_m(self) -> float:
        ps = self.frame_table["pixel_size"]
        return float(ps[0]) if len(ps) else float("nan")

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` (negative counts from the end) as an array."""
        if i < 0:
            i += self.n_frames
        if not 0 <= i < self.n_frames:
            raise IndexError(f"frame {i} out of range (0..{self.n_frames - 1})")
        return self._data[i]

    def iter_frames(self, start: int = 0) -> Iterator[tuple[int, float, np.ndarray]]:
        """Yield ``(index, time_s, frame)`` from ``start`` to the last frame."""
        for i in range(start, self.n_frames):
            yield i, float(self.frame_table["time"][i]), self._data[i]

    def group(self, path: str) -> dict:
        """Datasets of any group as arrays (subgroups as nested dicts) plus ``"attrs"``."""
        g = self._f.get(path)
        if not isinstance(g, h5py.Group):
            raise KeyError(f"{self.path}: no group {path}")
        return _read_group(g)

    def has(self, path: str) -> bool:
        return path in self._f

    def refresh(self) -> None:
        """Re-read sizes, logs and frames (live reading of a file still being written).

        The file is reopened: refreshing SWMR datasets in place updates their
        sizes, but frames read afterwards could come back stale (seen with
        h5py 3.16 while another process appended frames), and reopening costs
        only a few milliseconds.
        """
        self._reopen()

    def _reopen(self) -> None:
        self._f.close()
        self._open()

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self) -> str:
        return (f"Session({str(self.path)!r}, status={self.status!r}, frames={self.n_frames}, "
                f"bias samples={len(self.bias['time'])}, events={len(self.events)})")


def open_session(path) -> Session:
    """Open a session file for reading (complete, aborted, killed or live); UserError if it is not one."""
    return Session(path)


def is_session_file(path) -> bool:
    """True when ``path`` is an HDF5 file with an insitu ``/entry`` (cheap check, never raises)."""
    try:
        with open_session(path):
            return True
    except Exception:
        return False


__all__ = ["SessionWriter", "Session", "open_session", "is_session_file", "repair_session", "recover_interrupted",
           "tidy_session", "RecordingFailed", "STATUSES"]
