"""Safety interlocks: setpoint limits, the slew guard, and the suspender checks.

Pure logic, no I/O: the engine asks these objects what it may do and acts.

* :class:`SlewGuard` clamps every new level so that (a) no single step is
  larger than one second of ``max_slew_rate`` and (b) over ANY 2-s window the
  level changes by at most ``2 s × max_slew_rate`` — judged with the worst
  case of when each command reached the instrument (a command counts as
  possibly still in effect until the engine got the next reply back).
* :func:`check_setpoint` refuses a level beyond ``limits.max_voltage``.
* :func:`check_measurement` turns a reading into a suspender verdict:
  ``short`` (|I| ≥ short_current, or compliance with ``on_compliance: abort``),
  ``compliance`` (hold), ``readback`` (the instrument sources more than the
  limit allows: a fault).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from insitu.core.errors import InstrumentError

#: relative tolerance for floating-point comparisons against limits
_EPS = 1e-9


class LimitBreach(InstrumentError):
    """A setpoint or a reading beyond the protocol limits (the engine ramps down and stops)."""


def check_setpoint(level_V: float, max_voltage_V: float) -> float:
    """Return ``level_V`` if ``|level_V| ≤ max_voltage_V``; raise :class:`LimitBreach` otherwise.

    Examples
    --------
    >>> check_setpoint(5.0, 17.5)
    5.0
    >>> check_setpoint(18.0, 17.5)
    Traceback (most recent call last):
    ...
    insitu.control.safety.LimitBreach: setpoint 18 V beyond the limit ±17.5 V: refused
    """
    if not math.isfinite(level_V) or abs(level_V) > max_voltage_V * (1 + _EPS):
        raise LimitBreach(f"setpoint {level_V:g} V beyond the limit ±{max_voltage_V:g} V: refused")
    return float(level_V)


class SlewGuard:
    """Clamp levels to the slew limits, with the worst-case timing of each command.

    Parameters
    ----------
    max_slew_V_s : float
        Maximum slew rate (V/s).
    level_V : float
        Level in effect now (e.g. as found on the instrument).
    window_s : float
        Averaging window of the slew limit (2 s).
    step_s : float
        A single step may be at most ``max_slew × step_s`` (1 s).

    Notes
    -----
    Call :meth:`allowed` with ``t_before`` = the clock time just BEFORE the
    command is sent (the earliest the instrument can apply it), then
    :meth:`commit` with ``t_after`` = a clock time after a reply that
    followed the command (the latest it was applied). Earlier commands count
    as possibly in effect until their ``t_after``; the new level is checked
    against every level that could be in effect anywhere in
    ``[t_before - window_s, t_before]``.

    Examples
    --------
    >>> g = SlewGuard(0.5)
    >>> round(g.allowed(2.0, t_before=0.0), 3)   # at most one second of slew in one step
    0.5
    >>> g.commit(0.5, t_after=0.01)
    >>> round(g.allowed(2.0, t_before=1.0), 3)   # 2-s window: 1.0 V above the level at t <= -1 s
    1.0
    """

    #: headroom kept below each bound, as a fraction of it, plus an absolute part (V): it absorbs the
    #: rounding of levels on the wire (7 significant digits) and in the instrument
    HEADROOM = 1e-4
    HEADROOM_V = 1e-6

    def __init__(self, max_slew_V_s: float, level_V: float = 0.0, *, window_s: float = 2.0, step_s: float = 1.0):
        if not max_slew_V_s > 0:
            raise ValueError("max_slew_V_s must be > 0")
        self.max_slew = float(max_slew_V_s)
        self.window_s = float(window_s)
        self.step_s = float(step_s)
        self._w = self.max_slew * self.window_s * (1 - self.HEADROOM) - self.HEADROOM_V
        self._s = self.max_slew * self.step_s * (1 - self.HEADROOM) - self.HEADROOM_V
        self._hist: deque[tuple[float, float]] = deque([(-math.inf, float(level_V))])

    @property
    def level(self) -> float:
        """The last committed level (V)."""
        return self._hist[-1][1]

    def reset(self, level_V: float) -> None:
        """Forget the history (e.g. after the output was switched off and set to ``level_V``)."""
        self._hist = deque([(-math.inf, float(level_V))])

    def _references(self, t_before: float) -> list[float]:
        start = t_before - self.window_s
        # drop entries that can no longer be in effect anywhere in the window
        while len(self._hist) > 1 and self._hist[1][0] <= start:
            self._hist.popleft()
        return [v for _, v in self._hist]

    def bounds(self, t_before: float) -> tuple[float, float]:
        """(lowest, highest) level allowed for a command sent at ``t_before``."""
        refs = self._references(t_before)
        w, s = self._w, self._s
        lo = max(v - w for v in refs)
        hi = min(v + w for v in refs)
        lo = max(lo, self.level - s)
        hi = min(hi, self.level + s)
        return lo, hi

    def allowed(self, target_V: float, t_before: float) -> float:
        """The level nearest ``target_V`` that may be commanded at ``t_before``."""
        lo, hi = self.bounds(t_before)
        return min(max(float(target_V), lo), hi)

    def commit(self, level_V: float, t_after: float) -> None:
        """Record that ``level_V`` was commanded and was surely applied by ``t_after``."""
        if level_V != self.level:
            self._hist.append((float(t_after), float(level_V)))


def n_ramp_steps(delta_V: float, step_V: float) -> int:
    """Number of equal steps of at most ``step_V`` that cover ``delta_V`` (0 for no change).

    Examples
    --------
    >>> n_ramp_steps(1.0, 0.3), n_ramp_steps(-0.9, 0.3), n_ramp_steps(0.0, 0.3)
    (4, 3, 0)
    """
    if delta_V == 0:
        return 0
    return max(1, int(math.ceil(abs(delta_V) / step_V - 1e-9)))


def ramp_levels(start_V: float, end_V: float, step_V: float) -> list[float]:
    """Equal steps of at most ``step_V`` from ``start_V`` (excluded) to ``end_V`` (included).

    Examples
    --------
    >>> ramp_levels(0.0, 1.0, 0.3)
    [0.25, 0.5, 0.75, 1.0]
    >>> ramp_levels(2.0, 2.0, 0.1)
    []
    """
    d = end_V - start_V
    n = n_ramp_steps(d, step_V)
    if n == 0:
        return []
    return [start_V + d * k / n for k in range(1, n)] + [float(end_V)]


@dataclass(frozen=True)
class Verdict:
    """What a suspender says: ``kind`` in short | compliance | readback, and a message."""

    kind: str
    message: str


def check_measurement(voltage_V: float, current_A: float, compliance_hit: bool, limits,
                      on_compliance: str = "hold", max_voltage_V: float | None = None) -> Verdict | None:
    """Judge one reading against the protocol limits.

    Parameters
    ----------
    voltage_V, current_A : float
        The reading.
    compliance_hit : bool
        The instrument reports that the current limit is active.
    limits : insitu.control.protocol.Limits
    on_compliance : {"hold", "abort"}
    max_voltage_V : float, optional
        Voltage bound for the read-back (default ``limits.max_voltage``; the
        engine passes the level it is ramping down from when a source was
        found above the limit).

    Returns
    -------
    Verdict or None
        ``short`` -> output off now, stop (exit 3); ``compliance`` -> hold the
        level; ``readback`` -> the output is beyond the voltage limit (fault).

    Examples
    --------
    >>> from insitu.control.protocol import Limits
    >>> lim = Limits(max_voltage=17.5, compliance_current=1e-6, max_slew_rate=0.5, short_current=8e-7)
    >>> check_measurement(10.0, 9e-7, False, lim).kind
    'short'
    >>> check_measurement(10.0, 1e-7, False, lim) is None
    True
    """
    if limits.short_current is not None and abs(current_A) >= limits.short_current * (1 - _EPS):
        return Verdict("short", f"|I| = {abs(current_A):.3g} A at or above short_current {limits.short_current:.3g} A")
    if compliance_hit:
        if on_compliance == "abort":
            return Verdict("short", f"current limit {limits.compliance_current:.3g} A reached "
                                    f"(on_compliance: abort) at {voltage_V:.4g} V")
        return Verdict("compliance", f"current limit {limits.compliance_current:.3g} A reached at {voltage_V:.4g} V: "
                                     "holding the level")
    vmax = limits.max_voltage if max_voltage_V is None else max_voltage_V
    if abs(voltage_V) > vmax * 1.02 + 0.05:
        return Verdict("readback", f"read-back {voltage_V:.4g} V beyond the limit ±{vmax:g} V")
    return None
