"""Readable numbers for people: SI prefixes for lengths and currents, 1-2-5 lengths, durations.

Pure functions, used by the GUI and the analysis report alike.
"""
from __future__ import annotations

import math

_LENGTH = ((1.0, "m"), (1e-3, "mm"), (1e-6, "µm"), (1e-9, "nm"), (1e-12, "pm"))
_CURRENT = ((1.0, "A"), (1e-3, "mA"), (1e-6, "µA"), (1e-9, "nA"), (1e-12, "pA"), (1e-15, "fA"))


def _scale(value: float, table) -> tuple[float, str]:
    """The largest (scale, unit) of ``table`` that ``|value|`` reaches (the smallest for tiny values)."""
    a = abs(value)
    for scale, unit in table:
        if a >= scale * 0.9995:
            return scale, unit
    return table[-1]


def _prefixed(value: float, table, digits: int = 3) -> str:
    if not math.isfinite(value):
        return "—"
    if value == 0:
        return f"0 {table[0][1]}"
    scale, unit = _scale(value, table)
    return f"{value / scale:.{digits}g} {unit}"


def current_scale(i_max_A: float) -> tuple[float, str]:
    """(scale, unit) for a current axis whose largest magnitude is ``i_max_A``.

    Examples
    --------
    >>> current_scale(3.4e-7)
    (1e-09, 'nA')
    >>> current_scale(0.0)
    (1e-09, 'nA')
    """
    if not (math.isfinite(i_max_A) and i_max_A != 0):
        return 1e-9, "nA"
    return _scale(i_max_A, _CURRENT)


def format_length(m: float) -> str:
    """A length in metres with a readable prefix.

    Examples
    --------
    >>> format_length(2e-7)
    '200 nm'
    >>> format_length(1.5e-6)
    '1.5 µm'
    """
    return _prefixed(m, _LENGTH)


def format_current(i_A: float) -> str:
    """A current in amperes with a readable prefix.

    Examples
    --------
    >>> format_current(-3.4e-7)
    '-340 nA'
    """
    return _prefixed(i_A, _CURRENT)


def nice_length(max_len: float) -> float:
    """Largest 1-2-5 × 10ⁿ value not above ``max_len``.

    Examples
    --------
    >>> nice_length(730e-9)
    5e-07
    >>> nice_length(1.9)
    1.0
    """
    if not (max_len > 0 and math.isfinite(max_len)):
        return float("nan")
    e = math.floor(math.log10(max_len))
    for m in (5, 2, 1):
        v = float(f"{m * 10.0 ** e:.3g}")
        if v <= max_len * (1 + 1e-9):
            return v
    return float(f"{10.0 ** e:.3g}")


def format_duration(s: float) -> str:
    """Seconds as ``h:mm:ss`` (or ``m:ss`` under an hour).

    Examples
    --------
    >>> format_duration(3725.2)
    '1:02:05'
    >>> format_duration(65)
    '1:05'
    """
    if not math.isfinite(s):
        return "—"
    s = int(round(max(s, 0)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and the noun, singular or plural as English wants it.

    Examples
    --------
    >>> count(1, "frame"), count(141, "frame"), count(0, "seed")
    ('1 frame', '141 frames', '0 seeds')
    """
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"
