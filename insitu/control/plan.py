"""The plan: what the protocol asks for at each moment; the engine decides how and when.

The plan is the list of flat steps (:func:`insitu.control.protocol.flatten`, ``repeat``
unrolled, ending with the ramp back to 0 V) plus two pure functions of the
step's own protocol time ``tau`` (s since the step began, stopped while the
engine holds): :func:`level_at`, the staircase setpoint, and :func:`is_done`.
The engine owns timing, safety and instruments; it never computes a level
itself (Bluesky style: plan separate from engine).

A ramp of ``n`` steps makes one step every ``sample_interval``: at
``tau = k·dt`` the level is ``v_start + (v_end - v_start)·k/n``.
"""
from __future__ import annotations

import math
from dataclasses import replace

from insitu.control.protocol import FlatStep, Protocol, flatten
from insitu.control.safety import n_ramp_steps

_TICK_EPS = 1e-6  # fraction of a tick: absorbs float rounding of tau


def plan(protocol: Protocol) -> list[FlatStep]:
    """The flat steps the engine executes, ending at 0 V.

    Examples
    --------
    >>> from insitu.control.protocol import parse_protocol
    >>> p = parse_protocol('''
    ... limits: {max_voltage: 5, compliance_current: 1.0e-6, max_slew_rate: 1}
    ... sample_interval: 0.5
    ... steps: [{ramp: {to: 1, rate: 0.5}}, {hold: {duration: 1}}]''')
    >>> [(s.kind, s.v_end_V, s.n_ticks) for s in plan(p)]
    [('ramp', 1.0, 4), ('hold', 1.0, 2), ('ramp', 0.0, 3)]
    """
    return flatten(protocol)


def level_at(step: FlatStep, tau_s: float, dt_s: float) -> float:
    """Setpoint (V) of a ramp or hold step at its protocol time ``tau_s``.

    Examples
    --------
    >>> from insitu.control.protocol import FlatStep
    >>> st = FlatStep(0, "ramp", "ramp", "steps[0]", v_start_V=0.0, v_end_V=1.0, rate_V_s=0.5, n_ticks=4)
    >>> [level_at(st, t, 0.5) for t in (0.0, 0.5, 1.0, 1.9, 5.0)]
    [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    if step.kind != "ramp" or step.n_ticks == 0:
        return step.v_end_V
    k = min(step.n_ticks, int(math.floor(tau_s / dt_s + _TICK_EPS)))
    if k >= step.n_ticks:
        return step.v_end_V
    return step.v_start_V + (step.v_end_V - step.v_start_V) * k / step.n_ticks


def is_done(step: FlatStep, tau_s: float, dt_s: float) -> bool:
    """True once a ramp/hold step has run its ``n_ticks`` sample intervals.

    Examples
    --------
    >>> from insitu.control.protocol import FlatStep
    >>> st = FlatStep(0, "hold", "hold", "steps[0]", n_ticks=3)
    >>> is_done(st, 0.4, 0.2), is_done(st, 0.6, 0.2)
    (False, True)
    """
    return tau_s >= (step.n_ticks - _TICK_EPS) * dt_s


def rebase(step: FlatStep, level_V: float, dt_s: float) -> FlatStep:
    """The ramp or hold ``step`` started from ``level_V`` instead of its planned start.

    After a step ended early (an ``until`` condition) the level is not where the
    protocol planned it: a hold then holds the present level, and a ramp goes to
    its target from there at its own rate (its ``n_ticks`` recounted).

    Examples
    --------
    >>> from insitu.control.protocol import FlatStep
    >>> ramp = FlatStep(2, "ramp", "ramp", "steps[2]", v_start_V=10.0, v_end_V=0.0, rate_V_s=0.5, n_ticks=40)
    >>> r = rebase(ramp, 4.0, 0.5)
    >>> r.v_start_V, r.n_ticks, r.duration_s
    (4.0, 16, 8.0)
    >>> hold = FlatStep(3, "hold", "hold", "steps[3]", v_start_V=10.0, v_end_V=10.0, n_ticks=5)
    >>> rebase(hold, 4.0, 0.5).v_end_V
    4.0
    """
    if step.kind not in ("ramp", "hold") or step.v_start_V == level_V:
        return step
    if step.kind == "hold":
        return replace(step, v_start_V=level_V, v_end_V=level_V)
    n = n_ramp_steps(step.v_end_V - level_V, step.rate_V_s * dt_s)
    return replace(step, v_start_V=level_V, n_ticks=n, duration_s=n * dt_s)
