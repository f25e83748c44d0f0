"""Keithley 2450 and 2400 source-meters over VISA (SCPI), one small class per model.

Both source voltage with a current limit and measure current, as the biasing
experiment needs. What the drivers guarantee:

* :meth:`connect` (and :meth:`reopen`) only *read*: ``*IDN?`` (checked
  against the model), on the 2450 ``*LANG?``, then the output state, source
  function, level, range and current limit as found. No ``*RST``, ``*RCL``,
  ``*CLS``, no output or level change.
* :meth:`configure` sends the source/measure set-up one command at a time and
  drains ``SYST:ERR?`` after each, so an error names the command that caused
  it; then it reads the current limit and the range back.
* :meth:`set_voltage` refuses non-finite values and values outside the
  configured range (before :meth:`configure`: the range found at connect),
  and checks the error queue after the level is sent. The one exception is
  a ramp down from a level that :meth:`read_state` found beyond that range
  (someone else set it): levels of the same sign and at most that size are
  allowed, and the allowance shrinks with every level sent.
* :meth:`set_current_limit` changes the current limit alone (the engine
  lowers it to the protocol's compliance before ramping down a source found
  on) and reads it back.
* Every reply is checked against the form its query expects and kept in
  step with it (see :meth:`~insitu.drivers.scpi.SCPITransport.query_parsed`).
* :meth:`measure` takes source value and reading from one query where the
  model allows (2450: ``:READ? "defbuffer1", READ, SOUR, REL``; 2400:
  ``:READ?`` with ``VOLT,CURR,RES,TIME,STAT``) plus the compliance state
  (2450: ``:SOUR:VOLT:ILIM:TRIP?``; 2400: bit 3 of the status word). The
  time stamp is the shared :class:`~insitu.core.clock.Clock` at the middle of the
  reading query.
* Bad replies (garbage, too few values, ``NaN``, ``9.91e37``) raise
  :class:`~insitu.core.errors.InstrumentError`; a timeout or socket failure
  raises :class:`~insitu.core.errors.ConnectionLost`. Never a silently wrong number.

The exact command list per model and why each is sent is in ``docs/drivers.md``.
"""
from __future__ import annotations

import math

from insitu.core.clock import Clock
from insitu.core.errors import InstrumentError

from .interfaces import Measurement, SourceState
from .scpi import SCPITransport, fmt, parse_number, parse_numbers, parse_word

__all__ = ["Keithley2450", "Keithley2400", "KeithleySourceMeter"]


class KeithleySourceMeter:
    """Shared logic of the SCPI Keithley source-meters; use a model subclass.

    Do not instantiate directly: call :meth:`connect`.
    """

    #: model number as it appears in ``*IDN?`` ("MODEL 2450")
    model = ""
    #: maximum |source level| in V of the largest range
    MAX_LEVEL_V = 210.0
    #: accepted current-limit span (A)
    LIMIT_SPAN_A = (1e-9, 1.05)
    #: accepted NPLC span
    NPLC_SPAN = (0.01, 10.0)

    # -- commands, declared near their meaning (both models) ---------------------------------
    Q_IDN = "*IDN?"                          # identity, checked against ``model``
    Q_ERROR = "SYST:ERR?"                    # next error-queue entry; code 0 = empty
    CMD_OUTPUT = ":OUTP {:d}"                # output on (1) / off (0)
    Q_OUTPUT = ":OUTP?"
    CMD_SOURCE_VOLT = ":SOUR:FUNC VOLT"      # source voltage ...
    Q_SOURCE_FUNC = ":SOUR:FUNC?"
    CMD_LEVEL = ":SOUR:VOLT:LEV {}"          # source level, V
    Q_LEVEL = ":SOUR:VOLT:LEV?"
    CMD_RANGE = ":SOUR:VOLT:RANG {}"         # fixed source range, V (turns auto range off)
    Q_RANGE = ":SOUR:VOLT:RANG?"
    CMD_SENSE_CURR = ':SENS:FUNC "CURR"'     # ... and measure current
    CMD_SENSE_AUTORANGE = ":SENS:CURR:RANG:AUTO 1"   # measure range follows the current (pA..mA)
    CMD_NPLC = ":SENS:CURR:NPLC {}"          # integration time in power-line cycles
    # model-specific: current limit
    CMD_LIMIT = ""
    Q_LIMIT = ""

    def __init__(self, transport: SCPITransport, clock: Clock | None = None):
        self._t = transport
        self.clock = clock or Clock()
        self.resource = transport.resource
        self.idn = ""
        self._output: bool | None = None
        self._range_V: float | None = None        # configured range (set_voltage limit)
        self._found_range_V: float | None = None  # range found at connect
        self._limit_A: float | None = None
        self._above_range_V: float | None = None  # a level read back beyond the range: ramp down from it
        self.found: SourceState | None = None     # state as found at connect
        self.found_function: str | None = None
        self.stale_errors: list[tuple[int, str]] = []

    # ------------------------------------------------------------------ connecting
    @classmethod
    def connect(cls, resource: str, *, visa_library: str = "@py", timeout_s: float = 2.0, clock: Clock | None = None,
                read_termination: str | None = None, write_termination: str | None = None):
        """Open ``resource``, check the identity and read the state as found; changes nothing.

        Parameters
        ----------
        resource : str
            Any VISA resource string, e.g. ``"TCPIP0::192.0.2.10::5025::SOCKET"``, ``"GPIB0::24::INSTR"``.
        visa_library : str
            ``"@py"`` (pyvisa-py, default), ``"path/to/file.yaml@sim"`` (pyvisa-sim) or a path to NI-VISA.
        timeout_s : float
            Reply timeout (s).
        clock : Clock, optional
            The experiment clock for time stamps.
        read_termination, write_termination : str, optional
            Default LF (see :func:`insitu.drivers.scpi.default_terminations`).

        Raises
        ------
        ConnectionLost
            Unreachable resource or timeout (message names the resource and the cause).
        InstrumentError
            Wrong model, wrong command set or a bad reply.

        Example
        -------
        >>> sm = Keithley2450.connect("TCPIP0::192.0.2.10::5025::SOCKET")   # doctest: +SKIP
        >>> sm.found                                                        # doctest: +SKIP
        SourceState(output_on=True, level_V=3.0, current_limit_A=0.000105)
        """
        transport = SCPITransport.open(resource, visa_library=visa_library, timeout_s=timeout_s,
                                       read_termination=read_termination, write_termination=write_termination)
        self = cls(transport, clock)
        try:
            self._identify()
            self.found = self._read_found()
        except BaseException:
            transport.close()
            raise
        return self

    def reopen(self) -> None:
        """Reconnect after a lost connection: open the resource again, re-check identity, re-read the output state.

        Sends nothing that changes the instrument; the configured range and
        limit are kept (the instrument keeps them while it keeps sourcing).
        """
        self._t.reopen()
        self._identify()
        self._output = self._t.query_bool(self.Q_OUTPUT)

    reconnect = reopen

    def _identify(self) -> None:
        self.idn = self._t.query_parsed(self.Q_IDN, self._parse_idn)

    def _parse_idn(self, text: str, *, what: str) -> str:
        """The ``*IDN?`` reply if it names this model (maker KEITHLEY..., ``MODEL <model>``); else an error."""
        fields = [f.strip() for f in text.split(",")]
        ok = (len(fields) == 4 and fields[0].upper().startswith("KEITHLEY")
              and fields[1].upper().replace(" ", "") == f"MODEL{self.model}")
        if not ok:
            raise InstrumentError(f"{self.resource}: expected a Keithley {self.model}, found {text.strip()!r}")
        return text.strip()

    def _read_found(self) -> SourceState:
        self.found_function = self._t.query_parsed(self.Q_SOURCE_FUNC, parse_word)
        self._found_range_V = self._t.query_number(self.Q_RANGE)
        state = self._read_state_unchecked()
        self._output = state.output_on
        self._note_level(state.level_V)
        return state

    # ------------------------------------------------------------------ state
    def _read_state_unchecked(self) -> SourceState:
        with self._t.lock:
            on = self._t.query_bool(self.Q_OUTPUT)
            level = self._t.query_number(self.Q_LEVEL)
            limit = self._t.query_number(self.Q_LIMIT)
        return SourceState(on, level, limit)

    def read_state(self) -> SourceState:
        """Output on/off, source level (V) and current limit (A) as the instrument holds them now.

        Raises InstrumentError when the output is on while the instrument
        sources current (its "level" would not be a voltage to ramp from).
        """
        with self._t.lock:
            func = self._t.query_parsed(self.Q_SOURCE_FUNC, parse_word)
            state = self._read_state_unchecked()
        self._output = state.output_on
        self._note_level(state.level_V)
        if state.output_on and not func.startswith("VOLT"):
            raise InstrumentError(f"{self.resource}: output is on while sourcing {func} (not voltage); "
                                  f"switch the output off at the instrument first")
        return state

    def describe(self) -> dict:
        """Everything ``insitu check`` prints: identity and state as found, plus the error queue (drained)."""
        with self._t.lock:
            func = self._t.query_parsed(self.Q_SOURCE_FUNC, parse_word)
            rng = self._t.query_number(self.Q_RANGE)
            state = self._read_state_unchecked()
            errors = self._t.drain_errors(self.Q_ERROR)
        return {"resource": self.resource, "model": f"Keithley {self.model}", "idn": self.idn,
                "output_on": state.output_on, "source_function": func, "level_V": state.level_V,
                "source_range_V": rng, "current_limit_A": state.current_limit_A,
                "errors": [f'{c},"{m}"' for c, m in errors]}

    def info(self) -> dict:
        """Identity and settings (found / set) for the session file."""
        d = {"idn": self.idn, "resource": self.resource, "model": f"Keithley {self.model}",
             "visa_library": self._t.visa_library, "timeout_s": self._t.timeout_s}
        if self.found is not None:
            d.update(found_output_on=self.found.output_on, found_level_V=self.found.level_V,
                     found_current_limit_A=self.found.current_limit_A, found_source_function=self.found_function or "",
                     found_source_range_V=self._found_range_V)
        if self._range_V is not None:
            d.update(set_voltage_range_V=self._range_V, set_current_limit_A=self._limit_A)
        return d

    # ------------------------------------------------------------------ configuration
    def _configure_commands(self, compliance_current: float, voltage_range: float, nplc: float) -> list[str]:
        return [
            self.CMD_SOURCE_VOLT,
            self.CMD_RANGE.format(fmt(voltage_range)),
            self.CMD_LIMIT.format(fmt(compliance_current)),
            self.CMD_SENSE_CURR,
            self.CMD_SENSE_AUTORANGE,
            self.CMD_NPLC.format(fmt(nplc)),
        ]

    def configure(self, compliance_current: float, voltage_range: float, nplc: float = 1.0) -> None:
        """Source voltage on a fixed range with a current limit, measure current (auto range) at ``nplc``.

        Parameters
        ----------
        compliance_current : float
            Current limit in A (sub-µA values are sent in exponent form).
        voltage_range : float
            Source range in V; :meth:`set_voltage` refuses |v| above it.
        nplc : float
            Integration time in power-line cycles (0.01–10).

        Raises
        ------
        InstrumentError
            A value outside what the model accepts, an error-queue entry
            (naming the command), or a limit/range that does not read back.
        """
        c, r, n = self._check_limit(compliance_current), float(voltage_range), float(nplc)
        if not (math.isfinite(r) and 0 < r <= self.MAX_LEVEL_V):
            raise InstrumentError(f"{self.resource}: voltage range {voltage_range!r} V outside 0..{self.MAX_LEVEL_V:g} V")
        if not (math.isfinite(n) and self.NPLC_SPAN[0] <= n <= self.NPLC_SPAN[1]):
            raise InstrumentError(f"{self.resource}: NPLC {nplc!r} outside {self.NPLC_SPAN[0]:g}..{self.NPLC_SPAN[1]:g}")
        with self._t.lock:
            self.stale_errors = self._t.drain_errors(self.Q_ERROR)   # older entries are not ours
            for command in self._configure_commands(c, r, n):
                self._t.write_checked(command, self.Q_ERROR)
            got_limit = self._t.query_number(self.Q_LIMIT)
            got_range = self._t.query_number(self.Q_RANGE)
        self._check_limit_read_back(got_limit, c)
        if got_range < r * (1 - 1e-6):
            raise InstrumentError(f"{self.resource}: source range reads back as {got_range:g} V, "
                                  f"below the {r:g} V asked for ('{self.Q_RANGE}')")
        self._range_V = r
        self._limit_A = got_limit

    def _check_limit(self, compliance_current: float) -> float:
        lo, hi = self.LIMIT_SPAN_A
        c = float(compliance_current)
        if not (math.isfinite(c) and lo <= c <= hi):
            raise InstrumentError(f"{self.resource}: current limit {compliance_current!r} A outside {lo:g}..{hi:g} A")
        return c

    def _check_limit_read_back(self, got: float, sent: float) -> None:
        if not math.isclose(got, sent, rel_tol=1e-3):
            raise InstrumentError(f"{self.resource}: current limit reads back as {got:g} A, "
                                  f"{sent:g} A was sent ('{self.Q_LIMIT}')")

    def set_current_limit(self, current_A: float) -> None:
        """Set the current limit alone (A), with the output as it is; error queue checked, value read back.

        The engine calls it before ramping down a source found on, so that the
        ramp runs under the protocol's compliance rather than the limit found.

        Raises
        ------
        InstrumentError
            A value outside what the model accepts, an error-queue entry, or a
            limit that does not read back.
        """
        c = self._check_limit(current_A)
        with self._t.lock:
            self._t.write_checked(self.CMD_LIMIT.format(fmt(c)), self.Q_ERROR)
            got = self._t.query_number(self.Q_LIMIT)
        self._check_limit_read_back(got, c)
        self._limit_A = got

    # ------------------------------------------------------------------ source
    @property
    def voltage_range(self) -> float | None:
        """The |level| limit in V that :meth:`set_voltage` enforces (configured, else as found)."""
        return self._range_V if self._range_V is not None else self._found_range_V

    def _note_level(self, level_V: float) -> None:
        """Remember a level read back beyond the range (set by someone else): :meth:`set_voltage` may ramp down from it."""
        lim = self.voltage_range
        beyond = lim is not None and math.isfinite(level_V) and abs(level_V) > lim * (1 + 1e-9)
        self._above_range_V = float(level_V) if beyond else None

    def _level_allowed(self, v: float) -> bool:
        lim = self.voltage_range
        if lim is not None and abs(v) <= lim * (1 + 1e-9):
            return True
        above = self._above_range_V
        return above is not None and v * above > 0 and abs(v) <= abs(above)

    def set_voltage(self, v: float) -> None:
        """Set the source level in V; refused when non-finite or outside ±range; error queue checked.

        Beyond the range only a step down from a level :meth:`read_state` found
        there is allowed (same sign, smaller size).
        """
        v = float(v)
        lim = self.voltage_range
        if not math.isfinite(v):
            raise InstrumentError(f"{self.resource}: refusing non-finite level {v!r} V")
        if lim is None or not self._level_allowed(v):
            raise InstrumentError(f"{self.resource}: refusing level {v:g} V outside the ±{lim:g} V range")
        self._t.write_checked(self.CMD_LEVEL.format(fmt(v)), self.Q_ERROR)
        if self._above_range_V is not None:
            self._note_level(v if abs(v) < abs(self._above_range_V) else self._above_range_V)

    @property
    def output(self) -> bool:
        """Output on/off as the instrument reports it now (``:OUTP?``)."""
        on = self._t.query_bool(self.Q_OUTPUT)
        self._output = on
        return on

    @output.setter
    def output(self, on: bool) -> None:
        self._t.write_checked(self.CMD_OUTPUT.format(int(bool(on))), self.Q_ERROR)
        self._output = bool(on)

    # ------------------------------------------------------------------ measuring
    def measure(self) -> Measurement:
        """Read voltage and current together (see the model class); time from the shared clock.

        With the output off (as last seen by this driver) nothing is sent and
        the reading is 0 V, 0 A, no compliance: the terminals are not driven.
        """
        if self._output is False:
            return Measurement(self.clock.now(), 0.0, 0.0, False)
        return self._measure()

    def _measure(self) -> Measurement:  # pragma: no cover - model classes implement it
        raise NotImplementedError

    def _timed_query(self, command: str, parse):
        """(clock time at the middle of the query, parsed reply); see ``SCPITransport.query_parsed``."""
        t0 = self.clock.now()
        value = self._t.query_parsed(command, parse)
        t1 = self.clock.now()
        return 0.5 * (t0 + t1), value

    def take_notices(self) -> list[str]:
        """Notes about stray replies the connection discarded since the last call (for the event log)."""
        return self._t.take_notices()

    # ------------------------------------------------------------------ closing
    def close(self) -> None:
        """Release the connection; the output is left exactly as it is."""
        self._t.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.resource} {self.idn!r}>"


class Keithley2450(KeithleySourceMeter):
    """Keithley 2450 in its native SCPI command set (``*LANG SCPI``).

    ``*IDN?`` answers ``KEITHLEY INSTRUMENTS,MODEL 2450,<serial>,<firmware>`` (no "INC.").
    """

    model = "2450"
    Q_LANG = "*LANG?"                                    # must be SCPI (not TSP, not SCPI2400 emulation)
    CMD_LIMIT = ":SOUR:VOLT:ILIM {}"                     # current limit while sourcing voltage, A
    Q_LIMIT = ":SOUR:VOLT:ILIM?"
    Q_TRIPPED = ":SOUR:VOLT:ILIM:TRIP?"                  # 1 while the current limit is active
    CMD_READBACK = ":SOUR:VOLT:READ:BACK 1"              # SOUR element = measured, not programmed, voltage
    Q_READ = ':READ? "defbuffer1", READ, SOUR, REL'      # -> current A, source V, relative time s

    def _identify(self) -> None:
        super()._identify()
        lang = self._t.query_parsed(self.Q_LANG, parse_word)
        if lang != "SCPI":
            raise InstrumentError(f"{self.resource}: the 2450 runs the '{lang}' command set; insitu needs 'SCPI' "
                                  f"(front panel: MENU > System > Settings > Command Set)")

    def _configure_commands(self, compliance_current, voltage_range, nplc):
        cmds = super()._configure_commands(compliance_current, voltage_range, nplc)
        return cmds + [self.CMD_READBACK]

    def _measure(self) -> Measurement:
        with self._t.lock:
            t, (i, v, _rel) = self._timed_query(self.Q_READ, _three_numbers)
            tripped = self._t.query_bool(self.Q_TRIPPED)
        return Measurement(t, v, i, tripped)


class Keithley2400(KeithleySourceMeter):
    """Keithley 2400 (SCPI).

    ``*IDN?`` answers ``KEITHLEY INSTRUMENTS INC.,MODEL 2400,<serial>,<firmware>``.
    """

    model = "2400"
    CMD_LIMIT = ":SENS:CURR:PROT {}"                     # current compliance, A
    Q_LIMIT = ":SENS:CURR:PROT?"
    CMD_FIXED_MODE = ":SOUR:VOLT:MODE FIX"               # a level, not a sweep/list
    CMD_ONE_READING = ":TRIG:COUN 1"                     # :READ? returns one reading, not a buffer
    CMD_ELEMENTS = ":FORM:ELEM VOLT,CURR,RES,TIME,STAT"  # reading = V, I, R, t, status word
    Q_READ = ":READ?"
    #: status-word bits (2400 user manual, "status word"): bit 0 OFLO (over range), bit 3 real compliance
    STATUS_OVERFLOW = 1 << 0
    STATUS_COMPLIANCE = 1 << 3

    def _configure_commands(self, compliance_current, voltage_range, nplc):
        cmds = super()._configure_commands(compliance_current, voltage_range, nplc)
        return cmds + [self.CMD_FIXED_MODE, self.CMD_ONE_READING, self.CMD_ELEMENTS]

    def _measure(self) -> Measurement:
        t, (v, i, compliance) = self._timed_query(self.Q_READ, self._parse_reading)
        return Measurement(t, v, i, compliance)

    @classmethod
    def _parse_reading(cls, text: str, *, what: str) -> tuple[float, float, bool]:
        """``V,I,R,t,status`` -> (voltage V, current A, compliance); over range and bad fields raise."""
        parts = text.strip().split(",")
        if len(parts) != 5:
            raise InstrumentError(f"{what}: expected 5 values (V,I,R,t,status), got {len(parts)}: {text.strip()!r}")
        v = parse_number(parts[0], what=what + " voltage")
        i = parse_number(parts[1], what=what + " current")
        # parts[2] (resistance) is 9.91e37 when not measured; parts[3] is the instrument's own time stamp
        status_f = parse_number(parts[4], what=what + " status")
        if status_f < 0 or status_f != int(status_f):
            raise InstrumentError(f"{what}: status word {parts[4].strip()!r} is not a non-negative integer")
        status = int(status_f)
        if status & cls.STATUS_OVERFLOW:
            raise InstrumentError(f"{what}: reading over range (status word {status}, OFLO bit set)")
        return v, i, bool(status & cls.STATUS_COMPLIANCE)


def _three_numbers(text: str, *, what: str) -> list[float]:
    return parse_numbers(text, 3, what=what)
