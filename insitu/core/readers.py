"""Microscope image files -> one common frame stack (RosettaSciIO does the reading).

Supported: Thermo Fisher Velox ``.emd`` (single images and frame series,
including the HAADF image series of a spectrum image), Gatan
DigitalMicrograph ``.dm3``/``.dm4`` (images and stacks) and TIFF stacks
(DigitalMicrograph and ImageJ exports), one file or a folder of them.

Every reader returns a :class:`FrameStack`: frames ``(n, ny, nx)``, frame
times in s since the first frame, the pixel size in m, the absolute time of
the first frame (UNIX s, when the file says) and a metadata dict (detector,
high tension, dwell, frame time, where the times came from).

Frame times, in order of preference:

1. per-frame detector time stamps (Velox camera stacks, µs resolution);
2. the file's stack axis when it is calibrated in time (Velox frame time,
   DM/TIFF axis in s/ms; an ImageJ or DM stack axis with no unit but a step
   other than 1 is taken as seconds: DM's time axis survives export as such);
3. otherwise ``frame_interval_s`` (default 1 s per frame), and
   ``meta["time_source"]`` says so.

Naive date/time stamps (DigitalMicrograph) are read as local time of this
computer; Velox stores UNIX time.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from insitu.core.errors import UserError

#: file name endings read by :func:`read_frames` (lower case)
SUPPORTED_SUFFIXES = (".emd", ".dm3", ".dm4", ".tif", ".tiff")

_LENGTH_M = {"m": 1.0, "mm": 1e-3, "µm": 1e-6, "μm": 1e-6, "um": 1e-6, "micron": 1e-6, "microns": 1e-6,
             "nm": 1e-9, "pm": 1e-12, "å": 1e-10, "angstrom": 1e-10, "a": 1e-10}
_TIME_S = {"s": 1.0, "sec": 1.0, "ms": 1e-3, "µs": 1e-6, "μs": 1e-6, "us": 1e-6, "ns": 1e-9, "min": 60.0,
           "h": 3600.0}


@dataclass
class FrameStack:
    """Frames from microscope files with their times and calibration.

    Attributes
    ----------
    frames : ndarray, shape (n, ny, nx)
    times_s : ndarray, shape (n,)
        Seconds since the first frame (``times_s[0] == 0``).
    pixel_size_m : float
        Pixel size along x in m (NaN when the file has no length calibration).
    start_epoch_s : float or None
        UNIX time of the first frame, when the file records it.
    meta : dict
        ``detector``, ``ht_V``, ``dwell_s``, ``frame_time_s``,
        ``time_source``, ``pixel_size_y_m``, ``title``, ``instrument``...
    sources : list of str
        File of each frame.
    """

    frames: np.ndarray
    times_s: np.ndarray
    pixel_size_m: float
    start_epoch_s: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def frame_shape(self) -> tuple[int, int]:
        return tuple(self.frames.shape[1:])


def _unit_factor(units, table) -> float | None:
    if units is None:
        return None
    u = str(units).strip()
    return table.get(u, table.get(u.lower()))


def _get(d, dotted: str):
    for k in dotted.split("."):
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _apply_mapping(sig: dict) -> dict:
    """RosettaSciIO returns a ``mapping`` (original -> HyperSpy metadata) that HyperSpy applies; apply it here."""
    md = dict(sig.get("metadata") or {})
    flat: dict[str, Any] = {}
    for src, (dst, fn) in (sig.get("mapping") or {}).items():
        v = _get(sig.get("original_metadata") or {}, src)
        if v is None:
            continue
        try:
            v = fn(v) if fn else v
        except Exception:
            continue
        if v is not None and not isinstance(v, dict):
            flat[dst] = v
    for dst, v in flat.items():
        node = md
        parts = dst.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {}) if isinstance(node.get(p, {}), dict) else {}
        node[parts[-1]] = v
    return md


def _naive_epoch(date: str | None, time_: str | None) -> float | None:
    if not date:
        return None
    text = f"{date} {time_ or '00:00:00'}"
    for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(text, fmt).timestamp()  # naive -> local time
        except ValueError:
            continue
    return None


def _stack_axes(sig: dict, path: Path):
    """Frames (n, ny, nx) and the axis dicts (stack or None, y, x) of one RosettaSciIO signal."""
    data = np.asarray(sig["data"])
    axes = list(sig["axes"])
    if data.ndim == 2:
        return data[np.newaxis], None, axes[0], axes[1]
    if data.ndim != 3:
        raise UserError(f"{path}: expected images or an image stack, got data of shape {data.shape}")
    nav = [i for i, a in enumerate(axes) if a.get("navigate")]
    k = nav[0] if nav else 0
    sig_axes = [a for i, a in enumerate(axes) if i != k]
    return np.moveaxis(data, k, 0), axes[k], sig_axes[0], sig_axes[1]


def _length_m(axis) -> float:
    f = _unit_factor(axis.get("units"), _LENGTH_M)
    return float(axis["scale"]) * f if f is not None else float("nan")


def _stack_times(n: int, stack_axis, meta: dict, frame_interval_s: float | None) -> np.ndarray:
    """Times from a stack axis (time units, or no unit and step != 1 -> s), else the fallback interval."""
    if n == 1:
        meta.setdefault("time_source", "single frame")
        return np.zeros(1)
    if stack_axis is not None:
        scale = float(stack_axis.get("scale", 1.0) or 1.0)
        units = stack_axis.get("units")
        f = _unit_factor(units, _TIME_S)
        if f is not None:
            meta["time_source"] = f"stack axis ({scale:g} {units} per frame)"
            return np.arange(n) * scale * f
        if (units is None or str(units).strip() in ("", "<undefined>")) and scale != 1.0:
            meta["time_source"] = f"stack axis without unit ({scale:g} per frame, taken as s)"
            return np.arange(n) * scale
    dt = float(frame_interval_s) if frame_interval_s else 1.0
    meta["time_source"] = (f"frame interval {dt:g} s (given)" if frame_interval_s
                           else "none in file: frames placed 1 s apart (use --frame-interval-s)")
    return np.arange(n) * dt


# -- Velox ----------------------------------------------------------------------------------------
def _velox_docs(path: Path, detector: str, n_frames: int, shape) -> list[dict]:
    """Per-frame Velox metadata JSON documents of the image dataset that matches."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            images = f.get("Data/Image")
            if images is None:
                return []
            best = []
            for g in images.values():
                if "Metadata" not in g or "Data" not in g:
                    continue
                d = g["Data"]
                if d.shape[-1] != n_frames or tuple(d.shape[:2]) != tuple(shape):
                    continue
                md = g["Metadata"]
                docs = []
                for k in range(md.shape[1]):
                    raw = bytes(md[:, k]).rstrip(b"\x00")
                    docs.append(json.loads(raw.decode("utf-8", errors="replace")) if raw else {})
                if _get(docs[0], "BinaryResult.Detector") == detector:
                    return docs
                best = best or docs
            return best
    except (OSError, ValueError):
        return []


def _float(x) -> float | None:
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _read_velox(path: Path, detector: str | None, frame_interval_s) -> FrameStack:
    from rsciio import emd

    try:
        sigs = emd.file_reader(str(path), select_type="images", load_SI_image_stack=True)
    except Exception as exc:
        raise UserError(f"{path}: cannot read as Velox EMD: {exc}") from None
    images = [s for s in sigs if np.asarray(s["data"]).ndim in (2, 3)]
    if not images:
        raise UserError(f"{path}: no images in this EMD file")
    titles = [(s.get("metadata") or {}).get("General", {}).get("title", "") for s in images]
    if detector:
        chosen = [s for s, t in zip(images, titles) if t.lower() == detector.lower()]
        if not chosen:
            raise UserError(f"{path}: no images from detector {detector!r} (found: {', '.join(titles)})")
        sig = chosen[0]
    else:
        haadf = [s for s, t in zip(images, titles) if "haadf" in t.lower()]
        pool = haadf or images
        sig = max(pool, key=lambda s: np.asarray(s["data"]).shape[0] if np.asarray(s["data"]).ndim == 3 else 1)
    title = (sig.get("metadata") or {}).get("General", {}).get("title", "")
    frames, stack_axis, ax_y, ax_x = _stack_axes(sig, path)
    n = frames.shape[0]
    meta: dict[str, Any] = {"format": "Velox EMD", "title": title, "detector": title}
    docs = _velox_docs(path, title, n, frames.shape[1:])
    d0 = docs[0] if docs else {}
    meta["detector"] = _get(d0, "BinaryResult.Detector") or title
    meta["ht_V"] = _float(_get(d0, "Optics.AccelerationVoltage"))
    meta["dwell_s"] = _float(_get(d0, "Scan.DwellTime"))
    meta["frame_time_s"] = _float(_get(d0, "Scan.FrameTime"))
    names = [str(x) for x in (_get(d0, "Instrument.InstrumentClass"), _get(d0, "Instrument.InstrumentModel")) if x]
    meta["instrument"] = " ".join(dict.fromkeys(names))
    meta["velox_version"] = _velox_version(path)
    px_md = _float(_get(d0, "BinaryResult.PixelSize.width"))
    pixel = _length_m(ax_x)
    if not np.isfinite(pixel) and px_md:
        pixel = px_md
    meta["pixel_size_y_m"] = _length_m(ax_y)
    epochs = [_float(_get(d, "Acquisition.AcquisitionStartDatetime.DateTime")) for d in docs]
    start = epochs[0] if epochs and epochs[0] is not None else None
    # per-frame detector time stamps (µs since the epoch), e.g. Ceta camera stacks
    det = meta["detector"]
    stamps = [_float(((d.get("CustomProperties") or {}).get(f"Detectors[{det}].TimeStamp") or {}).get("value"))
              for d in docs]
    if n > 1 and len(stamps) == n and all(s is not None for s in stamps) and np.all(np.diff(stamps) > 0):
        st = np.asarray(stamps) * 1e-6
        times = st - st[0]
        start = float(st[0])
        meta["time_source"] = "detector time stamps"
    else:
        times = _stack_times(n, stack_axis, meta, frame_interval_s)
    if epochs and all(e is not None for e in epochs):
        meta["frame_datetime_s"] = [float(e) for e in epochs]
    return FrameStack(frames, np.asarray(times, float), float(pixel), start, meta, [str(path)] * n)


def _velox_version(path: Path) -> str:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            v = f["Version"][()]
            v = v[0] if isinstance(v, np.ndarray) else v
            return str(json.loads(v).get("version", ""))
    except Exception:
        return ""


# -- DM and TIFF ----------------------------------------------------------------------------------
def check_tiff_complete(path: Path) -> int:
    """Number of pages of a TIFF; UserError when it is cut short or its page chain is broken.

    tifffile (and so RosettaSciIO) only logs "invalid page offset" and returns the
    pages before the break: a truncated two-frame stack would import as one frame.
    Every page's image data must also lie within the file.
    """
    import logging

    import tifffile

    problems: list[str] = []

    class _Catch(logging.Handler):
        def emit(self, record):
            problems.append(record.getMessage())

    log = logging.getLogger("tifffile")
    handler = _Catch(logging.WARNING)
    log.addHandler(handler)
    size = path.stat().st_size
    try:
        with tifffile.TiffFile(path) as tf:
            pages = list(tf.pages)
            for k, page in enumerate(pages):
                ends = [o + c for o, c in zip(page.dataoffsets or (), page.databytecounts or ())]
                if ends and max(ends) > size:
                    problems.append(f"page {k + 1} needs {max(ends)} bytes")
    except tifffile.TiffFileError as exc:
        raise UserError(f"{path}: cannot read as TIFF: {exc}") from None
    finally:
        log.removeHandler(handler)
    bad = [m for m in problems if "offset" in m or "bytes" in m or "truncat" in m.lower()]
    if bad:
        raise UserError(f"{path}: truncated or damaged TIFF ({size} bytes; {bad[0].split('> ')[-1]}); "
                        f"{len(pages)} page(s) readable before the break, nothing imported")
    return len(pages)


def _read_rsciio(path: Path, frame_interval_s) -> FrameStack:
    suffix = path.suffix.lower()
    if suffix in (".dm3", ".dm4"):
        from rsciio import digitalmicrograph as mod
        fmt = "DigitalMicrograph"
    else:
        from rsciio import tiff as mod
        fmt = "TIFF"
        check_tiff_complete(path)
    try:
        sigs = mod.file_reader(str(path))
    except Exception as exc:
        raise UserError(f"{path}: cannot read as {fmt}: {exc}") from None
    sigs = [s for s in sigs if np.asarray(s["data"]).ndim in (2, 3)]
    if not sigs:
        raise UserError(f"{path}: no image data")
    sig = sigs[0]
    md = _apply_mapping(sig)
    frames, stack_axis, ax_y, ax_x = _stack_axes(sig, path)
    if frames.dtype.kind == "c" or frames.dtype.names:
        raise UserError(f"{path}: complex or RGB images are not supported")
    n = frames.shape[0]
    tem = _get(md, "Acquisition_instrument.TEM") or {}
    om = sig.get("original_metadata") or {}
    if fmt == "TIFF":
        desc = str(om.get("ImageDescription", ""))
        fmt = "TIFF (ImageJ)" if desc.startswith("ImageJ") else ("TIFF (DigitalMicrograph)"
                                                                  if any(str(k).startswith("65") for k in om)
                                                                  else "TIFF")
    meta: dict[str, Any] = {"format": fmt, "title": _get(md, "General.title") or path.stem,
                            "detector": _get(tem, "Detector") if isinstance(_get(tem, "Detector"), str) else None,
                            "ht_V": float(tem["beam_energy"]) * 1e3 if "beam_energy" in tem else None,
                            "dwell_s": tem.get("dwell_time"), "frame_time_s": None,
                            "magnification": tem.get("magnification"),
                            "acquisition_mode": tem.get("acquisition_mode"),
                            "pixel_size_y_m": _length_m(ax_y)}
    times = _stack_times(n, stack_axis, meta, frame_interval_s)
    if fmt == "TIFF (ImageJ)" and n > 1:
        fi = re.search(r"finterval=([0-9.eE+-]+)", str(om.get("ImageDescription", "")))
        if fi:
            times = np.arange(n) * float(fi.group(1))
            meta["time_source"] = f"ImageJ finterval ({float(fi.group(1)):g} s)"
    if n > 1 and meta["time_source"].startswith("stack axis"):
        meta["frame_time_s"] = float(times[1] - times[0])
    start = _naive_epoch(_get(md, "General.date"), _get(md, "General.time"))
    return FrameStack(frames, np.asarray(times, float), _length_m(ax_x), start, meta, [str(path)] * n)


# -- public -----------------------------------------------------------------------------------------
def is_image_file(path) -> bool:
    """True for a name :func:`read_frames` reads (by suffix; hidden and temporary names excluded)."""
    p = Path(path)
    return p.suffix.lower() in SUPPORTED_SUFFIXES and not p.name.startswith((".", "~"))


def _natural_key(p: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def read_file(path, *, detector: str | None = None, frame_interval_s: float | None = None) -> FrameStack:
    """Read one image file (see :func:`read_frames`)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file")
    suffix = p.suffix.lower()
    if suffix == ".emd":
        return _read_velox(p, detector, frame_interval_s)
    if suffix in (".dm3", ".dm4", ".tif", ".tiff"):
        return _read_rsciio(p, frame_interval_s)
    raise UserError(f"{p}: unsupported file type {p.suffix!r} (use {', '.join(SUPPORTED_SUFFIXES)})")


def concat_stacks(stacks: list[FrameStack], frame_interval_s: float | None = None) -> FrameStack:
    """Join stacks in time: by their absolute start times when all have one, else one after another."""
    if not stacks:
        raise UserError("no frames to read")
    shapes = {s.frame_shape for s in stacks}
    if len(shapes) > 1:
        by_shape = {}
        for s in stacks:
            by_shape.setdefault(s.frame_shape, Path(s.sources[0]).name)
        desc = "; ".join(f"{name} is {sh[0]}×{sh[1]}" for sh, name in by_shape.items())
        raise UserError(f"frames of different shapes cannot go in one session: {desc}")
    if len(stacks) == 1:
        return stacks[0]
    how = ""
    times = None
    if all(s.start_epoch_s is not None for s in stacks):
        stacks = sorted(stacks, key=lambda s: s.start_epoch_s)
        t0 = stacks[0].start_epoch_s
        times = np.concatenate([s.times_s + (s.start_epoch_s - t0) for s in stacks])
        how = "absolute start time of each file"
        if np.unique(times).size < times.size:  # e.g. Velox stamps in whole seconds, several files a second
            times = None
            how = "files one after another in time order (start times too coarse to tell frames apart)"
    if times is None:
        parts, t = [], 0.0
        for s in stacks:
            parts.append(s.times_s + t)
            step = frame_interval_s or s.meta.get("frame_time_s") or 1.0
            t = parts[-1][-1] + step
        times = np.concatenate(parts)
        if not how:
            how = "files one after another (not every file has a start time)"
    order = np.argsort(times, kind="stable")
    frames = np.concatenate([s.frames for s in stacks])[order]
    sources = [src for s in stacks for src in s.sources]
    meta = dict(stacks[0].meta)
    meta.pop("frame_datetime_s", None)
    meta["time_source"] = f"{stacks[0].meta.get('time_source', '')}; files joined by {how}"
    dtypes = {s.frames.dtype for s in stacks}
    if len(dtypes) > 1:
        frames = frames.astype(np.result_type(*dtypes))
    return FrameStack(frames, (times - times[order][0])[order], stacks[0].pixel_size_m, stacks[0].start_epoch_s,
                      meta, [sources[i] for i in order])


def read_frames(path, *, detector: str | None = None, frame_interval_s: float | None = None) -> FrameStack:
    """Read frames from an image file, a folder of image files, or a list of files.

    Parameters
    ----------
    path : str, Path or list of them
        A Velox ``.emd``, ``.dm3``/``.dm4`` or ``.tif``/``.tiff`` file, a folder
        (every supported file in it, joined in time) or a list of files.
    detector : str, optional
        Velox detector to take (default: HAADF if present, else the longest series).
    frame_interval_s : float, optional
        Frame spacing to use when a file has no time calibration (default 1 s).

    Returns
    -------
    FrameStack

    Example
    -------
    >>> st = read_frames("EMDReader_SpectrumImage_Si.emd")   # doctest: +SKIP
    >>> st.frames.shape, st.pixel_size_m, st.times_s[1]      # doctest: +SKIP
    ((5, 16, 16), 5.302e-09, 0.0416)
    """
    if isinstance(path, (list, tuple)):
        files: Iterable[Path] = [Path(p) for p in path]
        if len(files) == 1 and files[0].is_dir():
            return read_frames(files[0], detector=detector, frame_interval_s=frame_interval_s)
        stacks = []
        for f in files:
            if f.is_dir():
                stacks.append(read_frames(f, detector=detector, frame_interval_s=frame_interval_s))
            else:
                stacks.append(read_file(f, detector=detector, frame_interval_s=frame_interval_s))
        return concat_stacks(stacks, frame_interval_s)
    p = Path(path)
    if p.is_dir():
        files = sorted((f for f in p.iterdir() if f.is_file() and is_image_file(f)), key=_natural_key)
        if not files:
            raise UserError(f"{p}: no image files ({', '.join(SUPPORTED_SUFFIXES)}) in this folder")
        return concat_stacks([read_file(f, detector=detector, frame_interval_s=frame_interval_s) for f in files],
                             frame_interval_s)
    return read_file(p, detector=detector, frame_interval_s=frame_interval_s)
