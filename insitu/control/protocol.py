"""Bias protocols: the YAML schema, its validation, and the expanded timeline.

A protocol is a YAML file (the schema is binding, see ``docs/protocols.md``)::

    name: ding2023-first-extraction
    limits:
      max_voltage: 17.5          # V: |setpoint| never above
      compliance_current: 1.0e-6 # A: set on the instrument before output on
      max_slew_rate: 0.5         # V/s
      short_current: 8.0e-7      # A, optional: |I| at or above -> short suspender
      frame_stall_s: 30          # s, optional: no frame this long while imaging -> stall
    sample_interval: 0.2         # s, source-meter read period (default 0.2, at most 1)
    on_compliance: hold          # hold | abort
    steps:
      - beam: blank              # blank | unblank
      - acquire: {frames: 2}
      - ramp: {to: 10.0, rate: 0.2}
      - hold: {duration: 600}
      - repeat: {times: 3, steps: [{ramp: {to: 17.0}}, {hold: {duration: 60}}]}

Every problem is reported as ONE line naming the field, e.g.
``protocol.yaml: steps[3].ramp.to: 20 V exceeds limits.max_voltage 17.5 V``.
A key given twice, anchors (``&a``) and aliases (``*a``) are refused: a
protocol says each value once, where it is read.

Ramps are staircases: one setpoint step every ``sample_interval``. The step
size is capped so that any 2-s window holds at most ``2 s × max_slew_rate``
even when one extra step falls in it (sampling jitter), which makes the
largest effective ramp rate ``max_slew_rate × 2 / (2 + sample_interval)`` (less 0.1 %)
(:func:`effective_rate`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, PrivateAttr, Tag, ValidationError,
                      field_validator, model_validator)

from insitu.control.dose import DEFAULT_FIELD_OF_VIEW_M, dose_rate
from insitu.core.errors import UserError
from insitu.control.safety import n_ramp_steps
from insitu.core.validation import first_error_line, one_line
from insitu.core.units import count
from insitu.drivers.keithley import KeithleySourceMeter

#: hard bounds that no protocol may exceed: what a 2400/2450 can do at all (source ±210 V; current limit
#: 1 nA .. 1.05 A, see ../shared/reference/smu-scpi.md), stated once, in the driver
ABS_MAX_VOLTAGE_V = KeithleySourceMeter.MAX_LEVEL_V
ABS_MIN_CURRENT_LIMIT_A, ABS_MAX_CURRENT_A = KeithleySourceMeter.LIMIT_SPAN_A
MAX_FLAT_STEPS = 100_000
#: ramps stay this fraction below the slew cap, so the slew guard (which keeps its own, smaller
#: headroom for rounding) never has to clip a nominal staircase
RATE_MARGIN = 1e-3
STEP_KINDS = ("beam", "acquire", "ramp", "hold", "repeat")


def _no_bool(v):
    if isinstance(v, bool):
        raise ValueError("expected a number, got a boolean")
    return v


#: a float that refuses YAML booleans (``yes``/``no``/``on``/``off``)
Num = Annotated[float, BeforeValidator(_no_bool)]
Int = Annotated[int, BeforeValidator(_no_bool)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class Limits(_Strict):
    """Safety limits (all required except the two suspender thresholds)."""

    max_voltage: Num = Field(gt=0, le=ABS_MAX_VOLTAGE_V, description="V, |setpoint| never above")
    compliance_current: Num = Field(description="A, instrument current limit (1 nA .. 1.05 A)")
    max_slew_rate: Num = Field(gt=0, le=100.0, description="V/s")
    short_current: Optional[Num] = Field(None, gt=0, le=ABS_MAX_CURRENT_A, description="A")
    frame_stall_s: Optional[Num] = Field(None, gt=0, le=86400.0, description="s")

    @field_validator("compliance_current")
    @classmethod
    def _settable(cls, v: float) -> float:
        """The current limit goes to the instrument: it must be one the source-meters accept."""
        if not ABS_MIN_CURRENT_LIMIT_A <= v <= ABS_MAX_CURRENT_A:
            raise ValueError(f"{v:g} A is outside the current limits a source-meter can set "
                             f"({ABS_MIN_CURRENT_LIMIT_A:g} .. {ABS_MAX_CURRENT_A:g} A)")
        return v


class Until(_Strict):
    """End a ``ramp`` or ``hold`` early: whichever condition is met first (at least one is given).

    ``seeds``: this many new seeds confirmed since the step began; ``current_above`` /
    ``current_below``: the measured current (A, signed) above / below this value.
    """

    seeds: Optional[Int] = Field(None, ge=1, le=100_000, description="new confirmed seeds since the step began")
    current_above: Optional[Num] = Field(None, ge=-ABS_MAX_CURRENT_A, le=ABS_MAX_CURRENT_A, description="A")
    current_below: Optional[Num] = Field(None, ge=-ABS_MAX_CURRENT_A, le=ABS_MAX_CURRENT_A, description="A")

    @model_validator(mode="after")
    def _some(self):
        if self.seeds is None and self.current_above is None and self.current_below is None:
            raise ValueError("give at least one of seeds, current_above, current_below")
        return self

    def describe(self) -> str:
        """The conditions in words, e.g. ``until seeds >= 1 or I > 5e-07 A``.

        Examples
        --------
        >>> Until(seeds=1, current_above=5e-7).describe()
        'until seeds >= 1 or I > 5e-07 A'
        """
        parts = []
        if self.seeds is not None:
            parts.append(f"seeds >= {self.seeds}")
        if self.current_above is not None:
            parts.append(f"I > {self.current_above:g} A")
        if self.current_below is not None:
            parts.append(f"I < {self.current_below:g} A")
        return "until " + " or ".join(parts)


class Ramp(_Strict):
    to: Num = Field(description="target level, V")
    rate: Optional[Num] = Field(None, gt=0, description="V/s; default and maximum: limits.max_slew_rate")
    until: Optional[Until] = None


class Hold(_Strict):
    duration: Num = Field(ge=0, le=7 * 86400.0, description="s")
    until: Optional[Until] = None


class Acquire(_Strict):
    frames: Int = Field(ge=1, le=100_000, description="number of frames to record")


class RampStep(_Strict):
    ramp: Ramp


class HoldStep(_Strict):
    hold: Hold


class AcquireStep(_Strict):
    acquire: Acquire


class BeamStep(_Strict):
    beam: Literal["blank", "unblank"]


class Repeat(_Strict):
    times: Int = Field(ge=1, le=10_000)
    steps: list["Step"] = Field(min_length=1)


class RepeatStep(_Strict):
    repeat: Repeat


def _step_tag(v) -> str | None:
    if isinstance(v, dict):
        keys = [k for k in v if k in STEP_KINDS]
        return keys[0] if len(keys) == 1 and len(v) == 1 else None
    if isinstance(v, BaseModel):
        return next(iter(type(v).model_fields))
    return None


Step = Annotated[
    Union[
        Annotated[RampStep, Tag("ramp")],
        Annotated[HoldStep, Tag("hold")],
        Annotated[AcquireStep, Tag("acquire")],
        Annotated[BeamStep, Tag("beam")],
        Annotated[RepeatStep, Tag("repeat")],
    ],
    Discriminator(_step_tag, custom_error_type="step_kind",
                  custom_error_message="a step is a mapping with exactly one key: " + ", ".join(STEP_KINDS)),
]
Repeat.model_rebuild()


class Protocol(_Strict):
    """A validated protocol (see the module docstring for the YAML)."""

    name: str = Field("protocol", min_length=1, max_length=200)
    description: str = ""
    limits: Limits
    sample_interval: Num = Field(0.2, ge=0.01, le=1.0, description="s")
    on_compliance: Literal["hold", "abort"] = "hold"
    #: what every confirmed seed does: nothing, an event, blank the beam, pause the protocol, abort (exit 3)
    on_seed: Literal["none", "mark", "blank", "hold", "abort"] = "none"
    field_of_view_m: Num = Field(DEFAULT_FIELD_OF_VIEW_M, gt=0, le=1e-3,
                                   description="edge of the (square) scanned field, m; for the dose")
    steps: list[Step] = Field(min_length=1)
    _text: str = PrivateAttr("")

    @property
    def text(self) -> str:
        """The YAML text this protocol was parsed from ('' when built in code)."""
        return self._text


# ---------------------------------------------------------------------------
# flattening: the protocol as a flat list of primitive steps
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class FlatStep:
    """One primitive step after ``repeat`` is unrolled.

    ``kind`` is ``ramp`` | ``hold`` | ``beam`` | ``acquire``. Ramps carry their
    start and end level (V), effective rate (V/s) and number of setpoint steps
    ``n_ticks``; holds their ``n_ticks``; beam steps ``blank``; acquire
    ``frames``. ``path`` is the field path in the YAML (``steps[4].repeat.steps[0]``).
    ``until`` (ramp, hold) is the step's :class:`Until` or None; its ``duration_s`` is then
    the longest the step can take.
    """

    index: int
    kind: str
    label: str
    path: str
    v_start_V: float = 0.0
    v_end_V: float = 0.0
    rate_V_s: float = 0.0
    n_ticks: int = 0
    duration_s: float = 0.0
    blank: Optional[bool] = None
    frames: int = 0
    until: Optional[Until] = None


def effective_rate(rate_V_s: float | None, limits: Limits, sample_interval_s: float) -> float:
    """Ramp rate actually used (V/s): the requested rate, at most ``max_slew × 2/(2 + dt)`` (less 0.1 %).

    A staircase with step ``r·dt`` every ``dt`` can put one extra step into a
    2-s window when the sample times jitter; capping ``r`` at
    ``max_slew·2/(2 + dt)`` keeps even that window within ``2 s × max_slew``.

    Examples
    --------
    >>> lim = Limits(max_voltage=10, compliance_current=1e-6, max_slew_rate=0.5)
    >>> round(effective_rate(None, lim, 0.2), 4)
    0.4541
    >>> effective_rate(0.1, lim, 0.2)
    0.1
    """
    cap = limits.max_slew_rate * 2.0 / (2.0 + sample_interval_s) * (1 - RATE_MARGIN)
    r = limits.max_slew_rate if rate_V_s is None else rate_V_s
    return min(r, cap)


def _fmt_v(v: float) -> str:
    return f"{v:g} V"


def _check_until(until: Until | None, path: str, lim: Limits) -> None:
    """A current condition the instrument can never report (|I| is held at the current limit) is refused."""
    if until is None:
        return
    for key, value in (("current_above", until.current_above), ("current_below", until.current_below)):
        if value is None:
            continue
        beyond = value >= lim.compliance_current if key == "current_above" else value <= -lim.compliance_current
        if beyond:
            raise ValueError(f"{path}.{key}: {value:g} A can never be met: the current is held within "
                             f"limits.compliance_current {lim.compliance_current:g} A")


def _walk(steps, prefix: str, protocol: Protocol, out: list, v: float, rep: str):
    """Unroll ``steps`` into ``out`` starting from level ``v``; return the final level."""
    lim, dt = protocol.limits, protocol.sample_interval
    for i, st in enumerate(steps):
        path = f"{prefix}[{i}]"
        if len(out) > MAX_FLAT_STEPS:
            raise ValueError(f"{path}: more than {MAX_FLAT_STEPS} steps after unrolling repeat")
        if isinstance(st, RampStep):
            r = st.ramp
            if abs(r.to) > lim.max_voltage:
                raise ValueError(f"{path}.ramp.to: {r.to:g} V exceeds limits.max_voltage {lim.max_voltage:g} V")
            if r.rate is not None and r.rate > lim.max_slew_rate:
                raise ValueError(f"{path}.ramp.rate: {r.rate:g} V/s exceeds limits.max_slew_rate "
                                 f"{lim.max_slew_rate:g} V/s")
            _check_until(r.until, f"{path}.ramp.until", lim)
            rate = effective_rate(r.rate, lim, dt)
            n = n_ramp_steps(r.to - v, rate * dt)
            out.append(FlatStep(len(out), "ramp", f"{rep}ramp to {_fmt_v(r.to)} at {rate:.3g} V/s", path,
                                v, r.to, rate, n, n * dt, until=r.until))
            v = r.to
        elif isinstance(st, HoldStep):
            _check_until(st.hold.until, f"{path}.hold.until", lim)
            n = int(math.ceil(st.hold.duration / dt - 1e-9))
            out.append(FlatStep(len(out), "hold", f"{rep}hold {st.hold.duration:g} s at {_fmt_v(v)}", path,
                                v, v, 0.0, n, n * dt, until=st.hold.until))
        elif isinstance(st, BeamStep):
            out.append(FlatStep(len(out), "beam", f"{rep}beam {st.beam}", path, v, v, blank=(st.beam == "blank")))
        elif isinstance(st, AcquireStep):
            out.append(FlatStep(len(out), "acquire", f"{rep}acquire {count(st.acquire.frames, 'frame')}", path, v, v,
                                frames=st.acquire.frames))
        elif isinstance(st, RepeatStep):
            for k in range(st.repeat.times):
                v = _walk(st.repeat.steps, f"{path}.repeat.steps", protocol, out, v,
                          f"{rep}[{k + 1}/{st.repeat.times}] ")
                if len(out) > MAX_FLAT_STEPS:
                    raise ValueError(f"{path}.repeat.times: more than {MAX_FLAT_STEPS} steps after unrolling")
        else:  # pragma: no cover - the schema admits nothing else
            raise ValueError(f"{path}: unknown step")
    return v


def _count(steps, prefix: str) -> int:
    """Number of flat steps ``steps`` unroll into; ValueError naming the repeat that makes too many."""
    n = 0
    for i, st in enumerate(steps):
        if isinstance(st, RepeatStep):
            n += st.repeat.times * _count(st.repeat.steps, f"{prefix}[{i}].repeat.steps")
            if n > MAX_FLAT_STEPS:
                raise ValueError(f"{prefix}[{i}].repeat.times: more than {MAX_FLAT_STEPS} steps after unrolling")
        else:
            n += 1
    return n


def flatten(protocol: Protocol, start_V: float = 0.0) -> list[FlatStep]:
    """The protocol as primitive steps (``repeat`` unrolled), every limit checked.

    Raises
    ------
    ValueError
        Naming the field that breaks a limit.
    """
    _count(protocol.steps, "steps")
    out: list[FlatStep] = []
    v = _walk(protocol.steps, "steps", protocol, out, float(start_V), "")
    if v != 0.0:
        # the engine always ends at 0 V: the last leg is a ramp at the maximum allowed rate
        rate = effective_rate(None, protocol.limits, protocol.sample_interval)
        n = n_ramp_steps(v, rate * protocol.sample_interval)
        out.append(FlatStep(len(out), "ramp", f"final ramp to 0 V at {rate:.3g} V/s", "(end)",
                            v, 0.0, rate, n, n * protocol.sample_interval))
    return out


# ---------------------------------------------------------------------------
# the expanded timeline (what `insitu validate` prints)
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Segment:
    t_start_s: float
    t_end_s: float
    v_start_V: float
    v_end_V: float
    blanked: bool
    label: str
    step_index: int
    #: the step's ``until`` in words ('' for a scripted step); ``t_end_s`` is then its latest end
    condition: str = ""


@dataclass(frozen=True)
class Timeline:
    """The protocol expanded in time (estimates for acquire steps).

    Attributes: ``segments`` (one per flat step), ``duration_s``,
    ``peak_abs_V``, ``n_frames`` (expected), ``beam_on_s``, ``dose``
    (e/Å², expected total), ``dose_rate`` (e/Å²/s while unblanked),
    ``labels`` (flat step labels), ``steps`` (the :class:`FlatStep` list).
    """

    segments: tuple
    duration_s: float
    peak_abs_V: float
    n_frames: int
    beam_on_s: float
    dose: float
    dose_rate: float
    labels: tuple
    steps: tuple


def expand(protocol: Protocol, probe_current_A: float = 5e-11, *, frame_rate_hz: float = 1.0,
           initial_blanked: bool = True) -> Timeline:
    """Expand a protocol into a timeline of segments.

    Parameters
    ----------
    protocol : Protocol
    probe_current_A : float
        Beam current for the dose (A).
    frame_rate_hz : float
        Expected frame rate, for acquire durations and frame counts.
    initial_blanked : bool
        Beam state before the first ``beam`` step.

    Returns
    -------
    Timeline

    Examples
    --------
    >>> p = parse_protocol('''
    ... limits: {max_voltage: 10, compliance_current: 1.0e-6, max_slew_rate: 1}
    ... sample_interval: 0.5
    ... steps: [{ramp: {to: 4, rate: 0.5}}, {hold: {duration: 10}}]''')
    >>> tl = expand(p)
    >>> tl.duration_s, tl.peak_abs_V    # 8 s up, 10 s hold, 5.5 s down at (just under) 0.8 V/s
    (23.5, 4.0)
    """
    try:
        flat = flatten(protocol)
    except ValueError as exc:
        raise UserError(f"protocol: {exc}") from None
    rate_dose = dose_rate(probe_current_A, protocol.field_of_view_m ** 2)
    t, blanked, beam_on, n_frames = 0.0, bool(initial_blanked), 0.0, 0.0
    segs = []
    for st in flat:
        if st.kind == "beam":
            blanked = st.blank
            d = 0.0
        elif st.kind == "acquire":
            d = st.frames / frame_rate_hz
            n_frames += st.frames
            beam_on += d
        else:
            d = st.duration_s
            if not blanked:
                beam_on += d
                n_frames += d * frame_rate_hz
        segs.append(Segment(t, t + d, st.v_start_V, st.v_end_V, blanked if st.kind != "acquire" else False,
                            st.label, st.index, st.until.describe() if st.until is not None else ""))
        t += d
    peak = max([abs(s.v_start_V) for s in segs] + [abs(s.v_end_V) for s in segs] + [0.0])
    return Timeline(tuple(segs), t, peak, int(round(n_frames)), beam_on, beam_on * rate_dose, rate_dose,
                    tuple(s.label for s in flat), tuple(flat))


# ---------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------
def _loc_text(loc) -> str:
    """pydantic loc -> ``steps[3].ramp.to`` (union tags dropped)."""
    out = ""
    prev_was_index = False
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            prev_was_index = True
            continue
        if prev_was_index and part in STEP_KINDS and out.endswith("]"):
            # the discriminator tag repeats the key that follows
            prev_was_index = False
            continue
        prev_was_index = False
        out += f".{part}" if out else str(part)
    return out


def _step_kind_message(err: dict, msg: str) -> str:
    if err["type"] == "step_kind":
        inp = err.get("input")
        got = f" (got {', '.join(map(str, inp)) if isinstance(inp, dict) else repr(inp)})"
        msg += got if len(got) < 80 else ""
    return msg


def _first_error(exc: ValidationError) -> str:
    return first_error_line(exc, _loc_text, _step_kind_message)


_one_line = one_line


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses anchors, aliases and keys given twice (the last would silently win)."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise yaml.constructor.ConstructorError(None, None, f"alias *{event.anchor} is not allowed "
                                                    "(write the value out)", event.start_mark)
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            raise yaml.constructor.ConstructorError(None, None, f"anchor &{anchor} is not allowed "
                                                    "(write the value out where it is used)", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:   # an unhashable key: the base class says so
                break
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice (first at line {first.start_mark.line + 1}); "
                    "give it once", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def parse_protocol(text: str, source: str = "protocol") -> Protocol:
    """Parse and validate protocol YAML text.

    Every limit is checked for every step (``repeat`` unrolled) here, so a
    protocol that parses can run.

    Raises
    ------
    UserError
        One line: ``<source>: <field>: <problem>``.

    Examples
    --------
    >>> p = parse_protocol('''
    ... limits: {max_voltage: 17.5, compliance_current: 1.0e-6, max_slew_rate: 0.5}
    ... steps: [{ramp: {to: 20}}]''', "p.yaml")
    Traceback (most recent call last):
    ...
    insitu.core.errors.UserError: p.yaml: steps[0].ramp.to: 20 V exceeds limits.max_voltage 17.5 V
    """
    try:
        raw = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        what = "refused" if isinstance(exc, yaml.constructor.ConstructorError) else "not valid YAML"
        raise UserError(_one_line(f"{source}: {what}{where}: {problem}")) from None
    except Exception as exc:  # e.g. RecursionError on absurd nesting
        raise UserError(_one_line(f"{source}: cannot read YAML: {type(exc).__name__}")) from None
    if raw is None:
        raise UserError(f"{source}: empty protocol")
    if not isinstance(raw, dict):
        raise UserError(f"{source}: a protocol is a mapping with limits and steps (got {type(raw).__name__})")
    if "name" not in raw and source not in ("protocol", "<string>"):
        raw = {**raw, "name": Path(source).stem or "protocol"}
    try:
        proto = Protocol.model_validate(raw)
    except ValidationError as exc:
        raise UserError(_one_line(f"{source}: {_first_error(exc)}")) from None
    except RecursionError:
        raise UserError(f"{source}: steps nested too deeply") from None
    try:
        flatten(proto)
    except ValueError as exc:
        raise UserError(_one_line(f"{source}: {exc}")) from None
    except RecursionError:
        raise UserError(f"{source}: steps nested too deeply") from None
    proto._text = text
    return proto


class _WrittenOutDumper(yaml.SafeDumper):
    """Writes every value where it is used: no anchors or aliases (which :func:`parse_protocol` refuses)."""

    def ignore_aliases(self, data) -> bool:
        return True


def protocol_text(raw: dict) -> str:
    """YAML text of a protocol given as plain data (e.g. built in code), ready for :func:`parse_protocol`.

    ``yaml.safe_dump`` writes an object that occurs twice as an anchor and an
    alias, which protocols may not contain; this writes each occurrence out.

    Examples
    --------
    >>> step = {"ramp": {"to": 1.0}}
    >>> raw = {"limits": {"max_voltage": 5, "compliance_current": 1e-6, "max_slew_rate": 1}, "steps": [step, step]}
    >>> len(parse_protocol(protocol_text(raw)).steps)
    2
    """
    return yaml.dump(raw, Dumper=_WrittenOutDumper, sort_keys=False)


def load_protocol(path: str | Path) -> Protocol:
    """Read and validate a protocol file (see :func:`parse_protocol`)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{p}: not a text file") from None
    except OSError as exc:
        raise UserError(f"{p}: cannot read protocol: {exc.strerror or exc}") from None
    return parse_protocol(text, str(p))
