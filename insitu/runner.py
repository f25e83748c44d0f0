"""One runner: a protocol (or a recorded session) into one session file, whoever starts it.

``insitu run``, ``insitu demo``, the GUI and ``insitu replay --out`` all go
through this module, so a session holds the same things whichever started it:

* the instruments are opened through :func:`insitu.instruments.open_instruments`
  (connecting changes no output);
* one :class:`~insitu.core.session.SessionWriter` records every record, with the
  protocol YAML, the instruments TOML, the program and its version;
* at the end, whatever happened, ``/entry/instrument/<part>`` gets each part's
  identity and settings (found and set) and a virtual specimen its ground truth
  under ``/entry/sample``; then the file is closed with its status
  (``complete``, ``aborted`` or ``fault``);
* SIGINT and SIGTERM (when run on the main thread) ask the engine to stop: it
  ramps to 0 V and switches the output off;
* a log file ``<session>.log`` is written next to the session (INFO; DEBUG with
  ``insitu --verbose``, which includes every SCPI write and read);
* the outcome maps to the exit code: 0 complete, 1 user error, 2 instrument
  fault, 3 stopped early (:attr:`Runner.exit_code`).

Example
-------
>>> from insitu.control.config import mock_toml, parse_instruments
>>> from insitu.control.protocol import parse_protocol
>>> text = mock_toml()
>>> p = parse_protocol('''
... limits: {max_voltage: 5, compliance_current: 1.0e-6, max_slew_rate: 1}
... steps: [{ramp: {to: 2}}, {hold: {duration: 2}}, {ramp: {to: 0}}]''')
>>> r = ProtocolRunner(p, parse_instruments(text), text, "run.h5", time_scale=100)  # doctest: +SKIP
>>> r.run(), r.exit_code                                                           # doctest: +SKIP
('complete', 0)
"""
from __future__ import annotations

import logging
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from insitu.core.errors import EXIT_INSTRUMENT, EXIT_OK, EXIT_STOPPED, InsituError, StoppedEarly, UserError
from insitu.core.records import EventKind, EventRecord

log = logging.getLogger(__name__)
#: the session's events (also in /entry/events) go to the log file under this name (this logger and the
#: runner's own show on the command line's stderr only with --verbose: see insitu.cli)
event_log = logging.getLogger("insitu.events")

#: event kinds logged as warnings / errors (the rest as INFO)
_WARN_KINDS = {EventKind.SUSPENDER, EventKind.COMPLIANCE, EventKind.STALL, EventKind.ABORT, EventKind.RECONNECT,
               EventKind.FRAMES}
_ERROR_KINDS = {EventKind.SHORT, EventKind.FAULT}



# ---------------------------------------------------------------------------------------------- logging
def log_path_for(session_path) -> Path:
    """The log file next to a session: ``run.h5`` -> ``run.log``.

    Examples
    --------
    >>> log_path_for("/data/run-2.h5").name
    'run-2.log'
    """
    return Path(session_path).with_suffix(".log")


@contextmanager
def session_log(path):
    """Write the ``insitu`` loggers to ``path`` while the block runs (INFO; DEBUG when the ``insitu`` logger
    is at DEBUG, as ``insitu --verbose`` sets it). ``path=None``: no file. Yields the handler (or None)."""
    if path is None:
        yield None
        return
    root = logging.getLogger("insitu")
    old_level = root.level
    if not root.isEnabledFor(logging.INFO):   # a library caller that configured nothing still gets a log
        root.setLevel(logging.INFO)
    try:
        handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    except OSError as exc:
        root.setLevel(old_level)
        raise UserError(f"{path}: cannot write the log file: {exc.strerror or exc}") from None
    handler.setLevel(logging.DEBUG if root.isEnabledFor(logging.DEBUG) else logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s",
                                           "%Y-%m-%dT%H:%M:%S"))
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(old_level)


def log_event_sink(record) -> None:
    """A sink writing the run's :class:`~insitu.core.records.EventRecord` s to the log (the session's
    ``/entry/events`` as text lines, with their experiment times)."""
    if not isinstance(record, EventRecord):
        return
    level = logging.ERROR if record.kind in _ERROR_KINDS else \
        logging.WARNING if record.kind in _WARN_KINDS else logging.INFO
    event_log.log(level, "t=%.3f s %s: %s", record.time_s, record.kind, record.message)


# ---------------------------------------------------------------------------------------------- signals
def install_signal_handlers(stop, program: str = "insitu", resume=None):
    """SIGINT/SIGTERM call ``stop(signal name)`` (the engine ramps down); SIGUSR1 calls ``resume()`` when
    given (after an ``on_seed: hold``); returns a function restoring the old handlers. Off the main thread
    (GUI worker, tests) nothing is installed."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    n = {"signals": 0}

    def handler(signum, frame):
        name = signal.Signals(signum).name
        n["signals"] += 1
        stop(name)
        log.warning("%s received: stopping", name)
        if n["signals"] == 1:
            print(f"\n{program}: {name}: stopping - ramping to 0 V and switching the output off, please wait",
                  file=sys.stderr, flush=True)
        else:
            print(f"\n{program}: {name} again: still ramping down to 0 V; the output must not be left on",
                  file=sys.stderr, flush=True)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    if resume is not None and hasattr(signal, "SIGUSR1"):
        old[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, lambda signum, frame: resume())

    def restore():
        for s, h in old.items():
            signal.signal(s, h)

    return restore


# ---------------------------------------------------------------------------------------------- metadata
def _part_info(part, extra: dict | None = None) -> dict:
    """``part.info()`` (identity and settings) or at least its identity, plus ``extra``."""
    info = {}
    fn = getattr(part, "info", None)
    if callable(fn):
        try:
            info = dict(fn())
        except Exception as exc:  # an instrument that cannot say more still gets its identity
            log.warning("%s.info() failed: %s", type(part).__name__, exc)
            info = {}
    if not info:
        info = {"idn": str(getattr(part, "idn", None) or type(part).__name__)}
    info.update(extra or {})
    return info


def instrument_metadata(instruments, protocol, found_state=None) -> dict[str, dict]:
    """``/entry/instrument/<name>`` groups of a run: identity and settings of each part, found and set.

    Parameters
    ----------
    instruments : Instruments
    protocol : Protocol
        Its limits are what the source-meter was set to.
    found_state : SourceState, optional
        The source-meter's state as the engine found it on connecting.

    Examples
    --------
    >>> from types import SimpleNamespace as S
    >>> inst = S(source_meter=S(idn="MOCK SM"), blanker=None, frames=None)
    >>> p = S(limits=S(compliance_current=1e-6, max_voltage=5.0))
    >>> instrument_metadata(inst, p)["source_meter"]
    {'idn': 'MOCK SM', 'set_current_limit_A': 1e-06, 'set_voltage_range_V': 5.0}
    """
    found = {} if found_state is None else {"found_output_on": bool(found_state.output_on),
                                            "found_level_V": found_state.level_V,
                                            "found_current_limit_A": found_state.current_limit_A}
    out = {"source_meter": _part_info(instruments.source_meter, {
        **found, "set_current_limit_A": protocol.limits.compliance_current,
        "set_voltage_range_V": protocol.limits.max_voltage})}
    if instruments.blanker is not None:
        out["beam_blanker"] = _part_info(instruments.blanker)
    if instruments.frames is not None:
        out["frames"] = _part_info(instruments.frames)
    return out


def identities(instruments) -> str:
    """``"idn | idn | idn"`` of the parts that are there (for a status bar)."""
    ids = [str(getattr(p, "idn", "") or "") for p in (instruments.source_meter, instruments.blanker,
                                                        instruments.frames) if p is not None]
    return " | ".join(i for i in ids if i) or "instruments open"


def _exit_code(exc: BaseException | None) -> int:
    if exc is None:
        return EXIT_OK
    if isinstance(exc, InsituError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_STOPPED
    return EXIT_INSTRUMENT


def _status_of(exc: BaseException | None) -> str:
    """The session status an outcome leaves in the file."""
    if exc is None:
        return "complete"
    if isinstance(exc, (StoppedEarly, UserError, KeyboardInterrupt)):
        return "aborted"
    return "fault"


# ---------------------------------------------------------------------------------------------- runners
class Stoppable:
    """Holds a record producer that is built later (in a worker thread); a stop asked for before it
    exists is kept and passed on when it is published. Thread-safe; ``stop`` returns at once."""

    def __init__(self):
        self._lock = threading.Lock()
        self._stop_reason: str | None = None
        self.producer = None

    def _stop_producer(self, producer, reason: str) -> None:
        producer.stop()

    def stop(self, reason: str = "operator") -> None:
        """Stop the producer now, or as soon as it exists."""
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = str(reason)
            producer = self.producer
        if producer is not None:
            self._stop_producer(producer, reason)

    def _publish(self, producer) -> bool:
        """Publish the producer; if a stop came first, pass it on and return False."""
        with self._lock:
            self.producer = producer
            reason = self._stop_reason
        if reason is not None:
            self._stop_producer(producer, reason)
            return False
        return True

    def pause(self) -> None:
        if self.producer is not None and hasattr(self.producer, "pause"):
            self.producer.pause()

    def resume(self) -> None:
        if self.producer is not None and hasattr(self.producer, "resume"):
            self.producer.resume()


class Runner(Stoppable):
    """One record producer (engine or replay player) into one session file; the shared sequence.

    Subclasses build the producer (:meth:`_open`), its session writer
    (:meth:`_writer`) and metadata (:meth:`_metadata`). :meth:`run` owns the
    order: log file, open, writer, signals, run, metadata, close with status,
    exit code. :meth:`request_abort` is thread-safe and may come at any time,
    also before :meth:`run` (nothing is switched on then).

    Attributes after :meth:`run`: ``status`` (the file's: ``complete``,
    ``aborted``, ``fault``), ``exit_code``, ``error`` (the exception, or None).
    """

    program = "insitu"

    def __init__(self, out=None, *, overwrite: bool = False, program: str | None = None,
                 handle_signals: bool = True):
        self.out = None if out is None else Path(out)
        self.overwrite = bool(overwrite)
        if program is not None:
            self.program = program
        super().__init__()
        self.handle_signals = handle_signals
        self.log_path = None if self.out is None else log_path_for(self.out)
        if self.out is not None:   # checked before the log file next to it is opened
            if self.out.exists() and not overwrite:
                raise UserError(f"{self.out}: file exists; refusing to overwrite it (use --overwrite)")
            if not self.out.parent.is_dir():
                raise UserError(f"{self.out.parent}: output folder does not exist")
        self.writer = None
        self.status: str | None = None
        self.exit_code: int | None = None
        self.error: BaseException | None = None

    # -- control (thread-safe)
    def request_abort(self, reason: str = "operator") -> None:
        """Stop: the engine ramps to 0 V and switches off; a replay stops at its next record."""
        self.stop(reason)

    def _attach(self, producer) -> None:
        """Publish the producer; a stop that came first stops the run before it starts."""
        if not self._publish(producer):
            raise StoppedEarly(f"{self._stop_reason}: stopped before the run started (nothing switched on)")

    # -- the sequence
    def run(self, sinks=()) -> str:
        """Run to the end (blocking); returns the producer's outcome (``complete``; ``stopped`` for a replay
        stopped early). Raises what the run raised (StoppedEarly, InstrumentError, UserError ...) after the
        file is closed with its status."""
        exc: BaseException | None = None
        result = None
        with session_log(self.log_path):
            log.info("%s: %s", self.program, self._describe())
            try:
                result = self._run_guarded(list(sinks))
            except BaseException as e:
                exc = e
                raise
            finally:
                self.error = exc
                self.exit_code = _exit_code(exc) if exc is not None else \
                    EXIT_OK if result == "complete" else EXIT_STOPPED
                if exc is None and self.status is None:
                    self.status = "complete"
                log.log(logging.INFO if exc is None else logging.ERROR, "%s: %s%s (exit %d)", self.program,
                        self.status or _status_of(exc), f": {exc}" if exc is not None else "", self.exit_code)
        return result

    def _run_guarded(self, sinks) -> str:
        if self._stop_reason is not None:
            raise StoppedEarly(f"{self._stop_reason}: stopped before the run started (nothing switched on)")
        self._open()
        try:
            self.writer = self._writer()
            run_sinks = ([self.writer] if self.writer is not None else []) + [log_event_sink, *sinks]
            status = "fault"
            restore = lambda: None  # noqa: E731
            try:
                self._attach(self._producer(run_sinks))
                producer = self.producer
                if self.handle_signals:
                    restore = install_signal_handlers(self.request_abort, self.program, self.resume)
                result = self._start(producer)
                status = "complete" if result == "complete" else "aborted"
            except BaseException as exc:
                status = _status_of(exc)
                raise
            finally:
                restore()
                self.status = status
                self._finish_file(status)
        finally:
            self._close()
        w = self.writer
        if w is not None and w.error is not None:   # the run ended, but the file could not take everything
            from insitu.core.session import RecordingFailed, _reason

            self.status = "recording_failed"
            raise RecordingFailed(f"recording failed: {self.out}: {_reason(w.error)}; the run itself ended "
                                  f"{status} (output off at 0 V); the file's status is recording_failed")
        return result

    def _finish_file(self, status: str) -> None:
        w = self.writer
        if w is None:
            return
        try:
            try:
                self._metadata(w)
            except Exception as exc:  # metadata must not hide the run's outcome
                log.warning("could not write the instrument metadata: %s", exc)
                print(f"{self.program}: warning: could not write instrument metadata: {exc}", file=sys.stderr)
        finally:
            w.close(status)

    # -- what subclasses provide
    def _describe(self) -> str:
        return f"-> {self.out}"

    def _open(self) -> None:
        """Open what the producer needs (instruments, a recorded file)."""

    def _writer(self):
        return None

    def _producer(self, sinks):
        raise NotImplementedError

    def _start(self, producer) -> str:
        return producer.run()

    def _stop_producer(self, producer, reason: str) -> None:
        producer.stop()

    def _metadata(self, writer) -> None:
        pass

    def _close(self) -> None:
        pass


class ProtocolRunner(Runner):
    """A protocol on instruments (real, mock or virtual) through the :class:`~insitu.control.engine.Engine`.

    Parameters
    ----------
    protocol : Protocol
    config : InstrumentsConfig
    config_text : str
        The instruments TOML as written (stored in the session).
    out : path of the session file
    overwrite : bool
    time_scale : float
        Experiment seconds per wall second; only with mock instruments.
    seed : int
        Virtual specimen seed (mock instruments).
    program : str
        ``/entry/program`` (``insitu run``, ``insitu demo``, ``insitu gui``).
    open_instruments : callable, optional
        ``open_instruments(config, clock, seed=...) -> Instruments``; default
        :func:`insitu.instruments.open_instruments` (the demo passes its specimen, tests plain mocks).
    status_stream : text stream, optional
        The engine's one-line live status (``None``: none).
    on_seed_watcher : callable, optional
        Called (in the run's thread, before the engine starts) with the
        :class:`~insitu.seedwatch.SeedWatcher` of a protocol that reacts to seeds, which then
        analyses every recorded frame: a live view can add itself to its ``result_sinks`` and
        show that analysis instead of running a second detector (the GUI does). Not called
        when the protocol has no seed rules; a failing callback only costs the view.
    """

    def __init__(self, protocol, config, config_text: str, out, *, overwrite: bool = False,
                 time_scale: float = 1.0, seed: int = 0, program: str = "insitu run", open_instruments=None,
                 status_stream=None, handle_signals: bool = True, on_seed_watcher=None):
        super().__init__(out, overwrite=overwrite, program=program, handle_signals=handle_signals)
        if not (0 < time_scale < 1e6):
            raise UserError(f"--time-scale: must be > 0 (got {time_scale!r})")
        if time_scale != 1.0 and not config.is_mock:
            raise UserError("--time-scale: only with mock instruments (real instruments run in real time)")
        self.protocol = protocol
        self.config = config
        self.config_text = config_text
        self.time_scale = float(time_scale)
        self.seed = int(seed)
        self._open_instruments = open_instruments
        self.status_stream = status_stream
        self.on_seed_watcher = on_seed_watcher
        self.instruments = None
        self.clock = None
        #: the live seed detector of a closed-loop run (None otherwise)
        self.watcher = None

    @property
    def engine(self):
        return self.producer

    def _describe(self) -> str:
        name = getattr(self.protocol, "name", "") or "protocol"
        kind = "mock" if self.config.is_mock else "real"
        return (f"protocol {name!r} on {kind} instruments -> {self.out} (time scale {self.time_scale:g}, "
                f"seed {self.seed})")

    def _open(self) -> None:
        from insitu.core.clock import Clock

        opener = self._open_instruments
        if opener is None:
            from insitu.instruments import open_instruments as opener
        self.clock = Clock(self.time_scale)
        self.instruments = opener(self.config, self.clock, seed=self.seed)   # connecting changes no output
        log.info("instruments: %s", identities(self.instruments))

    def _writer(self):
        from insitu.core.session import SessionWriter

        spec = getattr(self.instruments, "specimen", None)
        shape = dict(frame_shape=spec.base.shape, frame_dtype="uint16") if spec is not None else {}
        return SessionWriter(self.out, overwrite=self.overwrite, start_time_iso=self.clock.start_iso,
                             protocol_text=getattr(self.protocol, "text", "") or "",
                             instruments_text=self.config_text, program=self.program, **shape)

    def _producer(self, sinks):
        from insitu.control.engine import Engine

        return Engine(self.protocol, self.instruments, sinks, status_stream=self.status_stream)

    def _stop_producer(self, producer, reason: str) -> None:
        producer.request_abort(reason)

    def _start(self, producer) -> str:
        """Run the engine; a protocol with ``until: {seeds}`` or ``on_seed:`` gets the live seed detector in
        its own thread (:func:`insitu.seedwatch.attach`), fed the recorded frames, posting into the engine."""
        from insitu.seedwatch import attach

        watcher = self.watcher = attach(producer)
        if watcher is not None and self.on_seed_watcher is not None:
            try:
                self.on_seed_watcher(watcher)
            except Exception as exc:  # noqa: BLE001 - the view is a convenience, the run goes on
                log.warning("on_seed_watcher failed: %s: %s", type(exc).__name__, exc)
        try:
            return producer.run()
        finally:
            if watcher is not None:
                watcher.stop(timeout_s=5.0)

    def _metadata(self, writer) -> None:
        inst = self.instruments
        engine = self.producer
        meta = instrument_metadata(inst, self.protocol, getattr(engine, "found_state", None))
        for name, info in meta.items():
            writer.set_instrument(name, info)
        if getattr(inst, "specimen", None) is not None:
            inst.specimen.write_truth(writer)

    def _close(self) -> None:
        if self.instruments is not None:
            self.instruments.close()


class ReplayRunner(Runner):
    """A recorded session played through :class:`~insitu.control.replay.Player` (no instrument touched),
    recorded into ``out`` when given.

    The new file carries the original's protocol, instruments TOML,
    ``/entry/instrument/*`` and ``/entry/sample`` (ground truth), so it holds
    the same metadata as the session it replays, plus
    ``/entry/instrument/replay`` (source path and speed).

    Parameters
    ----------
    session : path of the recorded session
    out : path of a new session file, optional
    speed : float
        Replay speed (1 = recorded timing).
    clock : optional
        A replay clock that can pause and change speed (the GUI's).
    """

    def __init__(self, session, out=None, *, speed: float = 1.0, overwrite: bool = False, clock=None,
                 program: str = "insitu replay", handle_signals: bool = True):
        super().__init__(out, overwrite=overwrite, program=program, handle_signals=handle_signals)
        if not (speed > 0 and speed < float("inf")):
            raise UserError(f"--speed must be a finite number > 0, got {speed:g}")
        self.session_path = Path(session)
        self.speed = float(speed)
        self.clock = clock

    @property
    def player(self):
        return self.producer

    def _describe(self) -> str:
        return f"replay of {self.session_path} at {self.speed:g}x" + (f" -> {self.out}" if self.out else "")

    def _open(self) -> None:
        from insitu.control.replay import Player

        self._player = Player(self.session_path, speed=self.speed, clock=self.clock)

    def _writer(self):
        if self.out is None:
            return None
        from insitu.core.session import SessionWriter

        src = self._player.session
        return SessionWriter(self.out, overwrite=self.overwrite, start_time_iso=src.start_time,
                             protocol_text=src.protocol_text, instruments_text=src.instruments_text,
                             program=self.program, frame_shape=src.frame_shape or None,
                             frame_dtype=src.frame_dtype)

    def _producer(self, sinks):
        self._player.sinks = list(sinks)
        return self._player

    def _metadata(self, writer) -> None:
        source, speed = str(self.session_path.resolve()), self.speed

        def copy(dst):
            from insitu.core.session import _open_h5

            src, _ = _open_h5(self.session_path)
            try:
                for name, obj in src["/entry/instrument"].items():
                    if name not in dst["/entry/instrument"]:
                        src.copy(obj, dst["/entry/instrument"], name=name)
                if "sample" in src["/entry"] and "sample" not in dst["/entry"]:
                    src.copy(src["/entry/sample"], dst["/entry"], name="sample")
            finally:
                src.close()

        writer.modify(copy)
        writer.set_instrument("replay", {"source": source, "speed": speed})

    def _finish_file(self, status: str) -> None:
        super()._finish_file(status)
        if self.writer is not None and self.out is not None and self.writer.error is None:
            from insitu.core.session import tidy_session

            tidy_session(self.out)  # text copied from an older file in the form HyperSpy reads

    def _close(self) -> None:
        p = getattr(self, "_player", None)
        if p is not None:
            p.close()


def run_protocol(protocol, config, config_text: str, out, **kwargs) -> ProtocolRunner:
    """Run ``protocol`` into the session file ``out`` (see :class:`ProtocolRunner`); returns the finished
    runner (``status``, ``exit_code``, ``engine``). Raises what the run raised, the file closed first."""
    r = ProtocolRunner(protocol, config, config_text, out, **kwargs)
    r.run()
    return r


__all__ = ["Runner", "ProtocolRunner", "ReplayRunner", "run_protocol", "instrument_metadata", "identities",
           "install_signal_handlers", "session_log", "log_path_for", "log_event_sink"]
