"""Real beam blankers: a TTL line of a Keithley 2450's digital I/O, or any SCPI instrument with blank/unblank commands.

Opening a blanker sends nothing that changes it. The first :meth:`blank` /
:meth:`unblank` puts the line into output mode and drives it; with a state
query available every change is read back and a mismatch raises
:class:`~insitu.core.errors.InstrumentError`.

Use :func:`open_blanker` with a :class:`~insitu.control.config.BeamBlankerConfig`.
"""
from __future__ import annotations

from insitu.core.errors import InstrumentError, UserError

from .scpi import SCPITransport, check_command

__all__ = ["DigitalLineBlanker", "SCPIBlanker", "open_blanker", "check_shared_command", "SHARED_SUBSYSTEMS"]

#: headers (short and long form, upper case, no leading colon) a configured blanker command may start with when
#: it shares the source-meter's connection: the digital outputs (2450 ``:DIGital:LINE<n>``, 2400 ``:SOURce2:TTL``)
SHARED_SUBSYSTEMS = ("DIG:", "DIGITAL:", "SOUR2:TTL", "SOURCE2:TTL")


def check_shared_command(command: str, *, what: str) -> str:
    """Refuse a blanker command outside the digital-output subsystems (it would share the source-meter's line).

    Raises
    ------
    ValueError
        Naming ``what`` and the allowed subsystems.

    Examples
    --------
    >>> check_shared_command(":DIG:LINE1:STAT 1", what="blank_command")
    ':DIG:LINE1:STAT 1'
    >>> check_shared_command(":SOUR:VOLT:LEV 10", what="blank_command")
    Traceback (most recent call last):
    ...
    ValueError: blank_command: ':SOUR:VOLT:LEV 10' is not a digital-output command; on the source-meter's own connection only :DIGital:... and :SOURce2:TTL... are allowed
    """
    t = check_command(command, what=what)
    header = t.split()[0].lstrip(":").upper()
    if not header.startswith(SHARED_SUBSYSTEMS):
        raise ValueError(f"{what}: {t!r} is not a digital-output command; on the source-meter's own connection "
                         "only :DIGital:... and :SOURce2:TTL... are allowed")
    return t


class DigitalLineBlanker:
    """Blanks the beam with one rear-panel digital I/O line of a Keithley 2450 (TTL into the blanker input).

    Parameters
    ----------
    transport : SCPITransport
        The 2450's connection (shared with the source-meter driver when it is the same instrument).
    line : int
        Digital I/O line 1–6.
    active_high : bool
        True: line high (1) = beam blanked.

    Commands: ``:DIG:LINE<n>:MODE DIG,OUT`` (once, before the first change),
    ``:DIG:LINE<n>:STAT 1|0`` and ``:DIG:LINE<n>:STAT?``; ``SYST:ERR?``
    after each setting.

    Example
    -------
    >>> bb = DigitalLineBlanker(sm._t, line=1)     # doctest: +SKIP
    >>> bb.blank(); bb.is_blanked()               # doctest: +SKIP
    True
    """

    Q_ERROR = "SYST:ERR?"
    CMD_MODE = ":DIG:LINE{n}:MODE DIG,OUT"   # the line drives its level (TTL out)
    Q_MODE = ":DIG:LINE{n}:MODE?"
    CMD_STATE = ":DIG:LINE{n}:STAT {s:d}"    # 1 = high, 0 = low
    Q_STATE = ":DIG:LINE{n}:STAT?"

    def __init__(self, transport: SCPITransport, line: int = 1, active_high: bool = True, *, owns_transport=False):
        if not 1 <= int(line) <= 6:
            raise UserError(f"beam_blanker.line: {line} is not a 2450 digital I/O line (1-6)")
        self._t = transport
        self.line = int(line)
        self.active_high = bool(active_high)
        self._owns = owns_transport
        self._mode_set = False
        self.idn = f"Keithley 2450 digital I/O line {self.line} at {transport.resource}"

    def _drive(self, blanked: bool) -> None:
        level = int(blanked == self.active_high)
        n = self.line
        with self._t.lock:
            if not self._mode_set:
                mode = self._t.query(self.Q_MODE.format(n=n)).strip().strip('"').upper().replace(" ", "")
                if mode != "DIG,OUT":
                    self._t.write_checked(self.CMD_MODE.format(n=n), self.Q_ERROR)
                self._mode_set = True
            self._t.write_checked(self.CMD_STATE.format(n=n, s=level), self.Q_ERROR)
        if self.is_blanked() != blanked:
            raise InstrumentError(f"{self._t.resource}: digital line {n} did not read back as "
                                  f"{'blanked' if blanked else 'unblanked'}")

    def blank(self) -> None:
        self._drive(True)

    def unblank(self) -> None:
        self._drive(False)

    def is_blanked(self) -> bool:
        high = self._t.query_bool(self.Q_STATE.format(n=self.line))
        return high == self.active_high

    def describe(self) -> dict:
        mode = self._t.query(self.Q_MODE.format(n=self.line)).strip()
        return {"resource": self._t.resource, "driver": "keithley_digio", "line": self.line,
                "line_mode": mode, "blanked": self.is_blanked(), "active_high": self.active_high}

    def close(self) -> None:
        if self._owns:
            self._t.close()


class SCPIBlanker:
    """A blanker driven by configurable SCPI (or any line-based) commands.

    Parameters
    ----------
    transport : SCPITransport
    blank_command, unblank_command : str
        Sent as they are; each must be one command (no ``;``, no line end,
        printable ASCII: :func:`~insitu.drivers.scpi.check_command`).
    query_command : str, optional
        Query whose reply is 1/0/ON/OFF; with ``active_high`` True a 1 means
        blanked. Without it the blanker reports the last state it commanded
        and raises until one has been commanded.
    """

    def __init__(self, transport: SCPITransport, blank_command: str, unblank_command: str,
                 query_command: str | None = None, active_high: bool = True, *, owns_transport=True):
        try:
            blank_command = check_command(blank_command, what="beam_blanker.blank_command")
            unblank_command = check_command(unblank_command, what="beam_blanker.unblank_command")
            if query_command:
                query_command = check_command(query_command, what="beam_blanker.query_command")
            if not owns_transport:   # the source-meter's own connection: digital outputs only
                for key, cmd in (("blank_command", blank_command), ("unblank_command", unblank_command),
                                 ("query_command", query_command)):
                    if cmd:
                        check_shared_command(cmd, what=f"beam_blanker.{key}")
        except ValueError as exc:
            raise UserError(str(exc)) from None
        self._t = transport
        self.blank_command = blank_command
        self.unblank_command = unblank_command
        self.query_command = query_command
        self.active_high = bool(active_high)
        self._owns = owns_transport
        self._last: bool | None = None
        self.idn = f"SCPI beam blanker at {transport.resource}"

    def _send(self, command: str, blanked: bool) -> None:
        self._t.write(command)
        self._last = blanked
        if self.query_command and self.is_blanked() != blanked:
            raise InstrumentError(f"{self._t.resource}: '{command}' sent but '{self.query_command}' "
                                  f"does not report {'blanked' if blanked else 'unblanked'}")

    def blank(self) -> None:
        self._send(self.blank_command, True)

    def unblank(self) -> None:
        self._send(self.unblank_command, False)

    def is_blanked(self) -> bool:
        if self.query_command:
            return self._t.query_bool(self.query_command) == self.active_high
        if self._last is None:
            raise InstrumentError(f"{self._t.resource}: blanker state unknown (no query_command configured and "
                                  f"nothing commanded yet)")
        return self._last

    def describe(self) -> dict:
        d = {"resource": self._t.resource, "driver": "scpi"}
        if self.query_command:
            d["blanked"] = self.is_blanked()
        else:
            d["blanked"] = "unknown (no query_command)"
        return d

    def close(self) -> None:
        if self._owns:
            self._t.close()


def open_blanker(cfg, source_meter=None):
    """Open the blanker a :class:`~insitu.control.config.BeamBlankerConfig` describes (sends nothing that changes it).

    Parameters
    ----------
    cfg : BeamBlankerConfig
        ``driver`` "keithley_digio" or "scpi" ("mock" is handled by :mod:`insitu.drivers.mock`).
    source_meter : KeithleySourceMeter, optional
        When the blanker's resource is this source-meter's resource, its
        connection is shared (a 2450 serves one socket at a time).

    Returns
    -------
    BeamBlanker
    """
    if cfg.driver == "mock":
        from .mock import MockBeamBlanker

        return MockBeamBlanker()
    shared = getattr(source_meter, "_t", None)
    if shared is not None and getattr(source_meter, "resource", None) == cfg.resource:
        transport, owns = shared, False
    else:
        transport = SCPITransport.open(cfg.resource, visa_library=cfg.visa_library, timeout_s=cfg.timeout_s)
        owns = True
    try:
        if cfg.driver == "keithley_digio":
            model = getattr(source_meter, "model", None) if not owns else None
            if owns:
                idn = transport.query("*IDN?")
                if "MODEL 2450" not in idn.upper():
                    raise InstrumentError(f"{cfg.resource}: keithley_digio needs a Keithley 2450, found '{idn}'")
            elif model != "2450":
                raise UserError(f"beam_blanker.driver: 'keithley_digio' needs a Keithley 2450 source-meter "
                                f"(the source-meter at {cfg.resource} is a {model})")
            return DigitalLineBlanker(transport, cfg.line, cfg.active_high, owns_transport=owns)
        if cfg.driver == "scpi":
            return SCPIBlanker(transport, cfg.blank_command, cfg.unblank_command, cfg.query_command,
                               cfg.active_high, owns_transport=owns)
        raise UserError(f"beam_blanker.driver: unknown driver {cfg.driver!r}")
    except BaseException:
        if owns:
            transport.close()
        raise
