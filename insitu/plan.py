"""The plan: what to do, as a stream of messages; the engine decides how and when.

Bluesky style: :func:`plan` turns a protocol into a generator of small
messages. Each :class:`Setpoint` is one sample tick (one ``sample_interval``
of protocol time) at a level; :class:`StepStart` marks a new (flat) step;
:class:`Beam` and :class:`Acquire` are instantaneous / frame-counted actions.
The engine pulls the next message only when it may advance (not while paused,
holding on compliance or waiting for frames), so pausing is simply not
pulling.

"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Union

from insitu.protocol import FlatStep, Protocol, flatten
from insitu.safety import ramp_levels


@dataclass(frozen=True)
class StepStart:
    step: FlatStep


@dataclass(frozen=True)
class Setpoint:
    """One sample tick at ``level_V`` (V)."""

    level_V: float


@dataclass(frozen=True)
class Beam:
    blank: bool


@dataclass(frozen=True)
class Acquire:
    frames: int


Msg = Union[StepStart, Setpoint, Beam, Acquire]


def plan_steps(steps: list[FlatStep], sample_interval_s: float) -> Iterator[Msg]:
    """Messages for a list of flat steps (see :func:`insitu.protocol.flatten`)."""
    for st in steps:
        yield StepStart(st)
        if st.kind == "ramp":
            for v in ramp_levels(st.v_start_V, st.v_end_V, st.rate_V_s * sample_interval_s):
                yield Setpoint(v)
        elif st.kind == "hold":
            for _ in range(st.n_ticks):
                yield Setpoint(st.v_end_V)
        elif st.kind == "beam":
            yield Beam(bool(st.blank))
        elif st.kind == "acquire":
            yield Acquire(st.frames)


def plan(protocol: Protocol) -> Iterator[Msg]:
    """The whole protocol as messages, ending with the ramp back to 0 V.

    Examples
    --------
    >>> from insitu.protocol import parse_protocol
    >>> p = parse_protocol('''
    ... limits: {max_voltage: 5, compliance_current: 1.0e-6, max_slew_rate: 1}
    ... sample_interval: 0.5
    ... steps: [{ramp: {to: 1, rate: 0.5}}, {hold: {duration: 1}}]''')
    >>> [round(m.level_V, 3) for m in plan(p) if isinstance(m, Setpoint)]
    [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 0.667, 0.333, 0.0]
    """
    return plan_steps(flatten(protocol), protocol.sample_interval)
