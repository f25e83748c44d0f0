"""Instruments configuration (TOML), validated on load.

Format (see DESIGN.md)::

    [source_meter]
    driver = "keithley2450"                        # keithley2400 | keithley2450 | mock
    resource = "TCPIP0::192.0.2.10::5025::SOCKET"  # any VISA resource string
    visa_library = "@py"                           # or a path to NI-VISA
    timeout_s = 2.0
    [beam_blanker]
    driver = "mock"
    [frames]
    driver = "folder"                              # folder | mock | replay
    path = "D:/Velox/export"
    [beam]                                         # optional: dose bookkeeping
    probe_current_A = 5.0e-11

Errors name the offending key: ``instruments.toml: source_meter.resource: required for driver 'keithley2450'``.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from insitu.core.errors import UserError
from insitu.core.validation import first_error_line, one_line

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceMeterConfig(_Strict):
    driver: Literal["keithley2400", "keithley2450", "mock"]
    resource: Optional[str] = None
    visa_library: str = "@py"
    timeout_s: float = Field(2.0, gt=0, le=60)
    read_termination: Optional[str] = None
    write_termination: Optional[str] = None
    # mock-only knobs
    resistance_ohm: float = Field(50e6, gt=0)

    @model_validator(mode="after")
    def _resource_needed(self):
        if self.driver != "mock" and not self.resource:
            raise ValueError(f"resource: required for driver '{self.driver}'")
        _check_resource_syntax(self.resource)
        return self


def _check_resource_syntax(resource: Optional[str]) -> None:
    """A VISA resource string must parse (pyvisa's grammar); raises ValueError naming the key."""
    if not resource:
        return
    try:
        from pyvisa import rname
    except ImportError:  # pragma: no cover
        return
    example = "(e.g. TCPIP0::192.0.2.10::5025::SOCKET, GPIB0::24::INSTR)"
    try:
        parsed = rname.parse_resource_name(resource)
    except Exception:
        raise ValueError(f"resource: {resource!r} is not a VISA resource string {example}") from None
    # the grammar takes any text for the numbers; a socket port, a board or a GPIB address must be a number
    for field, lo, hi in _RESOURCE_NUMBERS:
        value = getattr(parsed, field, None)
        if value is None or (field == "board" and value == ""):
            continue
        if not (str(value).isdigit() and lo <= int(value) <= hi):
            raise ValueError(f"resource: {resource!r}: {field.replace('_', ' ')} {value!r} is not a number "
                             f"{lo}..{hi} {example}")


#: numeric fields of a VISA resource string: (attribute of pyvisa's parsed name, lowest, highest)
_RESOURCE_NUMBERS = (("board", 0, 999), ("port", 1, 65535), ("primary_address", 0, 30), ("secondary_address", 0, 31))


class BeamBlankerConfig(_Strict):
    driver: Literal["mock", "keithley_digio", "scpi"] = "mock"
    resource: Optional[str] = None
    visa_library: str = "@py"
    timeout_s: float = Field(2.0, gt=0, le=60)
    line: int = Field(1, ge=1, le=6)          # digital I/O line for keithley_digio
    blank_command: Optional[str] = None       # for driver "scpi"
    unblank_command: Optional[str] = None
    query_command: Optional[str] = None
    active_high: bool = True

    @model_validator(mode="after")
    def _resource_needed(self):
        if self.driver != "mock" and not self.resource:
            raise ValueError(f"resource: required for driver '{self.driver}'")
        if self.driver == "scpi" and not (self.blank_command and self.unblank_command):
            raise ValueError("blank_command/unblank_command: required for driver 'scpi'")
        _check_resource_syntax(self.resource)
        return self

    @field_validator("blank_command", "unblank_command", "query_command")
    @classmethod
    def _one_command(cls, v: Optional[str]) -> Optional[str]:
        """One SCPI command each: ``;`` (a second command), line ends and control characters are refused."""
        if v is None:
            return v
        from insitu.drivers.scpi import check_command

        return check_command(v, what="")


#: seconds between frames when nothing says otherwise: the mock (``run --mock``, ``gui --mock``, ``demo``),
#: ``examples/mock.toml`` and ``validate``'s prediction all use it. One HAADF frame every 25 s is
#: ≈ 140 frames over the 1-h paper protocol, below the protocols' 30-s frame-stall limit.
DEFAULT_FRAME_INTERVAL_S = 25.0


class FramesConfig(_Strict):
    driver: Literal["folder", "mock", "replay"] = "mock"
    path: Optional[str] = None
    pattern: Optional[str] = None
    speed: float = Field(1.0, gt=0)
    settle_s: float = Field(0.5, ge=0)
    rate_hz: float = Field(1.0 / DEFAULT_FRAME_INTERVAL_S, gt=0)  # frames per second (mock)

    @model_validator(mode="after")
    def _path_needed(self):
        if self.driver in ("folder", "replay") and not self.path:
            raise ValueError(f"path: required for driver '{self.driver}'")
        return self


class BeamConfig(_Strict):
    probe_current_A: float = Field(5e-11, ge=0, le=1e-6)


class InstrumentsConfig(_Strict):
    source_meter: SourceMeterConfig
    beam_blanker: BeamBlankerConfig = BeamBlankerConfig()
    frames: FramesConfig = FramesConfig()
    beam: BeamConfig = BeamConfig()

    @model_validator(mode="after")
    def _shared_connection(self):
        """A SCPI blanker on the source-meter's own connection may only drive the digital outputs."""
        bb = self.beam_blanker
        if bb.driver == "scpi" and bb.resource and bb.resource == self.source_meter.resource:
            from insitu.drivers.blanker import check_shared_command

            for key in ("blank_command", "unblank_command", "query_command"):
                if getattr(bb, key):
                    check_shared_command(getattr(bb, key), what=f"beam_blanker.{key}")
        return self

    @property
    def is_mock(self) -> bool:
        return self.source_meter.driver == "mock" and self.beam_blanker.driver == "mock" and self.frames.driver == "mock"


MOCK_TOML = """\
# all instruments simulated by the virtual specimen
[source_meter]
driver = "mock"
[beam_blanker]
driver = "mock"
[frames]
driver = "mock"
"""


def mock_toml(frame_interval_s: float = DEFAULT_FRAME_INTERVAL_S) -> str:
    """The mock instruments TOML (:data:`MOCK_TOML`) with a frame every ``frame_interval_s`` seconds.

    Examples
    --------
    >>> parse_instruments(mock_toml(5.0)).frames.rate_hz
    0.2
    """
    if not (frame_interval_s > 0 and frame_interval_s < float("inf")):
        raise UserError(f"frame interval: must be a positive number of seconds (got {frame_interval_s!r})")
    return f"{MOCK_TOML}rate_hz = {1.0 / frame_interval_s!r}   # one frame every {frame_interval_s:g} s\n"


def parse_instruments(text: str, source: str = "instruments config") -> InstrumentsConfig:
    """Parse and validate TOML text; raise :class:`UserError` naming the key on failure."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(one_line(f"{source}: not valid TOML: {exc}")) from None
    try:
        return InstrumentsConfig.model_validate(raw)
    except ValidationError as exc:
        # a check of a whole section names its key first ("source_meter: resource: ..."): join the two
        line = re.sub(r"^(\w+): (\w+): ", r"\1.\2: ", first_error_line(exc))
        raise UserError(one_line(f"{source}: {line}")) from None


def load_instruments(path: str | Path) -> tuple[InstrumentsConfig, str]:
    """Read an instruments TOML file; returns (config, original text)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{p}: not a text file (byte {exc.object[exc.start]:#04x} at offset {exc.start} is not "
                        "UTF-8); an instruments config is TOML text") from None
    except OSError as exc:
        raise UserError(f"{p}: cannot read instruments config: {exc.strerror or exc}") from None
    return parse_instruments(text, str(p)), text
