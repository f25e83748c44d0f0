"""The records that flow from the engine to its sinks (session file, GUI, live analysis).

All times are seconds on the experiment :class:`~insitu.core.clock.Clock`
(s since ``/entry/start_time``); all quantities in SI units except the electron
dose, which microscopy quotes in e/Å².
"""
from __future__ import annotations

from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class EventRecord:
    """Something the operator must know about -> a row of ``/entry/events``.

    ``kind`` is a short machine-readable word: ``start``, ``step``,
    ``suspender``, ``compliance``, ``short``, ``stall``, ``beam``, ``abort``,
    ``fault``, ``reconnect``, ``end``, ``info``.
    """

    time_s: float
    kind: str
    message: str


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
    """Protocol progress for displays (not written to the file)."""

    time_s: float
    step_index: int
    n_steps: int
    step_label: str
    elapsed_s: float
    remaining_s: float
    paused: bool = False
