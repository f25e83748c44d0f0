"""The records that flow from the engine to its sinks (session file, GUI, live analysis).

All times are seconds on the experiment :class:`~insitu.core.clock.Clock`
(s since ``/entry/start_time``); all quantities in SI units except the electron
dose, which microscopy quotes in e/Å².
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np


@dataclass(frozen=True)
class BiasSample:
    """One source-meter reading -> a row of ``/entry/bias``."""

    time_s: float
    setpoint_V: float
    voltage_V: float
    current_A: float
    compliance: bool


@dataclass(frozen=True)
class BeamSample:
    """A beam state change (or periodic state) -> a row of ``/entry/beam``."""

    time_s: float
    blanked: bool
    dose_rate: float  # e/Å²/s on the scanned field (0 when blanked)


class _Word(str, Enum):
    """A str enum that prints as its value (``f"{EngineState.DONE}"`` is ``done``)."""

    __str__ = str.__str__
    __format__ = str.__format__


class EngineState(_Word):
    """What the engine (or the window around it) is doing; a ``str``: ``EngineState.RUNNING == "running"``."""

    IDLE = "idle"
    RUNNING = "running"
    PAUSED = "paused"
    HELD = "held"            # an on_seed: hold rule stopped the protocol clock; resume() continues
    STOPPING = "stopping"
    DONE = "done"


class EventKind(_Word):
    """The machine-readable words of :attr:`EventRecord.kind` (a ``str``: ``EventKind.STEP == "step"``)."""

    START = "start"
    STEP = "step"
    SUSPENDER = "suspender"
    COMPLIANCE = "compliance"
    SHORT = "short"
    STALL = "stall"
    BEAM = "beam"
    ABORT = "abort"
    FAULT = "fault"
    RECONNECT = "reconnect"
    FRAMES = "frames"
    END = "end"
    INFO = "info"
    SEED = "seed"            # a confirmed seed (from a SeedRecord)
    TRIGGER = "trigger"      # a closed-loop rule fired (until:, on_seed:)


#: the text of a step event in ``/entry/events``: ``"[k/n] label"`` (k counts from 1)
_STEP_TEXT = re.compile(r"^\[(\d+)/(\d+)\]\s*(.*)$", re.S)


@dataclass(frozen=True)
class EventRecord:
    """Something the operator must know about -> a row of ``/entry/events``.

    ``kind`` is a short machine-readable word (:class:`EventKind`): ``start``,
    ``step``, ``suspender``, ``compliance``, ``short``, ``stall``, ``beam``,
    ``abort``, ``fault``, ``reconnect``, ``frames``, ``end``, ``info``, ``seed``
    (a confirmed seed, from a :class:`SeedRecord`), ``trigger`` (a closed-loop rule fired).

    A ``step`` event also carries the step as fields: ``step_index`` (from 0),
    ``n_steps``, ``step_label`` and ``step_kind`` (``ramp``, ``hold``, ``beam``,
    ``acquire``; empty when not known, e.g. replayed from a file). Only
    ``time_s``, ``kind`` and ``message`` go to the file; build step events with
    :meth:`step` and read recorded ones back with :meth:`from_row`.

    Examples
    --------
    >>> ev = EventRecord.step(12.0, 1, 4, "hold 10 V", "hold")
    >>> ev.message
    '[2/4] hold 10 V'
    >>> back = EventRecord.from_row(12.0, "step", ev.message)
    >>> (back.step_index, back.n_steps, back.step_label)
    (1, 4, 'hold 10 V')
    """

    time_s: float
    kind: str
    message: str
    step_index: int | None = None
    n_steps: int | None = None
    step_label: str = ""
    step_kind: str = ""

    @classmethod
    def step(cls, time_s: float, index: int, n_steps: int, label: str, step_kind: str = "") -> "EventRecord":
        """The event of step ``index`` (from 0) of ``n_steps`` starting at ``time_s``."""
        return cls(time_s, EventKind.STEP.value, f"[{index + 1}/{n_steps}] {label}", int(index), int(n_steps),
                   str(label), str(step_kind))

    @classmethod
    def from_row(cls, time_s: float, kind: str, message: str) -> "EventRecord":
        """An event read back from ``/entry/events``: a step event gets its step fields again."""
        if kind == EventKind.STEP:
            m = _STEP_TEXT.match(message)
            if m:
                return cls(time_s, kind, message, int(m.group(1)) - 1, int(m.group(2)), m.group(3))
        return cls(time_s, kind, message)


@dataclass(frozen=True)
class FrameRecord:
    """One image with the experiment state at its time -> ``/entry/frames``."""

    time_s: float
    data: np.ndarray
    bias_V: float
    current_A: float
    blanked: bool
    dose: float  # e/Å², cumulative at this frame
    pixel_size_m: float
    drift_x: float = float("nan")  # px
    drift_y: float = float("nan")  # px
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProgressRecord:
    """Protocol progress for displays (not written to the file).

    ``paused`` is True while the protocol clock stands still (operator pause,
    frame stall); ``state`` is the engine's :class:`EngineState`; ``step_kind``
    as in :class:`EventRecord`; ``frames_dropped`` counts frames lost on the way
    to the file so far (the frame source's queue or a recorder fell behind).
    """

    time_s: float
    step_index: int
    n_steps: int
    step_label: str
    elapsed_s: float
    remaining_s: float
    paused: bool = False
    state: EngineState = EngineState.RUNNING
    step_kind: str = ""
    frames_dropped: int = 0


@dataclass(frozen=True)
class SeedRecord:
    """A seed the live detector confirmed -> a row of ``/entry/events`` with kind ``seed``.

    ``time_s`` is when the engine received it (clock s), ``confirm_time_s`` the time of the
    frame that confirmed it; frames count the recorded frames from 0; positions are in the
    first recorded frame's pixels (centres at integers).

    Example
    -------
    >>> SeedRecord(130.2, 3, 101.5, 40.25, 12, 14, 125.0).message()
    'seed 3 at (101.5, 40.2) px: first frame 12, confirmed at frame 14 (t = 125 s)'
    """

    time_s: float
    seed_id: int
    x_px: float
    y_px: float
    first_frame: int
    confirm_frame: int
    confirm_time_s: float

    def message(self) -> str:
        """The event text (parsed back by :func:`parse_seed_message`)."""
        return (f"seed {self.seed_id} at ({self.x_px:.1f}, {self.y_px:.1f}) px: first frame {self.first_frame}, "
                f"confirmed at frame {self.confirm_frame} (t = {self.confirm_time_s:.6g} s)")


_SEED_MESSAGE = (r"seed (?P<seed_id>\d+) at \((?P<x_px>[-+0-9.eEinfa]+), (?P<y_px>[-+0-9.eEinfa]+)\) px: "
                 r"first frame (?P<first_frame>-?\d+), confirmed at frame (?P<confirm_frame>-?\d+) "
                 r"\(t = (?P<confirm_time_s>[-+0-9.eEinfa]+) s\)")


def parse_seed_message(time_s: float, message: str) -> SeedRecord | None:
    """The :class:`SeedRecord` a ``seed`` event's message describes (None if it is not one).

    Example
    -------
    >>> r = SeedRecord(130.2, 3, 101.5, 40.25, 12, 14, 125.0)
    >>> parse_seed_message(130.2, r.message()).confirm_frame
    14
    """
    import re

    m = re.fullmatch(_SEED_MESSAGE, message)
    if m is None:
        return None
    g = m.groupdict()
    return SeedRecord(float(time_s), int(g["seed_id"]), float(g["x_px"]), float(g["y_px"]),
                      int(g["first_frame"]), int(g["confirm_frame"]), float(g["confirm_time_s"]))
