"""The session file: a crash-safe, NeXus-shaped HDF5 record of one experiment.

Layout (binding, see DESIGN.md)::

    /entry                 NXentry: start_time, end_time, program, version (also NeXus
                           program_name@version), protocol (YAML), instruments (TOML),
                           status (running | complete | aborted | fault)
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
fixed-size values (``status``, ``end_time``). Small records are buffered and
written at least once a second (flush-on-write when a second has passed, and
a background flusher for quiet periods); frames go to disk as they arrive.
A ``kill -9`` therefore leaves a file that opens (``h5py.File(path, "r",
swmr=True)``, which :func:`open_session` tries by itself) and holds
everything up to the last flush: no repair step. Readers drop trailing rows
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

import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from insitu import __version__
from insitu.errors import StoppedEarly, UserError
from insitu.records import BeamSample, BiasSample, EventRecord, FrameRecord, ProgressRecord

STATUSES = ("complete", "aborted", "fault")
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

    Examples
    --------
    >>> import tempfile, os
    >>> from insitu.records import BiasSample
    >>> p = os.path.join(tempfile.mkdtemp(), "s.h5")
    >>> with SessionWriter(p, start_time_iso="2026-01-01T00:00:00+00:00") as w:
    ...     w.write(BiasSample(0.0, 0.0, 0.0, 1e-12, False))
    >>> open_session(p).bias["current"].tolist()
    [1e-12]
    """

    def __init__(self, path, *, overwrite: bool = False, start_time_iso: str, protocol_text: str = "",
                 instruments_text: str = "", program: str = "insitu", frame_shape=None, frame_dtype=None,
                 flush_interval_s: float = 1.0):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise UserError(f"{self.path}: file exists; refusing to overwrite it (use --overwrite)")
        if not self.path.parent.is_dir():
            raise UserError(f"{self.path.parent}: output folder does not exist")
        self._lock = threading.RLock()
        self._closed = False
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
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="session-flusher", daemon=True)
        self._flusher.start()

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
            raise RuntimeError(f"{self.path}: cannot add groups while this process also reads the file; "
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

    # -- records -----------------------------------------------------------
    def write(self, record) -> None:
        """Record one engine record; thread-safe. ProgressRecord is ignored."""
        if isinstance(record, ProgressRecord):
            return
        with self._lock:
            if self._closed:
                return
            if isinstance(record, BiasSample):
                self._tables["bias"].pending.append((record.time_s, record.setpoint_V, record.voltage_V,
                                                     record.current_A, bool(record.compliance)))
            elif isinstance(record, BeamSample):
                self._tables["beam"].pending.append((record.time_s, bool(record.blanked), record.dose_rate))
            elif isinstance(record, EventRecord):
                self._tables["events"].pending.append((record.time_s, record.kind, record.message))
            elif isinstance(record, FrameRecord):
                self._write_frame(record)
            else:
                raise TypeError(f"SessionWriter cannot record {type(record).__name__}")
            self._dirty = True
            if time.monotonic() - self._last_flush >= self.flush_interval_s:
                self._flush_locked()

    __call__ = write

    def _write_frame(self, rec: FrameRecord) -> None:
        data = np.asarray(rec.data)
        if data.ndim != 2:
            raise ValueError(f"frame must be 2-D, got shape {data.shape}")
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
        for t in self._tables.values():
            t.commit(self._f)
        self._f.flush()
        self._last_flush = time.monotonic()
        self._dirty = False

    def flush(self) -> None:
        """Write buffered records and flush the file to disk."""
        with self._lock:
            if not self._closed:
                self._flush_locked()

    def _flush_loop(self) -> None:
        period = max(0.05, self.flush_interval_s / 4)
        while not self._stop.wait(period):
            with self._lock:
                if self._closed:
                    return
                if self._dirty and time.monotonic() - self._last_flush >= self.flush_interval_s:
                    try:
                        self._flush_locked()
                    except Exception:  # never kill the writer from the background thread
                        pass

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
        """Flush everything, write ``end_time`` and ``status`` and close (idempotent)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        with self._lock:
            if self._closed:
                return
            self._stop.set()
            try:
                for t in self._tables.values():
                    t.commit(self._f)
                    t.pad_if_empty(self._f)
                _write_fixed_text(self._f["/entry/end_time"], None,
                                  np.array(_fixed(_now_iso(), _ISO_LEN), dtype=f"S{_ISO_LEN}"))
                _write_fixed_text(self._f["/entry/status"], None,
                                  np.array(_fixed(status, _STATUS_LEN), dtype=f"S{_STATUS_LEN}"))
                self._f.flush()
            finally:
                self._closed = True
                self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close("complete")
        elif issubclass(exc_type, (StoppedEarly, KeyboardInterrupt)):
            self.close("aborted")
        else:
            self.close("fault")
        return False


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
                    raise UserError(f"{path}: the file is open for writing outside SWMR (a writer changing its "
                                    f"structure right now, or one that died doing so); if nothing writes it, "
                                    f"'insitu info {path}' repairs it") from None
                raise UserError(f"{path}: cannot open as HDF5: {first}") from None


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & 0xFFFFFFFF


def _lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``: the checksum HDF5 puts on version 2/3 superblocks."""
    m = 0xFFFFFFFF
    n = len(data)
    a = b = c = (0xDEADBEEF + n + initval) & m
    i = 0
    while n > 12:
        a = (a + int.from_bytes(data[i:i + 4], "little")) & m
        b = (b + int.from_bytes(data[i + 4:i + 8], "little")) & m
        c = (c + int.from_bytes(data[i + 8:i + 12], "little")) & m
        a = (a - c) & m; a ^= _rot(c, 4); c = (c + b) & m  # noqa: E702
        b = (b - a) & m; b ^= _rot(a, 6); a = (a + c) & m  # noqa: E702
        c = (c - b) & m; c ^= _rot(b, 8); b = (b + a) & m  # noqa: E702
        a = (a - c) & m; a ^= _rot(c, 16); c = (c + b) & m  # noqa: E702
        b = (b - a) & m; b ^= _rot(a, 19); a = (a + c) & m  # noqa: E702
        c = (c - b) & m; c ^= _rot(b, 4); b = (b + a) & m  # noqa: E702
        i += 12
        n -= 12
    if n == 0:
        return c
    tail = data[i:i + n] + bytes(12 - n)
    a = (a + int.from_bytes(tail[0:4], "little")) & m
    b = (b + int.from_bytes(tail[4:8], "little")) & m
    c = (c + int.from_bytes(tail[8:12], "little")) & m
    c ^= b; c = (c - _rot(b, 14)) & m  # noqa: E702
    a ^= c; a = (a - _rot(c, 11)) & m  # noqa: E702
    b ^= a; b = (b - _rot(a, 25)) & m  # noqa: E702
    c ^= b; c = (c - _rot(b, 16)) & m  # noqa: E702
    a ^= c; a = (a - _rot(c, 4)) & m  # noqa: E702
    b ^= a; b = (b - _rot(a, 14)) & m  # noqa: E702
    c ^= b; c = (c - _rot(b, 24)) & m  # noqa: E702
    return c


def repair_session(path) -> bool:
    """Clear the "open for writing" flags a dead writer left in the superblock (what ``h5clear -s`` does).

    Only needed when a writer died in the few milliseconds while it had the
    file open outside SWMR mode (adding groups). The superblock checksum is
    verified before and rewritten after. Returns True when a flag was cleared.
    Never call it on a file that a live process is writing.
    """
    p = Path(path)
    with open(p, "r+b") as fh:
        head = fh.read(8 + 4)
        if head[:8] != b"\x89HDF\r\n\x1a\n" or head[8] not in (2, 3):
            return False
        size_o = head[9]
        n = 12 + 4 * size_o
        fh.seek(0)
        block = fh.read(n + 4)
        if int.from_bytes(block[n:n + 4], "little") != _lookup3(block[:n]):
            raise UserError(f"{p}: superblock checksum does not match; not repairing")
        if block[11] == 0:
            return False
        fixed = block[:11] + b"\x00" + block[12:n]
        fh.seek(0)
        fh.write(fixed + _lookup3(fixed).to_bytes(4, "little"))
    return True


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
        self._f, self.live = _open_h5(self.path)
        try:
            entry = self._f.get("entry")
            if not isinstance(entry, h5py.Group) or _text(entry.attrs.get("NX_class", b"")) != "NXentry" \
                    or "bias" not in entry or "frames" not in entry:
                raise UserError(f"{self.path}: not an insitu session file (no /entry with bias and frames)")
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
        self._read()

    def _reopen(self) -> None:
        self._f.close()
        self._f, self.live = _open_h5(self.path)

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


__all__ = ["SessionWriter", "Session", "open_session", "is_session_file", "repair_session", "STATUSES"]
