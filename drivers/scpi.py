"""SCPI over VISA: opening a resource, one locked write/query path, strict reply parsing.

Everything an instrument can do wrong on the wire ends here as one of two
exceptions, each naming the resource and the command:

* :class:`~insitu.core.errors.ConnectionLost` — the transport failed: a pyvisa
  ``VisaIOError`` (including a timeout), or an ``OSError`` such as
  ``BrokenPipeError``/``ConnectionResetError`` straight from the socket
  layer (pyvisa-py raises those on a write to a closed TCP SOCKET). After it
  the transport refuses further traffic until :meth:`SCPITransport.reopen`,
  because a late reply would desynchronise every following query.
* :class:`~insitu.core.errors.InstrumentError` — the instrument answered, but
  badly: garbage, too few values, ``NaN``, the ``9.91e37`` "no value"
  sentinel, or an entry in its error queue.

Replies are kept in step with the queries that asked for them
(:meth:`SCPITransport.query_parsed`): input nobody asked for is discarded
before each query, and a reply that does not have the form its query expects
(count, format) makes the transport clear its input; when stray lines were
found there the query is sent once more. Discarded lines are kept in
:attr:`SCPITransport.notices` for the caller to record.

Every message written and every reply read is logged at DEBUG level on the
``insitu.drivers`` logger (``logging.getLogger("insitu.drivers")``).

Numbers are sent with :func:`fmt` (``%.6e``), never ``%f``, so a 100 nA
limit goes out as ``1.000000e-07`` and not ``0.000000``.
"""
from __future__ import annotations

import logging
import math
import re
import select
import socket
import threading
from decimal import ROUND_DOWN, Decimal
from typing import Callable, TypeVar

from insitu.core.errors import ConnectionLost, InstrumentError

T = TypeVar("T")

#: SCPI "no value / overflow" sentinel (Keithley, Agilent, ...)
NO_VALUE = 9.91e37

#: how many ``SYST:ERR?`` entries are drained at most (a real queue holds ~10-100)
MAX_ERRORS = 64

#: how long the input must stay quiet while it is being cleared (s)
CLEAR_QUIET_S = 0.1
#: at most this many stray lines are read while clearing the input
MAX_STRAY_LINES = 64

log = logging.getLogger("insitu.drivers")


def fmt(value: float) -> str:
    """Format a number for a SCPI command: 7 significant digits in exponent form,
    rounded toward zero.

    Rounding toward zero means the instrument never receives a larger magnitude than
    was asked for and checked: a level exactly at ``max_voltage`` or a current limit
    exactly at the compliance cannot go out half a unit in the 7th digit above it.

    Parameters
    ----------
    value : float

    Returns
    -------
    str

    Examples
    --------
    >>> fmt(1e-7)
    '1.000000e-07'
    >>> fmt(-3)
    '-3.000000e+00'
    >>> fmt(2.4873495242942782)
    '2.487349e+00'
    >>> fmt(-0.99999999)
    '-9.999999e-01'
    """
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"cannot send a non-finite number ({value!r})")
    if v == 0.0:
        return f"{0.0:.6e}"
    d = Decimal(repr(v))
    truncated = d.quantize(Decimal(1).scaleb(d.adjusted() - 6), rounding=ROUND_DOWN)
    return f"{float(truncated):.6e}"


def parse_number(text: str, *, what: str) -> float:
    """Parse one SCPI number; refuse garbage, NaN, infinities and the 9.91e37 sentinel.

    Parameters
    ----------
    text : str
        One field of a reply.
    what : str
        Names the reply in the error message, e.g. ``"'*:SOUR:VOLT?' from TCPIP0::..."``.

    Examples
    --------
    >>> parse_number("+3.000000E+00", what="level")
    3.0
    """
    t = text.strip()
    try:
        v = float(t)
    except ValueError:
        raise InstrumentError(f"{what}: not a number: {text!r}") from None
    if not math.isfinite(v):
        raise InstrumentError(f"{what}: instrument returned {t} (no valid value)")
    if abs(v) >= 0.99 * NO_VALUE:
        raise InstrumentError(f"{what}: instrument returned {t} (the 'no value / overflow' sentinel)")
    return v


def parse_numbers(text: str, n: int, *, what: str) -> list[float]:
    """Parse exactly ``n`` comma-separated numbers (see :func:`parse_number`).

    Examples
    --------
    >>> parse_numbers("1e-7,3.0,0.5", 3, what="reading")
    [1e-07, 3.0, 0.5]
    """
    parts = text.strip().split(",")
    if len(parts) != n:
        raise InstrumentError(f"{what}: expected {n} comma-separated values, got {len(parts)}: {text.strip()!r}")
    return [parse_number(p, what=what) for p in parts]


def parse_bool(text: str, *, what: str) -> bool:
    """``1``/``0``/``ON``/``OFF`` (also ``+1.000000E+00`` style) -> bool; anything else is an error.

    Examples
    --------
    >>> parse_bool("1", what="output"), parse_bool("OFF", what="output")
    (True, False)
    """
    t = text.strip().upper()
    if t in ("1", "ON"):
        return True
    if t in ("0", "OFF"):
        return False
    try:
        v = float(t)
    except ValueError:
        v = None
    if v in (0.0, 1.0):
        return bool(v)
    raise InstrumentError(f"{what}: expected 0/1/ON/OFF, got {text.strip()!r}")


_ERR_RE = re.compile(r'^\s*([+-]?\d+)\s*,\s*"?(.*?)"?\s*$')


def parse_error(text: str, *, what: str) -> tuple[int, str]:
    """Parse a ``SYST:ERR?`` reply ``<code>,"<message>"`` -> (code, message).

    The 2450 appends ``;<severity>;<timestamp>`` inside the quotes; only the
    text before the first ``;`` is kept.

    Examples
    --------
    >>> parse_error('-113,"Undefined header"', what="e")
    (-113, 'Undefined header')
    >>> parse_error('0,"No error;0;1970/01/01 00:00:00.000"', what="e")
    (0, 'No error')
    """
    m = _ERR_RE.match(text)
    if not m:
        raise InstrumentError(f"{what}: not an error-queue entry: {text.strip()!r}")
    return int(m.group(1)), m.group(2).split(";")[0].strip()


def parse_word(text: str, *, what: str) -> str:
    """One SCPI word (character data such as ``VOLT``, ``SCPI``; quotes dropped) in upper case; else an error.

    Examples
    --------
    >>> parse_word('"SCPI"', what="lang")
    'SCPI'
    >>> parse_word("VOLT", what="func")
    'VOLT'
    """
    t = text.strip().strip('"').strip()
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_:]*", t):
        raise InstrumentError(f"{what}: expected a word such as VOLT or SCPI, got {text.strip()!r}")
    return t.upper()


#: characters a configured SCPI string may hold: printable ASCII without ``;`` (which would start a
#: second command in the same message)
_SAFE_COMMAND = re.compile(r"[\x20-\x3a\x3c-\x7e]+")


def check_command(text: str, *, what: str) -> str:
    """Refuse a configured SCPI string that could send more than one command.

    A ``;`` starts another command in the same message and a line end
    another message; control characters and non-ASCII have no place in a
    command either. Returns the string without surrounding spaces.

    Raises
    ------
    ValueError
        Naming ``what`` and the offending character.

    Examples
    --------
    >>> check_command(":DIG:LINE1:STAT 1", what="blank_command")
    ':DIG:LINE1:STAT 1'
    >>> check_command(":DIG:LINE1:STAT 1;:SOUR:VOLT:LEV 10", what="blank_command")
    Traceback (most recent call last):
    ...
    ValueError: blank_command: ';' is not allowed (one command only; it would send ':SOUR:VOLT:LEV 10' too)
    """
    t = str(text).strip(" ")
    where = f"{what}: " if what else ""
    if not t:
        raise ValueError(f"{where}empty command")
    if ";" in t:
        rest = t.split(";", 1)[1].strip()
        raise ValueError(f"{where}';' is not allowed (one command only; it would send {rest[:40]!r} too)")
    bad = next((c for c in t if not _SAFE_COMMAND.fullmatch(c)), None)
    if bad is not None:
        raise ValueError(f"{where}character {bad!r} is not allowed (printable ASCII, one command only)")
    return t


def default_terminations(resource: str) -> tuple[str, str]:
    """(read_termination, write_termination) for a resource string.

    Keithley 2400/2450 end messages with LF on every interface. A raw
    ``TCPIP ... SOCKET`` has no message-end signal at all, so the LF is
    required there; on GPIB/USBTMC/VXI-11 (``INSTR``) EOI/END also marks the
    end and LF is harmless. For ``ASRL`` set the termination in the config to
    match the instrument's RS-232 terminator setting.
    """
    return "\n", "\n"


def _is_timeout(exc: BaseException) -> bool:
    try:
        import pyvisa.constants as pc
        import pyvisa.errors as pe
    except ImportError:  # pragma: no cover
        return isinstance(exc, TimeoutError)
    return (isinstance(exc, pe.VisaIOError) and exc.error_code == pc.StatusCode.error_timeout) or \
        isinstance(exc, (TimeoutError, socket.timeout))


def _is_transport_error(exc: BaseException) -> bool:
    try:
        import pyvisa.errors as pe
    except ImportError:  # pragma: no cover
        pe = None
    if isinstance(exc, OSError):   # BrokenPipeError, ConnectionResetError, socket.timeout ...
        return True
    if pe is not None and isinstance(exc, (pe.VisaIOError, pe.InvalidSession)):
        return True
    return False


class SCPITransport:
    """One VISA resource, thread-safe, with exceptions translated to insitu errors.

    Parameters
    ----------
    resource : str
        VISA resource string (``TCPIP0::host::5025::SOCKET``, ``GPIB0::24::INSTR``, ``USB0::...``, ``ASRL3::INSTR``).
    visa_library : str
        ``"@py"`` (pyvisa-py), ``"@sim"`` / ``"file.yaml@sim"`` (pyvisa-sim), ``"@ivi"`` or a path to a VISA library.
    timeout_s : float
        Reply timeout in s (pyvisa takes ms).
    read_termination, write_termination : str, optional
        Default: :func:`default_terminations`.

    Example
    -------
    >>> t = SCPITransport.open("TCPIP0::127.0.0.1::5025::SOCKET")   # doctest: +SKIP
    >>> t.query("*IDN?")                                             # doctest: +SKIP
    """

    def __init__(self, inst, resource: str, visa_library: str, timeout_s: float,
                 read_termination: str | None, write_termination: str | None):
        self._inst = inst
        self.resource = resource
        self.visa_library = visa_library
        self.timeout_s = float(timeout_s)
        self.read_termination = read_termination
        self.write_termination = write_termination
        self._lock = threading.RLock()
        #: hold it to keep several queries together (e.g. a reading and its compliance state)
        self.lock = self._lock
        self._broken: str | None = None
        #: every message written, for debugging (bounded)
        self.sent: list[str] = []
        #: notes about stray input that was discarded (see :meth:`take_notices`)
        self.notices: list[str] = []

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, resource: str, *, visa_library: str = "@py", timeout_s: float = 2.0,
             read_termination: str | None = None, write_termination: str | None = None) -> "SCPITransport":
        """Open ``resource``; any failure (unreachable, bad string, missing library) -> ConnectionLost naming it."""
        rt, wt = default_terminations(resource)
        rt = rt if read_termination is None else read_termination
        wt = wt if write_termination is None else write_termination
        inst = _open_visa(resource, visa_library, timeout_s, rt, wt)
        return cls(inst, resource, visa_library, timeout_s, rt, wt)

    def reopen(self) -> None:
        """Close and open the same resource again (after a lost connection); sends nothing."""
        with self._lock:
            self._close_quietly()
            self._inst = _open_visa(self.resource, self.visa_library, self.timeout_s,
                                    self.read_termination, self.write_termination)
            self._broken = None

    def close(self) -> None:
        """Release the VISA session (sends nothing)."""
        with self._lock:
            self._close_quietly()

    def _close_quietly(self) -> None:
        inst, self._inst = self._inst, None
        if inst is None:
            return
        try:
            inst.close()
        except Exception:  # a dead session may refuse to close; nothing to save
            pass

    @property
    def is_open(self) -> bool:
        return self._inst is not None and self._broken is None

    # ------------------------------------------------------------------ traffic
    def _check_usable(self, command: str) -> None:
        if self._inst is None:
            raise ConnectionLost(f"{self.resource}: connection closed (cannot send '{command}')")
        if self._broken is not None:
            raise ConnectionLost(f"{self.resource}: connection lost earlier ({self._broken}); "
                                 f"reconnect before sending '{command}'")

    def _lost(self, command: str, exc: BaseException) -> ConnectionLost:
        cause = _describe(exc, self.timeout_s)
        self._broken = f"'{command}': {cause}"
        return ConnectionLost(f"{self.resource}: '{command}': {cause}")

    def write(self, command: str) -> None:
        """Send one program message."""
        with self._lock:
            self._check_usable(command)
            self._remember(command)
            try:
                self._inst.write(command)
            except Exception as exc:
                if _is_transport_error(exc):
                    raise self._lost(command, exc) from exc
                raise InstrumentError(f"{self.resource}: '{command}': {one_line(exc)}") from exc

    def query(self, command: str) -> str:
        """Send a query and return the reply without its termination (empty reply -> InstrumentError).

        Input that arrived before the query and that no query asked for is discarded first (and noted in
        :attr:`notices`), so a stray line cannot be taken for this reply.
        """
        with self._lock:
            self._check_usable(command)
            if self._input_pending():
                self._discard_stray(f"before '{command}'")
            self._remember(command)
            try:
                reply = self._inst.query(command)
            except UnicodeDecodeError as exc:
                self._broken = f"'{command}': undecodable reply"
                raise InstrumentError(f"{self.resource}: '{command}': reply is not text ({exc})") from exc
            except Exception as exc:
                if _is_transport_error(exc):
                    raise self._lost(command, exc) from exc
                raise InstrumentError(f"{self.resource}: '{command}': {one_line(exc)}") from exc
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s <- %r", self.resource, reply)
        reply = reply.strip()
        if not reply:
            raise InstrumentError(f"{self.resource}: '{command}': empty reply")
        return reply

    def query_parsed(self, command: str, parse: Callable[..., T]) -> T:
        """Send a query and parse its reply with ``parse(text, what=...)``; re-query once when out of step.

        A reply that ``parse`` refuses (wrong count of values, wrong format) may
        belong to an earlier query: the input is then cleared, and when stray
        lines were found there the query is sent again. A second refusal, or a
        refusal with nothing stray in the input (a genuinely bad reply), raises
        :class:`~insitu.core.errors.InstrumentError`.

        Parameters
        ----------
        command : str
            The query.
        parse : callable
            ``parse(text, what=str) -> value``; raises InstrumentError on a reply of the wrong form.

        Example
        -------
        >>> t.query_parsed(":SOUR:VOLT:LEV?", parse_number)      # doctest: +SKIP
        3.0
        """
        what = f"{self.resource}: '{command}'"
        with self._lock:
            try:
                return parse(self.query(command), what=what)
            except ConnectionLost:
                raise
            except InstrumentError as exc:
                stray = self._discard_stray(f"after the reply to '{command}' was refused ({exc})")
                if not stray:
                    raise
            try:
                return parse(self.query(command), what=what)
            except ConnectionLost:
                raise
            except InstrumentError as exc:
                raise InstrumentError(f"{exc} (re-queried after {len(stray)} stray reply line(s) were discarded: "
                                      f"the replies are out of step with the queries)") from None

    # ------------------------------------------------------------------ keeping replies in step
    def _input_pending(self) -> bool:
        """True when unread input is waiting (pyvisa-py sockets; other VISA libraries cannot say cheaply)."""
        inst = self._inst
        try:
            session = inst.visalib.sessions[inst.session]
        except Exception:
            return False
        if getattr(session, "_pending_buffer", None):
            return True
        sock = getattr(session, "interface", None)
        if isinstance(sock, socket.socket):
            try:
                readable, _, _ = select.select([sock], [], [], 0)
            except (OSError, ValueError):
                return False
            return bool(readable)
        return False

    def clear_input(self) -> list[str]:
        """Read and discard whatever input waits (until it stays quiet for ``CLEAR_QUIET_S``); return the lines."""
        lines: list[str] = []
        with self._lock:
            inst = self._inst
            if inst is None or self._broken is not None:
                return lines
            old = inst.timeout
            try:
                inst.timeout = max(1, int(CLEAR_QUIET_S * 1000))
                for _ in range(MAX_STRAY_LINES):
                    try:
                        line = inst.read()
                    except UnicodeDecodeError:
                        lines.append("<not text>")
                        continue
                    except Exception as exc:
                        if _is_timeout(exc):
                            break
                        if _is_transport_error(exc):
                            raise self._lost("(clearing the input)", exc) from exc
                        break
                    lines.append(line.strip())
            finally:
                try:
                    inst.timeout = old
                except Exception:
                    pass
        return lines

    def _discard_stray(self, when: str) -> list[str]:
        lines = self.clear_input()
        if lines:
            shown = "; ".join(repr(x) for x in lines[:3]) + (" ..." if len(lines) > 3 else "")
            note = f"{self.resource}: {len(lines)} reply line(s) nobody asked for discarded {when}: {shown}"
            log.warning(note)
            self.notices.append(one_line(note))
            del self.notices[:-100]
        return lines

    def take_notices(self) -> list[str]:
        """Return and forget the notes about discarded stray input (for the caller's event log)."""
        with self._lock:
            out, self.notices = self.notices, []
        return out

    def _remember(self, command: str) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s -> %r", self.resource, command)
        self.sent.append(command)
        if len(self.sent) > 1000:
            del self.sent[:500]

    # ------------------------------------------------------------------ helpers
    def query_number(self, command: str) -> float:
        return self.query_parsed(command, parse_number)

    def query_bool(self, command: str) -> bool:
        return self.query_parsed(command, parse_bool)

    def drain_errors(self, command: str = "SYST:ERR?") -> list[tuple[int, str]]:
        """Read the error queue until it reports code 0; returns the entries (oldest first)."""
        errors = []
        with self._lock:
            for _ in range(MAX_ERRORS):
                code, msg = self.query_parsed(command, parse_error)
                if code == 0:
                    return errors
                errors.append((code, msg))
        raise InstrumentError(f"{self.resource}: error queue did not empty after {MAX_ERRORS} reads "
                              f"(last: {errors[-1][0]},\"{errors[-1][1]}\")")

    def write_checked(self, command: str, error_query: str = "SYST:ERR?") -> None:
        """Write ``command`` then drain the error queue; raise InstrumentError naming the command on any entry."""
        with self._lock:
            self.write(command)
            try:
                errors = self.drain_errors(error_query)
            except ConnectionLost as exc:
                raise ConnectionLost(f"{exc} (checking the reply to '{command}', whose effect is unknown)") from exc
        if errors:
            listed = "; ".join(f'{c},"{m}"' for c, m in errors)
            raise InstrumentError(f"{self.resource}: '{command}' failed: {listed}")


def _describe(exc: BaseException, timeout_s: float) -> str:
    try:
        import pyvisa.constants as pc
        import pyvisa.errors as pe

        if isinstance(exc, pe.VisaIOError):
            if exc.error_code == pc.StatusCode.error_timeout:
                return f"no reply within {timeout_s:g} s (timeout; instrument off, busy or disconnected?)"
            if exc.error_code == pc.StatusCode.error_resource_not_found:
                return "resource not found (wrong address, or nothing listening there)"
            return f"VISA I/O error {exc.abbreviation}: {exc.description}"
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listening at that address/port)"
    if isinstance(exc, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)):
        return f"connection closed by the instrument ({type(exc).__name__})"
    if isinstance(exc, OSError):
        return one_line(f"{type(exc).__name__}: {exc.strerror or exc}")
    return one_line(f"{type(exc).__name__}: {exc}")


def one_line(text: str) -> str:
    """Collapse whitespace (including newlines) so an error stays one line."""
    return " ".join(str(text).split())


def _open_visa(resource: str, visa_library: str, timeout_s: float, rt: str | None, wt: str | None):
    """Open a pyvisa resource; any failure -> ConnectionLost with one line naming the resource and the cause."""
    try:
        import pyvisa
    except ImportError as exc:  # pragma: no cover
        raise InstrumentError(f"{resource}: pyvisa is not installed ({exc})") from None
    try:
        from pyvisa import rname

        rname.parse_resource_name(resource)
    except Exception as exc:
        raise InstrumentError(f"{resource!r}: not a valid VISA resource string "
                              f"(e.g. TCPIP0::192.0.2.10::5025::SOCKET, GPIB0::24::INSTR): {one_line(exc)}") from None
    try:
        rm = pyvisa.ResourceManager(visa_library)
    except Exception as exc:
        raise InstrumentError(f"{resource}: cannot load VISA library {visa_library!r}: "
                              f"{one_line(f'{type(exc).__name__}: {exc}')}") from None
    try:
        kw = {"timeout": max(1, int(round(timeout_s * 1000)))}
        if rt is not None:
            kw["read_termination"] = rt
        if wt is not None:
            kw["write_termination"] = wt
        inst = rm.open_resource(resource, **kw)
    except Exception as exc:
        raise ConnectionLost(f"{resource}: cannot connect: {_describe(exc, timeout_s)}") from None
    if resource.upper().endswith("::SOCKET"):
        _socket_options(inst)
    return inst


def _socket_options(inst) -> None:
    """Raw TCP socket: no Nagle delay (a write followed by a query would wait for the instrument's delayed ACK)
    and keep-alive (a dead peer is noticed). Best effort: not every VISA library supports both."""
    import socket

    try:
        from pyvisa import constants as pc

        inst.set_visa_attribute(pc.ResourceAttribute.tcpip_nodelay, pc.VisaBoolean.true)
        inst.set_visa_attribute(pc.ResourceAttribute.tcpip_keepalive, pc.VisaBoolean.true)
        return
    except Exception:
        pass
    try:  # pyvisa-py 0.8 does not route these attributes; set them on its socket directly
        sock = inst.visalib.sessions[inst.session].interface
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    except Exception:
        pass
