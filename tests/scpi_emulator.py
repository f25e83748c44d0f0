"""A strict SCPI emulator of a Keithley 2450 (and, cheaply, a 2400) on a loopback TCP socket.

The emulator is a small instrument model behind a real socket, so the real
driver code runs through pyvisa-py with a ``TCPIP0::127.0.0.1::PORT::SOCKET``
resource. It is strict where real instruments are strict:

* headers are matched in long or short form only (``:SOURce:VOLTage:LEVel`` =
  ``:SOUR:VOLT:LEV``; ``:SOURC`` is an undefined header), case-insensitive,
  with optional nodes (``[:LEVel]``) and numeric suffixes (``OUTPut[1]``,
  ``:DIGital:LINE<n>``);
* compound messages (``A;B``) resolve a part without a leading colon relative
  to the previous header, as SCPI-99 says;
* unknown headers queue ``-113,"Undefined header"``, values out of range
  ``-222,"Parameter data out of range"``, malformed numbers
  ``-104,"Data type error"``, missing values ``-109,"Missing parameter"``;
  ``SYST:ERR?`` pops the queue (``0,"No error"`` when empty).

State: output on/off, source level (V), source range (V), current limit (A),
NPLC, measure function, digital I/O lines. A resistive load gives the
readings: I = V/R, clamped at the current limit (then the output voltage
drops to I·R and the limit reports "tripped").

Every command message unit the instrument receives is logged with
``time.monotonic()`` in :attr:`Emulator2450.log`, and every applied state
change in :attr:`Emulator2450.changes`, so tests can assert what was (and
was not) sent, and when. :meth:`Emulator2450.drop_connection` closes the
socket from the instrument side; the emulator keeps its state and accepts a
new connection, as a real source-meter keeps sourcing when its controller
goes away.

Example
-------
>>> emu = Emulator2450(initial_output=True, initial_level=3.0)
>>> resource = emu.start()          # "TCPIP0::127.0.0.1::<port>::SOCKET"
>>> # ... talk to it with pyvisa / insitu.drivers.keithley ...
>>> emu.output_changes()            # [(t, True/False), ...] as applied
[]
>>> emu.stop()
"""
from __future__ import annotations

import math
import random
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass

__all__ = ["Emulator2450", "SCPIError", "IDN_2450", "IDN_2400"]

IDN_2450 = "KEITHLEY INSTRUMENTS,MODEL 2450,04488850,1.7.3c"
IDN_2400 = "KEITHLEY INSTRUMENTS INC.,MODEL 2400,1234567,C30   Mar 17 2006 09:29:29/A02  /K/J"

NO_VALUE = 9.91e37

_RANGES_V = {"2450": (0.02, 0.2, 2.0, 20.0, 200.0), "2400": (0.2, 2.0, 20.0, 200.0)}
_MAX_V = 210.0
_LIMIT_MIN_A, _LIMIT_MAX_A = 1e-9, 1.05
_NPLC_MIN, _NPLC_MAX = 0.01, 10.0

#: commands that change what the source does (used by :meth:`Emulator2450.state_changing_commands`)
CHANGE_KINDS = ("level", "output", "limit", "range", "function", "reset")


class SCPIError(Exception):
    """An error the instrument puts in its queue (code, message)."""

    def __init__(self, code: int, message: str):
        super().__init__(f"{code},{message}")
        self.code = code
        self.message = message


UNDEFINED_HEADER = (-113, "Undefined header")
OUT_OF_RANGE = (-222, "Parameter data out of range")
DATA_TYPE = (-104, "Data type error")
MISSING = (-109, "Missing parameter")
ILLEGAL_VALUE = (-224, "Illegal parameter value")
QUERY_ONLY = (-113, "Undefined header")  # a set form of a query-only header does not exist


# --------------------------------------------------------------------------------------------
# header patterns
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Node:
    long: str          # e.g. "VOLTAGE"
    short: str         # e.g. "VOLT"
    optional: bool
    suffix: str        # "" (none allowed), "1" (optional suffix 1), "n" (captured number)


def _parse_pattern(pattern: str) -> list[_Node]:
    """``"[:SOURce[1]]:VOLTage[:LEVel]"`` -> list of nodes."""
    nodes = []
    for m in re.finditer(r"(\[)?:?([A-Za-z*]+)(\[1\]|<n>)?\]?", pattern):
        opt, word, suf = m.group(1), m.group(2), m.group(3) or ""
        short = "".join(c for c in word if c.isupper() or c == "*") or word.upper()
        nodes.append(_Node(word.upper(), short, bool(opt), "n" if suf == "<n>" else ("1" if suf else "")))
    return nodes


def _match_word(node: _Node, token: str):
    """Return (ok, captured suffix or None)."""
    m = re.fullmatch(r"([A-Z*]+)(\d*)", token)
    if not m:
        return False, None
    word, digits = m.groups()
    if word not in (node.long, node.short):
        return False, None
    if digits:
        if node.suffix == "n":
            return True, int(digits)
        if node.suffix == "1" and digits == "1":
            return True, None
        return False, None
    if node.suffix == "n":
        return True, 1
    return True, None


def _match(nodes: list[_Node], tokens: list[str]):
    """Match header tokens against pattern nodes; returns list of captured suffixes or None."""
    if not nodes:
        return [] if not tokens else None
    node = nodes[0]
    if tokens:
        ok, cap = _match_word(node, tokens[0])
        if ok:
            rest = _match(nodes[1:], tokens[1:])
            if rest is not None:
                return ([cap] if cap is not None else []) + rest
    if node.optional:
        return _match(nodes[1:], tokens)
    return None


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    """Split ``text`` on ``sep`` where it stands outside single or double quotes (kept verbatim)."""
    out, cur, quote = [], [], None
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
            cur.append(ch)
        elif ch == sep:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def _split_params(text: str) -> list[str]:
    """Split a parameter list on commas outside quotes; strip blanks (no parameters: [])."""
    parts = [p.strip() for p in _split_outside_quotes(text, ",")]
    return [] if parts == [""] else parts


def _number(text: str, *, minimum: float, maximum: float, default: float | None = None) -> float:
    t = text.strip().upper()
    if t in ("MIN", "MINIMUM"):
        return minimum
    if t in ("MAX", "MAXIMUM"):
        return maximum
    if t in ("DEF", "DEFAULT") and default is not None:
        return default
    if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", t):
        raise SCPIError(*DATA_TYPE)
    v = float(t)
    if not (minimum <= v <= maximum):
        raise SCPIError(*OUT_OF_RANGE)
    return v


def _boolean(text: str) -> bool:
    t = text.strip().upper()
    if t in ("1", "ON"):
        return True
    if t in ("0", "OFF"):
        return False
    raise SCPIError(*DATA_TYPE)


def _fmt(v: float) -> str:
    return f"{v:+.6E}"


# --------------------------------------------------------------------------------------------
# the emulator
# --------------------------------------------------------------------------------------------
class Emulator2450:
    """A strict SCPI source-meter on ``127.0.0.1``.

    Parameters
    ----------
    initial_output : bool
        Output state as found by the first controller.
    initial_level : float
        Source level in V as found.
    resistance_ohm : float
        Resistive load between the terminals (Ω). May be changed while running
        (e.g. to simulate a short).
    model : {"2450", "2400"}
        ``"2450"``: native 2450 SCPI (``:SOUR:VOLT:ILIM``, ``:READ? "defbuffer1", READ, SOUR, REL``).
        ``"2400"``: 2400 SCPI (``:SENS:CURR:PROT``, ``:FORM:ELEM``, 5-element ``:READ?``
        with the compliance bit 3 in the status word).
    initial_limit : float
        Current limit (A) as found (2450 power-on default 105 µA).
    initial_range : float
        Source voltage range (V) as found; ``None`` means auto range.
    port : int
        TCP port (0: an ephemeral port chosen by the OS).
    noise_A : float
        Gaussian current noise added to readings (0: exact I = V/R).

    Attributes
    ----------
    log : list of (float, str)
        ``(time.monotonic(), message unit)`` for every command received, in order.
    changes : list of (float, str, object)
        ``(time.monotonic(), kind, value)`` for every applied change; kinds
        ``level`` (V), ``output`` (bool), ``limit`` (A), ``range`` (V or "AUTO"),
        ``function``, ``nplc``, ``reset``, ``digio`` ((line, state)).
    output, level_V, limit_A, range_V, nplc, source_function, sense_function : current state.
    connections : int
        Number of connections accepted so far.
    """

    def __init__(self, initial_output: bool = False, initial_level: float = 0.0, resistance_ohm: float = 50e6, *,
                 model: str = "2450", initial_limit: float = 1.05e-4, initial_range: float | None = None,
                 port: int = 0, noise_A: float = 0.0, seed: int = 0, idn: str | None = None):
        if model not in _RANGES_V:
            raise ValueError(f"model must be '2450' or '2400', got {model!r}")
        self.model = model
        self.idn = idn or (IDN_2450 if model == "2450" else IDN_2400)
        self.resistance_ohm = float(resistance_ohm)
        self.noise_A = float(noise_A)
        self._rng = random.Random(seed)
        self.output = bool(initial_output)
        self.level_V = float(initial_level)
        self._initial_level = self.level_V
        self.limit_A = float(initial_limit)
        self.range_auto = initial_range is None
        self.range_V = self._range_for(abs(initial_level)) if initial_range is None else float(initial_range)
        self.nplc = 1.0
        self.source_function = "VOLT"
        self.sense_function = "CURR"
        self.sense_range_auto = True
        self.sense_range_A = 1e-4
        self.digio_mode: dict[int, str] = {}
        self.digio_state: dict[int, int] = {i: 0 for i in range(1, 7)}
        self.ttl_out = 0                      # 2400 :SOUR2:TTL output lines (bit pattern)
        self.format_elements = ["VOLT", "CURR", "RES", "TIME", "STAT"]
        self.readback = True
        self.lang = "SCPI"                    # 2450 command set as reported by *LANG? (SCPI | TSP | SCPI2400)
        self.volt_mode = "FIX"
        self.trigger_count = 1
        self.errors: deque[tuple[int, str]] = deque()
        self.log: list[tuple[float, str]] = []
        self.changes: list[tuple[float, str, object]] = []
        self.connections = 0
        self._port = port
        self._t0 = time.monotonic()
        self._lock = threading.RLock()
        self._server: socket.socket | None = None
        self._client: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._running = threading.Event()
        self._overrides: list[list] = []       # [prefix_upper, reply_or_None, remaining]
        self._extras: list[list] = []          # [prefix_upper, stray line, remaining]
        self.silent = False                    # True: answer no query (the controller times out)
        self._commands = self._command_table()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> str:
        """Listen on 127.0.0.1 and serve in a daemon thread; returns the VISA resource string."""
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self._port))
        srv.listen(4)
        srv.settimeout(0.1)
        self._server = srv
        self.port = srv.getsockname()[1]
        self._running.set()
        self._thread = threading.Thread(target=self._serve, name=f"emulator{self.model}", daemon=True)
        self._thread.start()
        return self.resource

    @property
    def resource(self) -> str:
        return f"TCPIP0::127.0.0.1::{self.port}::SOCKET"

    def stop(self) -> None:
        """Stop serving and close every socket."""
        self._running.clear()
        self.drop_connection()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._server is not None:
            self._server.close()
            self._server = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def drop_connection(self) -> None:
        """Close the current connection from the instrument side (state is kept; a new connection is accepted)."""
        with self._lock:
            c, self._client = self._client, None
        if c is not None:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    # ------------------------------------------------------------------ fault injection
    def override(self, command_prefix: str, reply: str | None, count: int = 1) -> None:
        """Answer the next ``count`` queries starting with ``command_prefix`` with ``reply`` instead.

        ``reply=None`` sends nothing (the controller times out). The prefix is
        compared case-insensitively with the message unit as received.
        """
        with self._lock:
            self._overrides.append([command_prefix.upper(), reply, int(count)])

    def extra_reply_line(self, after_prefix: str, line: str, count: int = 1) -> None:
        """After the reply to the next ``count`` queries starting with ``after_prefix``, send ``line`` as one more
        reply line that no query asked for (a desynchronising stray line)."""
        with self._lock:
            self._extras.append([after_prefix.upper(), line, int(count)])

    def front_panel_level(self, level_V: float) -> None:
        """Someone else (front panel, another program) sets the source level: the change is logged as ``level``."""
        with self._lock:
            self.level_V = float(level_V)
            if self.range_auto or abs(level_V) > self.range_V:
                self.range_V = self._range_for(abs(level_V))
            self._change("level", self.level_V)

    # ------------------------------------------------------------------ log helpers
    def _changes_of(self, kind: str):
        with self._lock:
            return [(t, v) for t, k, v in self.changes if k == kind]

    def level_changes(self) -> list[tuple[float, float]]:
        """``[(time.monotonic(), level_V), ...]`` for every applied level setting."""
        return self._changes_of("level")

    def output_changes(self) -> list[tuple[float, bool]]:
        """``[(time.monotonic(), on), ...]`` for every applied output on/off command."""
        return self._changes_of("output")

    def limit_changes(self) -> list[tuple[float, float]]:
        """``[(time.monotonic(), current_limit_A), ...]`` for every applied current-limit setting."""
        return self._changes_of("limit")

    def state_changing_commands(self) -> list[tuple[float, str, object]]:
        """Applied changes of level, output, limit, range, source function or resets."""
        with self._lock:
            return [c for c in self.changes if c[1] in CHANGE_KINDS]

    def commands(self) -> list[str]:
        """The message units received, without times."""
        with self._lock:
            return [c for _, c in self.log]

    def level_series(self) -> tuple[list[float], list[float]]:
        """Step series of the programmed level: times (monotonic s) and levels (V).

        Starts at the emulator's creation with the initial level; an output-off
        period is not folded in (see :meth:`output_changes`).
        """
        ts, vs = [self._t0], [self._initial_level]
        for t, v in self.level_changes():
            ts.append(t)
            vs.append(v)
        return ts, vs

    def clear_log(self) -> None:
        with self._lock:
            self.log.clear()
            self.changes.clear()

    # ------------------------------------------------------------------ physics
    def _range_for(self, v: float) -> float:
        for r in _RANGES_V[self.model]:
            if v <= r * 1.0000001:
                return r
        return _RANGES_V[self.model][-1]

    def _max_level(self) -> float:
        if self.range_auto:
            return _MAX_V
        return min(_MAX_V, self.range_V * 1.05)

    def reading(self) -> tuple[float, float, bool]:
        """(voltage at the terminals V, current A, limit tripped) for the present state."""
        if not self.output:
            return 0.0, 0.0, False
        r = self.resistance_ohm
        i = self.level_V / r
        if abs(i) > self.limit_A:
            i = math.copysign(self.limit_A, i)
            v = i * r
            tripped = True
        else:
            v = self.level_V
            tripped = False
        if self.noise_A:
            i += self._rng.gauss(0.0, self.noise_A)
        return v, i, tripped

    @property
    def tripped(self) -> bool:
        return self.reading()[2]

    # ------------------------------------------------------------------ serving
    def _serve(self) -> None:
        while self._running.is_set():
            try:
                conn, _ = self._server.accept()
            except (socket.timeout, OSError):
                continue
            try:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            _quickack(conn)
            with self._lock:
                old, self._client = self._client, conn
                self.connections += 1
            if old is not None:     # one controller at a time: the new one wins
                try:
                    old.close()
                except OSError:
                    pass
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        buf = b""
        try:
            conn.settimeout(0.2)
        except OSError:      # dropped before this thread started
            return
        while self._running.is_set():
            with self._lock:
                if self._client is not conn:
                    break
            try:
                data = conn.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            _quickack(conn)
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode("ascii", errors="replace").strip("\r ")
                if not text:
                    continue
                replies = self.process(text)
                if replies:
                    try:
                        conn.sendall((";".join(replies) + "\n").encode("ascii"))
                    except OSError:
                        break
        try:
            conn.close()
        except OSError:
            pass

    # ------------------------------------------------------------------ SCPI
    def process(self, message: str) -> list[str]:
        """Execute one program message (may hold several units separated by ';'); return query replies."""
        replies: list[str] = []
        parent: list[str] = []
        for unit in _split_units(message):
            unit = unit.strip()
            if not unit:
                continue
            now = time.monotonic()
            with self._lock:
                self.log.append((now, unit))
                override = self._take_override(unit)
            header, _, params = unit.partition(" ")
            if "\t" in header:
                header, _, more = header.partition("\t")
                params = more + params
            header = header.strip()
            is_query = header.endswith("?")
            if is_query:
                header = header[:-1]
            if header.startswith("*"):
                tokens = [header.upper()]
                parent_next = parent
            else:
                absolute = header.startswith(":")
                tokens = [t for t in header.lstrip(":").upper().split(":")]
                if not absolute and parent:
                    tokens = parent + tokens
                parent_next = tokens[:-1]
            parent = parent_next
            if override is not None:
                if override[0] is not None:
                    replies.append(override[0])
                continue
            try:
                reply = self._execute(tokens, is_query, params.strip())
            except SCPIError as exc:
                with self._lock:
                    self.errors.append((exc.code, exc.message))
                continue
            if is_query and reply is not None and not self.silent:
                replies.append(reply + self._take_extra(unit))
        return replies

    def _take_extra(self, unit: str) -> str:
        u = unit.upper()
        with self._lock:
            for ex in self._extras:
                if u.startswith(ex[0]) and ex[2] > 0:
                    ex[2] -= 1
                    if ex[2] == 0:
                        self._extras.remove(ex)
                    return "\n" + ex[1]
        return ""

    def _take_override(self, unit: str):
        u = unit.upper()
        for ov in self._overrides:
            if u.startswith(ov[0]) and ov[2] > 0:
                ov[2] -= 1
                if ov[2] == 0:
                    self._overrides.remove(ov)
                return (ov[1],)
        return None

    def _execute(self, tokens: list[str], is_query: bool, params: str):
        for nodes, setter, getter, models in self._commands:
            if self.model not in models:
                continue
            caps = _match(nodes, tokens)
            if caps is None:
                continue
            fn = getter if is_query else setter
            if fn is None:
                raise SCPIError(*UNDEFINED_HEADER)
            args = _split_params(params)
            with self._lock:
                return fn(caps, args)
        raise SCPIError(*UNDEFINED_HEADER)

    def _change(self, kind: str, value) -> None:
        self.changes.append((time.monotonic(), kind, value))

    # -- command implementations ------------------------------------------------
    def _command_table(self):
        both = ("2450", "2400")
        k2450 = ("2450",)
        k2400 = ("2400",)

        def one(args):
            if not args or not args[0]:
                raise SCPIError(*MISSING)
            if len(args) > 1:
                raise SCPIError(-108, "Parameter not allowed")
            return args[0]

        def none(args):
            if args:
                raise SCPIError(-108, "Parameter not allowed")

        # common
        def idn_q(c, a):
            none(a)
            return self.idn

        def rst(c, a):
            none(a)
            self._reset()

        def cls(c, a):
            none(a)
            self.errors.clear()

        def opc_q(c, a):
            return "1"

        def err_q(c, a):
            if self.errors:
                code, msg = self.errors.popleft()
            else:
                code, msg = 0, "No error"
            return f'{code},"{msg}"'

        def err_count_q(c, a):
            return str(len(self.errors))

        def err_clear(c, a):
            self.errors.clear()

        def lang_q(c, a):
            return self.lang

        # output
        def outp(c, a):
            on = _boolean(one(a))
            self.output = on
            self._change("output", on)

        def outp_q(c, a):
            return "1" if self.output else "0"

        # source function
        def sour_func(c, a):
            f = one(a).upper()
            if f in ("VOLT", "VOLTAGE"):
                f = "VOLT"
            elif f in ("CURR", "CURRENT"):
                f = "CURR"
            else:
                raise SCPIError(*ILLEGAL_VALUE)
            if self.output and f != self.source_function and self.model == "2450":
                raise SCPIError(-221, "Settings conflict")
            self.source_function = f
            self._change("function", f)

        def sour_func_q(c, a):
            return self.source_function

        # level
        def level(c, a):
            v = _number(one(a), minimum=-_MAX_V, maximum=_MAX_V, default=0.0)
            if abs(v) > self._max_level() + 1e-12:
                raise SCPIError(*OUT_OF_RANGE)
            if self.range_auto:
                self.range_V = self._range_for(abs(v))
            self.level_V = v
            self._change("level", v)

        def level_q(c, a):
            return _fmt(self.level_V)

        def rang(c, a):
            v = _number(one(a), minimum=-_MAX_V, maximum=_MAX_V)
            r = self._range_for(abs(v))
            if abs(self.level_V) > min(_MAX_V, r * 1.05):
                raise SCPIError(-221, "Settings conflict")
            self.range_V = r
            self.range_auto = False
            self._change("range", r)

        def rang_q(c, a):
            return _fmt(self.range_V)

        def rang_auto(c, a):
            self.range_auto = _boolean(one(a))
            if self.range_auto:
                self.range_V = self._range_for(abs(self.level_V))
            self._change("range", "AUTO" if self.range_auto else self.range_V)

        def rang_auto_q(c, a):
            return "1" if self.range_auto else "0"

        # current limit
        def limit(c, a):
            v = _number(one(a), minimum=_LIMIT_MIN_A, maximum=_LIMIT_MAX_A, default=1.05e-4)
            self.limit_A = v
            self._change("limit", v)

        def limit_q(c, a):
            return _fmt(self.limit_A)

        def trip_q(c, a):
            return "1" if self.tripped else "0"

        # sense
        def sens_func(c, a):
            f = one(a).strip("'\"").upper()
            if f in ("CURR", "CURRENT", "CURR:DC", "CURRENT:DC"):
                self.sense_function = "CURR"
            elif f in ("VOLT", "VOLTAGE", "VOLT:DC", "VOLTAGE:DC"):
                self.sense_function = "VOLT"
            else:
                raise SCPIError(*ILLEGAL_VALUE)

        def sens_func_q(c, a):
            return '"CURR:DC"' if self.sense_function == "CURR" else '"VOLT:DC"'

        def sens_conc(c, a):
            _boolean(one(a))

        def nplc(c, a):
            self.nplc = _number(one(a), minimum=_NPLC_MIN, maximum=_NPLC_MAX, default=1.0)
            self._change("nplc", self.nplc)

        def nplc_q(c, a):
            return _fmt(self.nplc)

        def sens_rang(c, a):
            self.sense_range_A = _number(one(a), minimum=0.0, maximum=1.05)
            self.sense_range_auto = False

        def sens_rang_auto(c, a):
            self.sense_range_auto = _boolean(one(a))

        def sens_rang_auto_q(c, a):
            return "1" if self.sense_range_auto else "0"

        # readings
        def read_2450(c, a):
            if not a:
                v, i, _ = self.reading()
                return _fmt(i if self.sense_function == "CURR" else v)
            buf = a[0].strip("'\"").lower()
            if buf not in ("defbuffer1", "defbuffer2"):
                raise SCPIError(*ILLEGAL_VALUE)
            v, i, _ = self.reading()
            t = time.monotonic() - self._t0
            out = []
            for el in (x.upper() for x in a[1:]) if len(a) > 1 else ["READ"]:
                if el in ("READ", "READING"):
                    out.append(_fmt(i if self.sense_function == "CURR" else v))
                elif el in ("SOUR", "SOURCE"):
                    out.append(_fmt(v if self.source_function == "VOLT" else i))
                elif el in ("REL", "RELATIVE", "SEC", "SECONDS"):
                    out.append(_fmt(t))
                else:
                    raise SCPIError(*ILLEGAL_VALUE)
            return ",".join(out)

        def form_elem(c, a):
            els = []
            for x in a:
                x = x.upper()
                full = {"VOLTAGE": "VOLT", "CURRENT": "CURR", "RESISTANCE": "RES", "STATUS": "STAT"}.get(x, x)
                if full not in ("VOLT", "CURR", "RES", "TIME", "STAT"):
                    raise SCPIError(*ILLEGAL_VALUE)
                els.append(full)
            if not els:
                raise SCPIError(*MISSING)
            self.format_elements = els

        def form_elem_q(c, a):
            return ",".join(self.format_elements)

        def read_2400(c, a):
            none(a)
            if not self.output:
                raise SCPIError(803, "Output disabled")
            v, i, tripped = self.reading()
            t = time.monotonic() - self._t0
            status = 4 | (8 if tripped else 0)        # bit 2 front terminals, bit 3 compliance
            vals = {"VOLT": _fmt(v), "CURR": _fmt(i), "RES": _fmt(NO_VALUE), "TIME": _fmt(t),
                    "STAT": _fmt(float(status))}
            # the 2400 sends the chosen elements in a fixed order
            return ",".join(vals[k] for k in ("VOLT", "CURR", "RES", "TIME", "STAT") if k in self.format_elements)

        def abort(c, a):
            pass

        def readback(c, a):
            self.readback = _boolean(one(a))

        def readback_q(c, a):
            return "1" if self.readback else "0"

        def volt_mode(c, a):
            m = one(a).upper()
            if m not in ("FIX", "FIXED", "SWE", "SWEEP", "LIST"):
                raise SCPIError(*ILLEGAL_VALUE)
            self.volt_mode = m[:3] if m != "LIST" else m

        def volt_mode_q(c, a):
            return self.volt_mode

        def trig_count(c, a):
            self.trigger_count = int(_number(one(a), minimum=1, maximum=2500))

        def trig_count_q(c, a):
            return str(self.trigger_count)

        # digital I/O (2450 rear-panel lines 1..6)
        def dig_mode(c, a):
            n = c[0]
            if not 1 <= n <= 6:
                raise SCPIError(*UNDEFINED_HEADER)
            if len(a) != 2:
                raise SCPIError(*MISSING)
            self.digio_mode[n] = ",".join(x.upper() for x in a)

        def dig_mode_q(c, a):
            return self.digio_mode.get(c[0], "DIG,IN")

        def dig_state(c, a):
            n = c[0]
            if not 1 <= n <= 6:
                raise SCPIError(*UNDEFINED_HEADER)
            if not self.digio_mode.get(n, "").startswith("DIG,OUT"):
                raise SCPIError(-221, "Settings conflict")
            s = int(_boolean(one(a)))
            self.digio_state[n] = s
            self._change("digio", (n, s))

        def dig_state_q(c, a):
            return str(self.digio_state.get(c[0], 0))

        # 2400 digital output (SOURce2:TTL)
        def ttl(c, a):
            if c[0] != 2:
                raise SCPIError(*UNDEFINED_HEADER)
            v = int(_number(one(a), minimum=0, maximum=15))
            self.ttl_out = v
            self._change("digio", ("TTL", v))

        def ttl_q(c, a):
            if c[0] != 2:
                raise SCPIError(*UNDEFINED_HEADER)
            return str(self.ttl_out)

        def cmd(pattern, setter=None, getter=None, models=both):
            return (_parse_pattern(pattern), setter, getter, models)

        return [
            cmd("*IDN", None, idn_q),
            cmd("*RST", rst),
            cmd("*CLS", cls),
            cmd("*OPC", lambda c, a: None, opc_q),
            cmd("*LANG", None, lang_q, k2450),
            cmd(":SYSTem:ERRor[:NEXT]", None, err_q),
            cmd(":SYSTem:ERRor:COUNt", None, err_count_q),
            cmd(":SYSTem:ERRor:CLEar", err_clear, None, k2450),
            cmd(":SYSTem:PRESet", rst),
            cmd(":OUTPut[1][:STATe]", outp, outp_q),
            cmd(":SOURce[1]:FUNCtion[:MODE]", sour_func, sour_func_q),
            cmd(":SOURce[1]:VOLTage[:LEVel][:IMMediate][:AMPLitude]", level, level_q),
            cmd(":SOURce[1]:VOLTage:RANGe", rang, rang_q),
            cmd(":SOURce[1]:VOLTage:RANGe:AUTO", rang_auto, rang_auto_q),
            cmd(":SOURce[1]:VOLTage:ILIMit[:LEVel]", limit, limit_q, k2450),
            cmd(":SOURce[1]:VOLTage:ILIMit[:LEVel]:TRIPped", None, trip_q, k2450),
            cmd("[:SENSe[1]]:CURRent[:DC]:PROTection[:LEVel]", limit, limit_q, k2400),
            cmd("[:SENSe[1]]:CURRent[:DC]:PROTection:TRIPped", None, trip_q, k2400),
            cmd("[:SENSe[1]]:FUNCtion[:ON]", sens_func, sens_func_q),
            cmd("[:SENSe[1]]:FUNCtion:CONCurrent", sens_conc, None, k2400),
            cmd("[:SENSe[1]]:CURRent[:DC]:NPLCycles", nplc, nplc_q),
            cmd("[:SENSe[1]]:CURRent[:DC]:RANGe[:UPPer]", sens_rang, None),
            cmd("[:SENSe[1]]:CURRent[:DC]:RANGe:AUTO", sens_rang_auto, sens_rang_auto_q),
            cmd(":READ", None, read_2450, k2450),
            cmd(":READ", None, read_2400, k2400),
            cmd(":FORMat:ELEMents[:SENSe[1]]", form_elem, form_elem_q, k2400),
            cmd(":ABORt", abort),
            cmd(":SOURce[1]:VOLTage:READ:BACK", readback, readback_q, k2450),
            cmd(":SOURce[1]:VOLTage:MODE", volt_mode, volt_mode_q, k2400),
            cmd(":TRIGger[:SEQuence[1]]:COUNt", trig_count, trig_count_q, k2400),
            cmd(":DIGital:LINE<n>:MODE", dig_mode, dig_mode_q, k2450),
            cmd(":DIGital:LINE<n>:STATe", dig_state, dig_state_q, k2450),
            cmd(":SOURce<n>:TTL[:LEVel][:DEFault]", ttl, ttl_q, k2400),
        ]

    def _reset(self) -> None:
        self.output = False
        self.level_V = 0.0
        self.limit_A = 1.05e-4
        self.range_auto = True
        self.range_V = self._range_for(0.0)
        self.nplc = 1.0
        self.source_function = "VOLT"
        self.sense_function = "CURR"
        self._change("reset", True)


def _quickack(conn: socket.socket) -> None:
    """ACK at once (Linux): the controller's Nagle algorithm holds a second small write until the first is ACKed,
    and a delayed ACK would add ~40 ms to every write-then-query pair."""
    opt = getattr(socket, "TCP_QUICKACK", None)
    if opt is not None:
        try:
            conn.setsockopt(socket.IPPROTO_TCP, opt, 1)
        except OSError:
            pass


def _split_units(message: str) -> list[str]:
    """Split a program message on ';' outside quotes."""
    return _split_outside_quotes(message, ";")
