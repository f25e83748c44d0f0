"""Bias logs from other software -> SI arrays on the frames' clock.

Two formats:

* the Protochips (Fusion/Aduro) electrical CSV: columns ``Time, Notes,
  Channel A Current, Channel A Voltage, ...``; the first rows carry the header
  in "Notes" (date, time of day, time/current/voltage units);
* a plain CSV with the header ``time_s,voltage_V,current_A`` (more columns are
  ignored). An optional first line ``# start_time: 2026-03-01T10:00:00+01:00``
  gives its absolute start.

Alignment with the frames uses the absolute timestamps both carry (naive
date/times are local time of this computer), or an explicit offset: the
time of the log's first sample relative to the first frame.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from insitu.core.errors import UserError

_TIME_UNITS = {"milliseconds": 1e-3, "ms": 1e-3, "seconds": 1.0, "s": 1.0, "microseconds": 1e-6}
_CURRENT_UNITS = {"amps": 1.0, "a": 1.0, "milliamps": 1e-3, "ma": 1e-3, "microamps": 1e-6, "ua": 1e-6,
                  "µa": 1e-6, "nanoamps": 1e-9, "na": 1e-9}
_VOLTAGE_UNITS = {"volts": 1.0, "v": 1.0, "millivolts": 1e-3, "mv": 1e-3}


@dataclass
class BiasLog:
    """A bias log in SI units.

    Attributes
    ----------
    time_s : ndarray
        Seconds since the log's first sample (``time_s[0] == 0``).
    voltage_V, current_A : ndarray
    start_epoch_s : float or None
        UNIX time of the first sample, when the file records it.
    meta : dict
        ``format``, ``channel``, ``source``.
    """

    time_s: np.ndarray
    voltage_V: np.ndarray
    current_A: np.ndarray
    start_epoch_s: float | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.time_s)


def _unit(table: dict, text: str, what: str, path: Path) -> float:
    key = text.strip().lower()
    if key not in table:
        raise UserError(f"{path}: unknown {what} unit {text.strip()!r}")
    return table[key]


def _check_times(path: Path, t: np.ndarray, lines: list[int], column: str) -> None:
    """UserError unless every time is finite and none goes back (naming the first bad line)."""
    bad = np.flatnonzero(~np.isfinite(t))
    if bad.size:
        raise UserError(f"{path}: line {lines[bad[0]]}: {column} is not a finite number")
    back = np.flatnonzero(np.diff(t) < 0)
    if back.size:
        k = back[0] + 1
        raise UserError(f"{path}: line {lines[k]}: {column} goes backwards ({t[k]:g} after {t[k - 1]:g}); "
                        "times must be in order")


def _read_protochips(path: Path, rows: list[list[str]], channel: str) -> BiasLog:
    header = [h.strip() for h in rows[0]]
    try:
        i_t = header.index("Time")
        i_n = header.index("Notes")
        i_i = header.index(f"Channel {channel} Current")
        i_v = header.index(f"Channel {channel} Voltage")
    except ValueError:
        chans = sorted({m.group(1) for h in header for m in [re.match(r"Channel (\w+) Voltage", h)] if m})
        raise UserError(f"{path}: no channel {channel!r} in this Protochips log (channels: {', '.join(chans)})") \
            from None
    notes: dict[str, str] = {}
    data = []
    lines = []
    for k, r in enumerate(rows[1:], start=2):
        if len(r) < len(header):
            if not any(c.strip() for c in r):
                continue
            raise UserError(f"{path}: line {k}: {len(r)} columns, expected {len(header)}")
        note = r[i_n].strip()
        if note:
            key, _, value = note.partition("=")
            notes[key.strip().lower()] = value.strip()
            continue
        try:
            data.append((float(r[i_t]), float(r[i_v]), float(r[i_i])))
        except ValueError:
            raise UserError(f"{path}: line {k}: not a number in Time/Voltage/Current") from None
        lines.append(k)
    if not data:
        raise UserError(f"{path}: no samples in this Protochips log")
    t_unit = _unit(_TIME_UNITS, notes.get("time units", "Milliseconds"), "time", path)
    i_unit = _unit(_CURRENT_UNITS, notes.get("current units", "Amps"), "current", path)
    v_unit = _unit(_VOLTAGE_UNITS, notes.get("voltage units", "Volts"), "voltage", path)
    arr = np.asarray(data, dtype=float)
    _check_times(path, arr[:, 0], lines, "Time")
    t = arr[:, 0] * t_unit
    start = None
    date = notes.get("date (yyyy.mm.dd)")
    tod = notes.get("time (hh:mm:ss.ms)")
    if date and tod:
        try:
            start = datetime.strptime(f"{date} {tod}", "%Y.%m.%d %H:%M:%S.%f").timestamp() + t[0]
        except ValueError:
            start = None
    return BiasLog(t - t[0], arr[:, 1] * v_unit, arr[:, 2] * i_unit, start,
                   {"format": "Protochips electrical CSV", "channel": channel, "source": str(path)})


def _read_plain(path: Path, rows: list[list[str]], start_line: str | None) -> BiasLog:
    header = [h.strip() for h in rows[0]]
    idx = {name: header.index(name) for name in ("time_s", "voltage_V", "current_A") if name in header}
    if len(idx) < 3:
        missing = [n for n in ("time_s", "voltage_V", "current_A") if n not in idx]
        raise UserError(f"{path}: missing column(s) {', '.join(missing)} (header: {','.join(header)})")
    data = []
    lines = []
    for k, r in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in r):
            continue
        try:
            data.append(tuple(float(r[idx[n]]) for n in ("time_s", "voltage_V", "current_A")))
        except (ValueError, IndexError):
            raise UserError(f"{path}: line {k}: expected numbers in time_s, voltage_V, current_A") from None
        lines.append(k)
    if not data:
        raise UserError(f"{path}: no samples")
    arr = np.asarray(data, dtype=float)
    _check_times(path, arr[:, 0], lines, "time_s")
    start = None
    if start_line:
        try:
            start = datetime.fromisoformat(start_line).timestamp() + arr[0, 0]
        except ValueError:
            raise UserError(f"{path}: start_time {start_line!r} is not ISO 8601") from None
    return BiasLog(arr[:, 0] - arr[0, 0], arr[:, 1], arr[:, 2], start,
                   {"format": "plain CSV", "channel": "", "source": str(path)})


def read_bias_log(path, channel: str = "A") -> BiasLog:
    """Read a Protochips electrical CSV or a plain ``time_s,voltage_V,current_A`` CSV.

    Parameters
    ----------
    path : str or Path
    channel : str
        Protochips channel (``A`` or ``B``).

    Returns
    -------
    BiasLog
        Times from the first sample, volts and amps.

    Example
    -------
    >>> log = read_bias_log("protochips_electrical.csv")   # doctest: +SKIP
    >>> len(log), log.voltage_V.max()                      # doctest: +SKIP
    (154, 40.09...)
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        raise UserError(f"{p}: cannot read bias log: {exc.strerror or exc}") from None
    lines = text.splitlines()
    start_line = None
    while lines and lines[0].lstrip().startswith("#"):
        m = re.match(r"#\s*start_time\s*[:=]\s*(\S+)", lines[0].strip())
        if m:
            start_line = m.group(1)
        lines.pop(0)
    rows = list(csv.reader(lines, skipinitialspace=True))
    if not rows:
        raise UserError(f"{p}: empty bias log")
    header = [h.strip() for h in rows[0]]
    if "Notes" in header and "Time" in header:
        return _read_protochips(p, rows, channel)
    if "time_s" in header:
        return _read_plain(p, rows, start_line)
    raise UserError(f"{p}: not a bias log (expected a Protochips electrical CSV or the header "
                    "time_s,voltage_V,current_A)")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")


def align_bias_log(log: BiasLog, frame_times_s: np.ndarray, frames_start_epoch_s: float | None,
                   offset_s: float | None = None) -> np.ndarray:
    """Times of the log's samples in s since the first frame.

    Parameters
    ----------
    log : BiasLog
    frame_times_s : ndarray
        Frame times in s since the first frame.
    frames_start_epoch_s : float or None
        UNIX time of the first frame.
    offset_s : float, optional
        Time of the log's first sample relative to the first frame; overrides
        the timestamps.

    Raises
    ------
    UserError
        When no offset is given and the timestamps are missing or the two
        records do not overlap in time; the message suggests ``--bias-offset-s``.

    Example
    -------
    >>> log = BiasLog(np.array([0.0, 1.0]), np.zeros(2), np.zeros(2), 1000.0)
    >>> align_bias_log(log, np.array([0.0, 0.5]), 1000.5).tolist()
    [-0.5, 0.5]
    """
    if offset_s is not None:
        return float(offset_s) + log.time_s
    src = log.meta.get("source", "bias log")
    if log.start_epoch_s is None or frames_start_epoch_s is None:
        which = "the bias log" if log.start_epoch_s is None else "the frames"
        raise UserError(f"{src}: {which} carry no absolute time, so the log cannot be aligned; "
                        "give --bias-offset-s S (time of the log's first sample relative to the first frame)")
    t = (log.start_epoch_s - frames_start_epoch_s) + log.time_s
    ft = np.asarray(frame_times_s, float)
    f0, f1 = float(ft.min()), float(ft.max())
    if t[-1] < f0 or t[0] > f1:
        raise UserError(
            f"{src}: the bias log ({_iso(log.start_epoch_s)}, {log.time_s[-1]:.1f} s long) and the frames "
            f"({_iso(frames_start_epoch_s)}, {f1 - f0:.1f} s) do not overlap in time; "
            "give --bias-offset-s S (time of the log's first sample relative to the first frame)")
    return t


def interpolate_at(t_query_s, t_s, values) -> np.ndarray:
    """Linear interpolation of ``values(t_s)`` at ``t_query_s``; NaN outside the logged range.

    Example
    -------
    >>> interpolate_at([0.5, 3.0], [0.0, 1.0, 2.0], [0.0, 2.0, 4.0]).tolist()
    [1.0, nan]
    """
    tq = np.asarray(t_query_s, float)
    t = np.asarray(t_s, float)
    v = np.asarray(values, float)
    if t.size == 0:
        return np.full(tq.shape, np.nan)
    out = np.interp(tq, t, v)
    out[(tq < t[0]) | (tq > t[-1])] = np.nan
    return out
