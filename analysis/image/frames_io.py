"""Frames for the analysis, one at a time, from a folder of image files or a single file.

A folder holds TIFF, Velox ``.emd`` or DigitalMicrograph ``.dm3``/``.dm4`` files
(any of them may be a stack), read in natural name order (``f2`` before
``f10``) with RosettaSciIO through :mod:`insitu.core.readers`. An optional
``frames.csv`` with columns ``index,time_s`` gives the frame times (s), indexed
over the whole series; without it, the files' own time calibration is used,
else 1 s per frame.

Only one file is in memory at a time. Problems raise :class:`~insitu.core.errors.UserError`
naming the file: unreadable file, frames of a different shape, empty folder,
a bad ``frames.csv``.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from insitu.core.errors import UserError

__all__ = ["FrameFolder", "open_frames", "read_times_csv"]

SUFFIXES = (".tif", ".tiff", ".emd", ".dm3", ".dm4")


def _natural_key(p: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def read_times_csv(path) -> dict[int, float]:
    """``index -> time_s`` from a ``frames.csv`` (header ``index,time_s``).

    Example
    -------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "frames.csv")
    >>> _ = open(p, "w").write("index,time_s\\n0,0.0\\n1,2.5\\n")
    >>> read_times_csv(p)
    {0: 0.0, 1: 2.5}
    """
    path = Path(path)
    out: dict[int, float] = {}
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            cols = [c.strip() for c in (reader.fieldnames or [])]
            if "index" not in cols or "time_s" not in cols:
                raise UserError(f"{path}: needs columns 'index,time_s', found {','.join(cols) or 'none'}")
            for line, row in enumerate(reader, start=2):
                row = {k.strip(): v for k, v in row.items() if k}
                try:
                    out[int(row["index"])] = float(row["time_s"])
                except (TypeError, ValueError):
                    raise UserError(f"{path}: line {line}: index and time_s must be numbers") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror}") from None
    return out


@dataclass
class FrameFolder:
    """A series of frames in image files; iterate with :meth:`iter_frames`.

    Attributes: ``files`` (in order), ``times_csv`` (index -> s, possibly empty),
    ``pixel_size_m`` (from the first file, NaN if unknown), ``frame_shape`` (after the first
    frame), ``n_read`` (frames delivered so far).
    """

    files: list[Path]
    times_csv: dict[int, float] = field(default_factory=dict)
    pixel_size_m: float = float("nan")
    frame_shape: tuple | None = None
    n_read: int = 0
    source: str = ""

    def iter_frames(self) -> Iterator[tuple[int, float, np.ndarray]]:
        """Yield ``(index, time_s, frame)``; frames of one file are read together."""
        from insitu.core.readers import read_file

        next_start = 0.0
        index = 0
        for f in self.files:
            try:
                st = read_file(f)
            except UserError:
                raise
            except Exception as exc:  # a reader crashed on a damaged file
                raise UserError(f"{f}: cannot read: {exc}") from None
            frames = np.asarray(st.frames)
            if frames.ndim == 2:
                frames = frames[None]
            if frames.ndim != 3 or frames.shape[0] == 0:
                raise UserError(f"{f}: no 2-D image frames in this file")
            if self.frame_shape is None:
                self.frame_shape = tuple(frames.shape[1:])
                self.pixel_size_m = float(st.pixel_size_m)
            elif tuple(frames.shape[1:]) != self.frame_shape:
                sh = frames.shape[1:]
                raise UserError(f"{f}: frames are {sh[1]}×{sh[0]} px, the series before it is "
                                f"{self.frame_shape[1]}×{self.frame_shape[0]} px")
            n = frames.shape[0]
            times = np.asarray(st.times_s, float)
            if len(times) != n or not np.all(np.isfinite(times)):
                times = np.arange(n, dtype=float)
            tt = next_start + (times - times[0])
            step = (times[-1] - times[0]) / (n - 1) if n > 1 else float(st.meta.get("frame_time_s") or 1.0)
            next_start = float(tt[-1]) + (step if step > 0 else 1.0)
            for j in range(n):
                if self.times_csv:
                    if index not in self.times_csv:
                        raise UserError(f"{self.source}: no time for frame {index} (from {f.name})")
                    t = self.times_csv[index]
                else:
                    t = float(tt[j])
                self.n_read = index + 1
                yield index, t, frames[j]
                index += 1
        if self.times_csv and max(self.times_csv) >= index:
            raise UserError(f"{self.source}: frames.csv lists frame {max(self.times_csv)} but there are "
                            f"only {index} frames")


def open_frames(path) -> FrameFolder:
    """A :class:`FrameFolder` for a folder of image files or one image file.

    Example
    -------
    >>> ff = open_frames("shared/data/real/test_STEM_image.dm3")   # doctest: +SKIP
    >>> next(ff.iter_frames())[2].shape                             # doctest: +SKIP
    (68, 68)
    """
    p = Path(path)
    if p.is_dir():
        files = sorted((f for f in p.iterdir() if f.is_file() and f.suffix.lower() in SUFFIXES
                        and not f.name.startswith((".", "~"))), key=_natural_key)
        if not files:
            raise UserError(f"{p}: no image files ({', '.join(SUFFIXES)}) in this folder")
        csvp = p / "frames.csv"
        times = read_times_csv(csvp) if csvp.is_file() else {}
        return FrameFolder(files=files, times_csv=times, source=str(csvp))
    if not p.exists():
        raise UserError(f"{p}: no such file or folder")
    if p.suffix.lower() not in SUFFIXES:
        raise UserError(f"{p}: not a session file or an image file ({', '.join(SUFFIXES)})")
    return FrameFolder(files=[p], source=str(p))
