"""Small interfaces every instrument driver implements (``typing.Protocol``).

Real drivers (Keithley over VISA, folder watch, replay) and mocks (pure Python,
virtual specimen) satisfy the same protocols, so the engine never knows which
it talks to.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from insitu.core.clock import Clock


class Measurement(NamedTuple):
    """One source-meter reading, all SI.

    ``time_s`` is on the experiment clock; ``compliance_hit`` is True when the
    instrument reports that the current limit is active.
    """

    time_s: float
    voltage_V: float
    current_A: float
    compliance_hit: bool


class SourceState(NamedTuple):
    """The source as found (before anything was changed)."""

    output_on: bool
    level_V: float
    current_limit_A: float


@runtime_checkable
class SourceMeter(Protocol):
    """A voltage source with a current limit that measures current."""

    idn: str

    def configure(self, compliance_current: float, voltage_range: float, nplc: float = 1.0) -> None:
        """Set the current limit (A), source range (V) and integration time; read back and check errors."""

    def set_voltage(self, v: float) -> None:
        """Set the source level in V (refused outside ±voltage_range)."""

    def measure(self) -> Measurement:
        """Read voltage and current together."""

    @property
    def output(self) -> bool:
        """True when the output is on."""

    @output.setter
    def output(self, on: bool) -> None: ...

    def read_state(self) -> SourceState:
        """Output, level and current limit as the instrument holds them now."""

    def close(self) -> None:
        """Release the connection (never changes the output)."""


@runtime_checkable
class BeamBlanker(Protocol):
    """Blanks and unblanks the electron beam."""

    def blank(self) -> None: ...

    def unblank(self) -> None: ...

    def is_blanked(self) -> bool: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Frame:
    """One image from a frame source.

    ``time_s`` is on the experiment clock (or the file's own clock for
    imported data); ``meta`` holds at least ``pixel_size_m`` where known.
    """

    index: int
    time_s: float
    data: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class FrameSource(Protocol):
    """Delivers frames as they become available.

    ``poll()`` never blocks: it returns the frames that arrived since the
    last call (possibly none). The in-tree sources keep that promise by doing
    their reading, decoding or rendering in a background thread
    (:class:`~insitu.drivers.producer.BackgroundProducer`); ``poll()`` only
    drains its queue. ``start()``/``stop()`` bracket acquisition; ``stop()``
    never waits long for a stuck reader and returns False when it left one
    behind. Optional: ``dropped`` (frames lost because the queue was full),
    ``period_s`` (typical frame period, s).
    """

    def start(self) -> None: ...

    def poll(self) -> list[Frame]: ...

    def stop(self) -> bool | None: ...


@dataclass
class Instruments:
    """What the engine drives, plus the clock they share."""

    source_meter: SourceMeter
    blanker: BeamBlanker | None
    frames: FrameSource | None
    clock: Clock
    probe_current_A: float = 5e-11
    #: reopen the source-meter after a lost connection (None: cannot)
    reconnect: Any = None
    #: the virtual specimen behind mock instruments (ground truth), if any
    specimen: Any = None
    extra: dict = field(default_factory=dict)

    def close(self) -> None:
        """Close every connection; never changes the source output."""
        for part in (self.frames, self.blanker, self.source_meter):
            if part is None:
                continue
            try:
                if part is self.frames:
                    part.stop()
                else:
                    part.close()
            except Exception:  # closing must not mask the real outcome
                pass
