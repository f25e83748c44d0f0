"""The engine: runs a protocol on instruments, safely, on one clock.

What it guarantees (see ``docs/protocols.md``):

* Nothing is switched on before the whole protocol has been validated
  against its limits (that happens when it is parsed) and the instruments can
  do it (frame source for ``acquire``, blanker for ``beam``).
* Found state: a source found ON is ramped down from its level at the allowed
  slew (never a jump) and switched off before anything else; where the
  instrument allows it, its current limit is first lowered to the protocol's
  compliance, so the ramp runs under the protocol's limit.
* Then the current limit and range go to the instrument and are read back,
  the level is set to 0 V, and only then is the output switched on.
* Every sample tick (``sample_interval``, on the clock's schedule): one
  setpoint, each checked against ``max_voltage`` and clamped by the
  :class:`~insitu.control.safety.SlewGuard`, then a read-back of voltage and current.
* Suspenders: short (output off at once, exit 3), compliance (hold the level
  or abort), frame stall (hold and pause the protocol clock; abort after 3×),
  beam state wrong (abort), read-back beyond the limit (fault). Each is an
  event.
* Every exit ends at 0 V with the output off, or says LOUDLY that it could
  not: end of protocol, error, operator abort / Ctrl-C / SIGTERM (via
  :meth:`Engine.request_abort`), suspender. Every ramp-down starts from the
  level the instrument reads back (else the level last measured), never from
  the engine's own last setpoint alone. An output switched off above 0 V
  (a short, or a ramp-down that kept failing) is named with its level in the
  exit message. A lost connection: reconnect for
  up to ``reconnect_timeout_s``, ramp down from the level found, output off,
  :class:`~insitu.core.errors.ConnectionLost` (exit 2).

* Closed loop (``until:`` on ramp/hold, ``on_seed:``): step kinds run through
  a dispatch table; confirmed seeds arrive from another thread through
  :meth:`Engine.post_seed` into an inbox the engine drains every tick without
  waiting; the rules (:mod:`insitu.control.rules`) are judged each tick, and
  each one that fires is a ``trigger`` event naming it. An early end keeps the
  level and the next step starts from it (:func:`~insitu.control.plan.rebase`);
  blank, hold and abort go through the same paths as scripted steps and
  suspenders. The state is an :class:`EngineState`.

Records go to every sink (callables): BiasSample each tick, BeamSample on
each beam change, EventRecord, FrameRecord, ProgressRecord each tick, and
SeedRecord for each confirmed seed the engine received.
"""
from __future__ import annotations

import bisect
import dataclasses
import queue
import threading
import time
from collections import deque
from typing import Callable, Iterable

from insitu.control.dose import dose_rate
from insitu.drivers.interfaces import Measurement
from insitu.core.errors import ConnectionLost, InsituError, InstrumentError, StoppedEarly, UserError
from insitu.control.plan import is_done, level_at, plan, rebase
from insitu.control.protocol import Protocol, effective_rate, expand
from insitu.control.rules import Trigger, UntilWatch, seed_trigger
from insitu.core.records import (BeamSample, BiasSample, EngineState, EventRecord, FrameRecord, ProgressRecord,
                                 SeedRecord)
from insitu.control.safety import LimitBreach, SlewGuard, check_measurement, check_setpoint, ramp_levels
from insitu.core.units import count

#: frame-stall time used while an ``acquire`` step waits and the protocol sets none (s)
ACQUIRE_STALL_S = 60.0
#: how often the blanker state is verified while running (s, experiment clock)
BEAM_CHECK_PERIOD_S = 1.0
#: an accelerated (mock) clock may run this fraction of a sample interval past a tick while the engine
#: works on it (the samples' time stamps stay within it of their schedule), and no further
CLOCK_HOLD_SLACK = 0.25
#: status line refresh period (s, real time)
STATUS_PERIOD_S = 0.2
#: readings kept for per-frame interpolation (at 0.2 s: the last 2 min)
RECENT_SAMPLES = 600


class _Stop(Exception):
    """Internal: a suspender or the operator ends the run (exit 3)."""

    def __init__(self, kind: str, message: str, off_now: bool = False):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.off_now = off_now


def _is_transport_failure(exc: BaseException) -> bool:
    return isinstance(exc, (ConnectionLost, OSError))


class Engine:
    """Run a :class:`~insitu.control.protocol.Protocol` on an :class:`~insitu.instruments.Instruments` bundle.

    Parameters
    ----------
    protocol : Protocol
    instruments : Instruments
        Source-meter, blanker, frame source and the shared clock.
    sinks : iterable of callables
        Each receives every record (e.g. a :class:`~insitu.core.session.SessionWriter`).
    status_stream : text stream, optional
        Where to draw the live one-line status (``\\r``-refreshed), e.g. a TTY.
    reconnect_timeout_s : float
        How long (real s) to try to regain a lost source-meter connection.

    Example
    -------
    >>> from insitu.core.clock import Clock
    >>> from insitu.drivers.mock import MockSourceMeter, MockBeamBlanker
    >>> from insitu.drivers.interfaces import Instruments
    >>> from insitu.control.protocol import parse_protocol
    >>> clk = Clock(time_scale=200)
    >>> inst = Instruments(MockSourceMeter(clock=clk), MockBeamBlanker(), None, clk)
    >>> p = parse_protocol('''
    ... limits: {max_voltage: 5, compliance_current: 1.0e-6, max_slew_rate: 1}
    ... steps: [{ramp: {to: 2}}, {hold: {duration: 2}}]''')
    >>> records = []
    >>> Engine(p, inst, [records.append]).run()
    'complete'
    >>> inst.source_meter.output, inst.source_meter.read_state().level_V
    (False, 0.0)
    """

    def __init__(self, protocol: Protocol, instruments, sinks: Iterable[Callable] = (), *, status_stream=None,
                 reconnect_timeout_s: float = 10.0):
        self.protocol = protocol
        self.instruments = instruments
        self.clock = instruments.clock
        self.sinks = list(sinks)
        self.status_stream = status_stream
        self.reconnect_timeout_s = float(reconnect_timeout_s)
        lim = protocol.limits
        self.limits = lim
        self.dt = protocol.sample_interval
        frames = instruments.frames
        period = getattr(frames, "period_s", None)
        self.timeline = expand(protocol, instruments.probe_current_A,
                               frame_rate_hz=(1.0 / period) if period else 1.0)
        self.flat = plan(protocol)
        self.dose_rate_on = dose_rate(instruments.probe_current_A, protocol.field_of_view_m ** 2)
        self.ramp_rate = effective_rate(None, lim, self.dt)  # V/s for ramp-downs
        self.guard = SlewGuard(lim.max_slew_rate)
        # state
        self.state = EngineState.IDLE
        self._state_lock = threading.Lock()
        self._abort = threading.Event()
        self._abort_reason = ""
        self._paused = threading.Event()
        self._stopping = False
        self.setpoint = 0.0
        self.last = Measurement(0.0, 0.0, 0.0, False)
        #: recent readings, to give each frame the bias and current at its own time
        self._recent: deque[Measurement] = deque(maxlen=RECENT_SAMPLES)
        self.found_state = None
        self.output_maybe_on = False
        #: the level (V) the output was switched off at without a ramp (a short, a failed ramp-down), else None
        self.off_at_V: float | None = None
        self._was_on = False          # the output was on at some point of this run (found or switched)
        self.blanked: bool | None = None
        self.dose = 0.0
        self._dose_t = 0.0
        self._unblank_t = 0.0
        self._last_frame_t = 0.0
        self._stalled = False
        self._compliance = False
        self._acquiring = 0
        self._acquired = 0
        self._acquire_t0 = float("-inf")
        self.n_frames = 0
        #: frames the frame source delivered, recorded or not (blanked beam, scanned before unblanking)
        self.n_delivered = 0
        self._next_beam_check = 0.0
        self._next_frame_error_event = float("-inf")
        self._source_dropped = 0
        self._next_t = 0.0
        self._prev_t: float | None = None
        self.protocol_time = 0.0
        self._step_index = -1
        self._step_label = "start"
        self._step_kind = ""
        self._step_t0 = 0.0
        self._sink_error: BaseException | None = None
        self._status_t = 0.0
        self._status_len = 0
        #: (scheduled, actual) clock time of every sample tick, for timing checks
        self.timing: deque = deque(maxlen=100_000)
        # closed loop: confirmed seeds arrive in the inbox from another thread (post_seed); the engine drains
        # it every tick, never waiting. The rules are armed until the operator disarms them (disarm()).
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._held = threading.Event()
        self._on_seed = protocol.on_seed
        self._until_armed = True
        self._until: UntilWatch | None = None
        self._blank_pending: SeedRecord | None = None
        #: every rule that fired, in order (each is also a ``trigger`` event)
        self.triggers: list[Trigger] = []
        #: seeds received so far
        self.seeds: list[SeedRecord] = []
        d = [st.n_ticks * self.dt if st.kind in ("ramp", "hold") else
             (st.frames * (period or 1.0) if st.kind == "acquire" else 0.0) for st in self.flat]
        self._expected = d
        self._remaining_after = [sum(d[i + 1:]) for i in range(len(d))]

    # ------------------------------------------------------------------ control (thread-safe)
    def request_abort(self, reason: str = "operator") -> None:
        """Ask the engine to stop: it ramps to 0 V, switches the output off and raises StoppedEarly."""
        if not self._abort.is_set():
            self._abort_reason = str(reason)
            self._abort.set()

    def pause(self) -> None:
        """Hold the present level and stop the protocol clock (suspenders keep watching)."""
        self._paused.set()

    def resume(self) -> None:
        """Continue after :meth:`pause` or an ``on_seed: hold``."""
        self._paused.clear()
        if self._held.is_set():
            self._held.clear()
            self._event("info", "resumed by the operator after on_seed hold")

    def note(self, kind: str, message: str) -> None:
        """An event from another part of the run (e.g. the seed watcher), on the engine's clock. Thread-safe."""
        self._event(kind, message)

    def post_seed(self, record: SeedRecord) -> None:
        """Hand the engine a confirmed seed (any thread; never blocks). It reacts at its next tick."""
        self._inbox.put(record)

    @property
    def needs_seeds(self) -> bool:
        """Whether the protocol has rules that react to seeds (a seed watcher should feed :meth:`post_seed`)."""
        return self._on_seed != "none" or any(st.until is not None and st.until.seeds is not None
                                              for st in self.flat)

    def armed(self) -> dict[str, str]:
        """The rules armed now: ``{"on_seed": "blank", "until": "until seeds >= 1"}`` (keys only when armed)."""
        out = {}
        if self._on_seed != "none":
            out["on_seed"] = self._on_seed
        w = self._until
        if w is not None and self._until_armed:
            out["until"] = w.until.describe()
        return out

    def disarm(self, rule: str) -> None:
        """The operator disarms ``"on_seed"`` (for the rest of the run) or ``"until"`` (the present step's
        conditions: it runs its scripted time). Thread-safe; said as an event."""
        if rule == "on_seed":
            if self._on_seed != "none":
                self._event("info", f"on_seed {self._on_seed} disarmed by the operator")
            self._on_seed = "none"
        elif rule == "until":
            if self._until_armed and self._until is not None:
                self._event("info", f"{self._until.until.describe()} disarmed by the operator "
                                       f"(step {self._step_label})")
            self._until_armed = False
        else:
            raise ValueError(f"unknown rule {rule!r}: 'on_seed' or 'until'")

    @property
    def sm(self):
        return self.instruments.source_meter

    # ------------------------------------------------------------------ records
    def _emit(self, record) -> None:
        for sink in self.sinks:
            try:
                sink(record)
            except Exception as exc:  # a failing sink must not stop the ramp-down
                if self._sink_error is None:
                    self._sink_error = exc

    def _event(self, kind: str, message: str) -> None:
        self._emit(EventRecord(self.clock.now(), kind, message))

    # ------------------------------------------------------------------ the run
    def run(self) -> str:
        """Run the protocol to the end; block until done.

        Returns
        -------
        str
            ``"complete"``.

        Raises
        ------
        StoppedEarly
            A suspender or the operator stopped the run (exit 3).
        ConnectionLost, InstrumentError
            A fault (exit 2). The message says whether the output is off.
        UserError
            The instruments cannot do this protocol (nothing was switched on).

        Whatever happens, the source has been ramped to 0 V and switched off
        before this returns or raises, or the message says loudly that it could not.
        """
        with self._state_lock:
            if self.state != EngineState.IDLE:
                raise RuntimeError("an Engine runs once")
            self.state = EngineState.RUNNING
        outcome: BaseException | None = None
        off_now = False
        lost: BaseException | None = None
        try:
            self._check_instruments()
            self._prepare()
            self._execute()
            if self._sink_error is not None:
                raise InstrumentError(f"recording failed: {self._sink_error}")
        except _Stop as stop:
            self._event(stop.kind if stop.kind in ("short", "stall", "beam", "abort") else "suspender", stop.message)
            outcome = StoppedEarly(f"{stop.kind}: {stop.message}" if stop.kind == "short" else stop.message)
            off_now = stop.off_now
        except KeyboardInterrupt:
            self._event("abort", "interrupted (Ctrl-C)")
            outcome = StoppedEarly("interrupted (Ctrl-C)")
        except UserError as exc:
            outcome = exc
        except BaseException as exc:  # noqa: BLE001 - every failure must end at 0 V
            if _is_transport_failure(exc):
                lost = exc
            else:
                self._event("fault", f"{type(exc).__name__}: {exc}")
                outcome = exc if isinstance(exc, InsituError) else InstrumentError(
                    f"internal error: {type(exc).__name__}: {exc}")
                if not isinstance(exc, InsituError):
                    outcome.__cause__ = exc
        self.state = EngineState.STOPPING
        self._stopping = True
        try:
            if lost is None:
                try:
                    self._shutdown(off_now)
                except BaseException as exc:  # noqa: BLE001
                    if _is_transport_failure(exc):
                        lost = exc
                    else:
                        raise
            if lost is not None:
                outcome = self._recover(lost)
        except InsituError as exc:
            # the way out failed: its message leads (it says where the output is); the first cause follows
            outcome = exc if outcome is None else type(exc)(f"{exc} (after: {outcome})")
        finally:
            self._record_notices()       # stray replies discarded during the way out
            if outcome is not None:
                self._blank_after_stop()
            self.clock.release()
            self._status_done()
            self.state = EngineState.DONE
            self._stop_frames()
        note = self.frames_note
        if note:
            self._event("frames", note)
        if outcome is None:
            self._event("end", f"protocol complete: {count(self.n_frames, 'frame')}, dose {self.dose:.4g} e/Å²; "
                               "output off at 0 V")
            return "complete"
        if isinstance(outcome, StoppedEarly):
            if self._was_on:
                how = "ramped to 0 V, output off"
                if self.off_at_V is not None:
                    how = f"output switched off at once at {self.off_at_V:g} V"
                outcome = StoppedEarly(f"{outcome}; {how}")
            self._event("end", f"stopped early: {outcome}")
        raise outcome

    @property
    def frames_note(self) -> str | None:
        """Why a run that should have frames has none (None when frames were recorded or none were due)."""
        if self.n_frames:
            return None
        if self.n_delivered:
            return (f"no frames recorded although the frame source delivered {self.n_delivered} "
                    "(all while the beam was blanked)")
        if self.instruments.frames is not None and self.timeline.n_frames:
            return f"no frames recorded although the protocol expected {self.timeline.n_frames}"
        return None

    # ------------------------------------------------------------------ before output on
    def _check_instruments(self) -> None:
        kinds = {st.kind for st in self.flat}
        if "acquire" in kinds and self.instruments.frames is None:
            raise UserError("the protocol has acquire steps but no frame source is configured")
        if kinds & {"acquire", "beam"} and self.instruments.blanker is None:
            raise UserError("the protocol has beam/acquire steps but no beam blanker is configured")
        if self.protocol.on_seed == "blank" and self.instruments.blanker is None:
            raise UserError("on_seed: blank needs a beam blanker, and none is configured")

    def _prepare(self) -> None:
        lim, sm, clock = self.limits, self.sm, self.clock
        self._next_t = clock.now()
        self._prev_t = None
        state = sm.read_state()
        self.found_state = state
        self.setpoint = float(state.level_V)
        # the slew history starts from what the specimen sees: the level if the output is on, else 0 V
        self.guard.reset(self.setpoint if state.output_on else 0.0)
        self._event("start", f"protocol '{self.protocol.name}': {len(self.flat)} steps, "
                             f"{self.timeline.duration_s:.0f} s expected, peak {self.timeline.peak_abs_V:g} V; "
                             f"source found output {'ON' if state.output_on else 'off'} at {state.level_V:g} V, "
                             f"limit {state.current_limit_A:.3g} A")
        if state.output_on:
            self.output_maybe_on = self._was_on = True
            if state.level_V != 0.0:
                self._event("info", f"source found ON at {state.level_V:g} V: ramping down at "
                                    f"{self.ramp_rate:.3g} V/s before the protocol starts")
            self._limit_found_output(state)
            self.last = sm.measure()
            self._ramp_to_zero(checks=False)
            sm.output = False
            self.output_maybe_on = False
            self._event("info", "found output ramped down to 0 V and switched off")
        # limits go to the instrument, are read back, level 0, then output on
        sm.configure(lim.compliance_current, lim.max_voltage)
        sm.set_voltage(0.0)
        self.setpoint = 0.0
        got = sm.read_state()
        if got.output_on:
            raise InstrumentError("output reads back ON before it was switched on: refusing to start")
        if abs(got.level_V) > 1e-9:
            raise InstrumentError(f"level reads back {got.level_V:g} V after setting 0 V: refusing to start")
        if not abs(got.current_limit_A - lim.compliance_current) <= 0.02 * lim.compliance_current:
            raise InstrumentError(f"current limit reads back {got.current_limit_A:g} A, "
                                  f"{lim.compliance_current:g} A was set: refusing to start")
        # keep the history: after a found level was ramped down, the protocol's first steps still
        # count in the same 2-s slew window as the last steps of that ramp
        self.guard.commit(0.0, clock.now())
        bl = self.instruments.blanker
        self.blanked = bl.is_blanked() if bl is not None else None  # None: no blanker, state unknown
        self._dose_t = clock.now()
        self._unblank_t = self._last_frame_t = clock.now()
        if self.blanked is not None:
            self._emit(BeamSample(clock.now(), self.blanked, 0.0 if self.blanked else self.dose_rate_on))
        elif self.instruments.frames is not None:
            self._event("beam", "no beam blanker configured: beam state unknown; every frame that arrives is "
                                "recorded (a frame shows the beam was on), dose unknown")
        if self._abort.is_set():
            raise _Stop("abort", f"aborted before the output was switched on: {self._abort_reason}")
        if self.instruments.frames is not None:
            self.instruments.frames.start()
        self.output_maybe_on = self._was_on = True
        sm.output = True
        self._event("start", f"output on at 0 V; current limit {got.current_limit_A:.3g} A, "
                             f"range {lim.max_voltage:g} V, sample interval {self.dt:g} s")
        self._next_t = clock.now()
        self._prev_t = None
        self._next_beam_check = clock.now() + BEAM_CHECK_PERIOD_S

    def _limit_found_output(self, state) -> None:
        """Before ramping down a source found on: lower its current limit to the protocol's compliance where the
        instrument allows it (never raise it); say what was done."""
        want, found = self.limits.compliance_current, state.current_limit_A
        if not abs(found) > want * (1 + 1e-6):
            return
        setter = getattr(self.sm, "set_current_limit", None)
        if setter is None:
            self._event("info", f"this source-meter cannot change its current limit alone: ramping down under "
                                f"the limit found, {found:.3g} A")
            return
        try:
            setter(want)
        except InstrumentError as exc:
            if _is_transport_failure(exc):
                raise
            self._event("info", f"could not lower the current limit to {want:.3g} A with the output on ({exc}); "
                                f"ramping down under the limit found, {found:.3g} A")
            return
        self._event("info", f"current limit lowered from {found:.3g} A to the protocol's {want:.3g} A "
                            "before ramping down")

    # ------------------------------------------------------------------ protocol
    def _clock_stopped(self) -> bool:
        """The protocol clock stands still: operator pause, on_seed hold, frame stall."""
        return self._paused.is_set() or self._held.is_set() or self._stalled

    def _must_hold(self, target_V: float) -> bool:
        if self._clock_stopped():
            return True
        return self._compliance and abs(target_V) > abs(self.setpoint)

    def _execute(self) -> None:
        run_step = {"beam": self._run_beam, "acquire": self._run_acquire, "ramp": self._run_levels,
                    "hold": self._run_levels}
        for st in self.flat:
            st = rebase(st, self.setpoint, self.dt)   # after a step that ended early: from the present level
            self._step_index, self._step_label, self._step_t0 = st.index, st.label, self.protocol_time
            self._step_kind = st.kind
            t0 = self.clock.now()
            moved = "" if st is self.flat[st.index] else f" (from {st.v_start_V:g} V: the previous step ended early)"
            cond = f", {st.until.describe()}" if st.until is not None else ""
            self._emit(EventRecord.step(t0, st.index, len(self.flat), f"{st.label}{cond}{moved}", st.kind))
            self._until_armed = True
            self._until = UntilWatch(st.until, t0) if st.until is not None else None
            try:
                run_step[st.kind](st)
            finally:
                self._until = None

    def _run_beam(self, st) -> None:
        self._set_beam(bool(st.blank))
        self._react()

    def _run_levels(self, st) -> None:
        """A ramp or hold: one tick per sample interval.

        The step's clock ``tau`` stops while holding (pause, on_seed hold, stall,
        compliance). A step ends when its time is up AND its level has been
        reached (a hold starts counting once the level is there: the slew guard
        may have slowed the way to it), or as soon as its ``until`` is met: the
        level set last is kept.
        """
        tau = 0.0
        while not (is_done(st, tau, self.dt) and self.setpoint == st.v_end_V):
            inc = self._next_tick()
            target = level_at(st, tau + inc, self.dt)
            if self._must_hold(target):
                self._sample(None)
            else:
                self.protocol_time += inc
                if st.kind == "ramp" or self.setpoint == st.v_end_V:
                    tau += inc
                self._sample(target)
            if self._react(self.last.current_A):
                return

    def _run_acquire(self, st) -> None:
        n = st.frames
        was_blanked = bool(self.blanked)
        if was_blanked:
            self._set_beam(False, why=f"to acquire {count(n, 'frame')}")
        self._acquiring, self._acquired = n, 0
        self._acquire_t0 = self.clock.now()   # frames scanned before the step do not count (delivery lags)
        try:
            while self._acquired < n:
                inc = self._next_tick()
                if not self._clock_stopped():
                    self.protocol_time += inc
                self._sample(None)
                self._react()
        finally:
            self._acquiring = 0
        if was_blanked:
            self._set_beam(True, why=f"after {count(n, 'frame')}")
        pending, self._blank_pending = self._blank_pending, None
        if pending is not None and self.blanked is False:
            self._set_beam(True, why=f"(on_seed blank, seed {pending.seed_id}, after the acquire step)")

    # ------------------------------------------------------------------ closed loop
    def _fire(self, trig: Trigger) -> None:
        self.triggers.append(trig)
        self._event("trigger", trig.message())

    def _react(self, current_A: float | None = None) -> bool:
        """Drain the seed inbox (never waits), apply the rules; True when the step's ``until`` is met.

        Every action goes through the engine's own paths: blanking through :meth:`_set_beam`, holding
        through the paused protocol clock (the level stays, the slew guard and suspenders keep
        watching), aborting through the ramp-down of every stop.
        """
        done = None
        while True:
            try:
                rec = self._inbox.get_nowait()
            except queue.Empty:
                break
            rec = dataclasses.replace(rec, time_s=self.clock.now())   # when the engine knew of it
            self.seeds.append(rec)
            self._emit(rec)
            if self._until is not None and self._until_armed and done is None:
                done = self._until.seed(rec)
            self._on_seed_rule(rec)
        if done is None and current_A is not None and self._until is not None and self._until_armed:
            done = self._until.current(current_A)
        if done is not None:
            self._fire(done)
            self._event("info", f"step [{self._step_index + 1}/{len(self.flat)}] ended early at {self.setpoint:g} V; "
                                "the protocol goes on from this level")
            return True
        return False

    def _on_seed_rule(self, rec: SeedRecord) -> None:
        action = self._on_seed
        trig = seed_trigger(action, rec)
        if trig is None:
            return
        self._fire(trig)                # every seed fires the rule; the action may have nothing left to do
        if action == "blank" and self.blanked is not False:
            return                      # already blanked (or no blanker: then _check_instruments refused)
        if action == "hold" and self._held.is_set():
            return
        if action == "blank":
            if self._acquiring:
                self._blank_pending = rec
                self._event("beam", f"on_seed blank: the beam is blanked when this acquire step ends "
                                    f"({self._acquired}/{self._acquiring} frames)")
            else:
                self._set_beam(True, why=f"(on_seed blank, seed {rec.seed_id})")
        elif action == "hold":
            self._held.set()
            self._event("info", f"on_seed hold: holding {self.setpoint:g} V, protocol clock paused until the "
                                "operator resumes")
        elif action == "abort":
            raise _Stop("abort", f"aborted: {trig.message()}")

    def _set_beam(self, blank: bool, why: str = "") -> None:
        bl = self.instruments.blanker
        self._update_dose(self.clock.now())
        if blank:
            bl.blank()
        else:
            bl.unblank()
        now = self.clock.now()
        self._update_dose(now)       # dose counts until the blank command has been obeyed
        self.blanked = blank
        if not blank:
            self._unblank_t = self._last_frame_t = now
            self._stalled = False
        self._emit(BeamSample(now, blank, 0.0 if blank else self.dose_rate_on))
        self._event("beam", f"beam {'blanked' if blank else 'unblanked'}" + (f" {why}" if why else ""))
        if bl.is_blanked() != blank:
            raise _Stop("beam", f"the blanker reports {'un' if blank else ''}blanked right after "
                                f"{'blank' if blank else 'unblank'} was sent")
        self._next_beam_check = now + BEAM_CHECK_PERIOD_S

    # ------------------------------------------------------------------ one sample tick
    def _next_tick(self) -> float:
        """Wait for the next scheduled tick; return the scheduled time since the previous one (s).

        Ticks follow a fixed schedule ``t0 + k·dt``; when the engine falls
        behind by more than one interval the schedule is re-anchored (never a
        burst of catch-up ticks), and the returned increment includes the lag,
        so protocol time keeps pace with the clock.
        """
        clock = self.clock
        # an accelerated (mock) clock waits for a late engine: it may run to this tick and a little
        # beyond (the tick's own work), never past it to the next one, so no sample is lost
        clock.hold_at(self._next_t + CLOCK_HOLD_SLACK * self.dt)
        wait = self._next_t - clock.now()
        if wait > 0:
            clock.sleep(wait)
        t_sched = self._next_t
        now = clock.now()
        self.timing.append((t_sched, now))
        inc = t_sched - self._prev_t if self._prev_t is not None else self.dt
        self._prev_t = t_sched
        self._next_t = t_sched + self.dt
        if now > self._next_t:  # fell behind by more than one interval: re-anchor
            self._next_t = now + self.dt
        return inc

    def _tick(self, target_V: float | None, *, checks: bool = True) -> None:
        """Wait for the next tick, then :meth:`_sample`."""
        self._next_tick()
        self._sample(target_V, checks=checks)

    def _sample(self, target_V: float | None, *, checks: bool = True) -> None:
        """One sample: set the (guarded) level, read back, judge, record."""
        clock, sm = self.clock, self.sm
        # moving towards 0 V is always allowed, even from a level found above the limit
        vmax = max(self.limits.max_voltage, abs(self.setpoint))
        if target_V is not None:
            t_before = clock.now()
            level = self.guard.allowed(target_V, t_before)
            check_setpoint(level, self.limits.max_voltage if abs(level) > abs(self.setpoint) else vmax)
            if level != self.setpoint:
                try:
                    sm.set_voltage(level)
                finally:
                    self.setpoint = level
        try:
            m = sm.measure()
        finally:
            self.guard.commit(self.setpoint, clock.now())
            self._record_notices()
        self.last = m
        self._recent.append(m)
        self._emit(BiasSample(m.time_s, self.setpoint, m.voltage_V, m.current_A, bool(m.compliance_hit)))
        verdict = check_measurement(m.voltage_V, m.current_A, m.compliance_hit, self.limits,
                                    self.protocol.on_compliance, max_voltage_V=vmax)
        if verdict is not None and verdict.kind == "short":
            raise _Stop("short", verdict.message, off_now=True)
        if verdict is not None and verdict.kind == "readback":
            raise LimitBreach(verdict.message)
        hit = verdict is not None and verdict.kind == "compliance"
        if hit != self._compliance:
            self._compliance = hit
            self._event("compliance", verdict.message if hit else "current back below the limit: resuming")
        now = clock.now()
        self._update_dose(now)
        self._poll_frames()
        if checks and not self._stopping:
            self._check_beam(now)
            self._check_stall(now)
            if self._abort.is_set():
                raise _Stop("abort", f"aborted: {self._abort_reason}")
            if self._sink_error is not None:
                raise InstrumentError(f"recording failed: {self._sink_error}")
        self._progress(now)
        self._status(m)

    def _record_notices(self) -> None:
        """Stray replies the source-meter's connection discarded (replies out of step) go to the event log."""
        take = getattr(self.sm, "take_notices", None)
        if take is not None:
            for note in take():
                self._event("fault", note)

    def _update_dose(self, now: float) -> None:
        if self.blanked is False and now > self._dose_t:
            self.dose += self.dose_rate_on * (now - self._dose_t)
        self._dose_t = max(self._dose_t, now)

    def _dose_at(self, t: float) -> float:
        if self.blanked is False:
            return max(0.0, self.dose - self.dose_rate_on * max(0.0, self._dose_t - t))
        return self.dose

    def _bias_at(self, t: float) -> tuple[float, float]:
        """Voltage (V) and current (A) at clock time ``t``, interpolated between recent readings.

        A frame is delivered after it was scanned (a folder source waits for the file to
        settle), so the reading at delivery can be a ramp step or more away from the
        frame's own time. Outside the recent readings the nearest one is used.
        """
        rec = self._recent
        if not rec or t >= rec[-1].time_s:
            return self.last.voltage_V, self.last.current_A
        if t <= rec[0].time_s:
            return rec[0].voltage_V, rec[0].current_A
        times = [m.time_s for m in rec]
        k = bisect.bisect_right(times, t)
        a, b = rec[k - 1], rec[k]
        w = (t - a.time_s) / (b.time_s - a.time_s) if b.time_s > a.time_s else 1.0
        return (a.voltage_V + w * (b.voltage_V - a.voltage_V), a.current_A + w * (b.current_A - a.current_A))

    def _stop_frames(self) -> None:
        """Stop the frame source; a producer thread stuck in a read is left behind and said (never waited for)."""
        src = self.instruments.frames
        if src is None:
            return
        try:
            ended = src.stop()
        except Exception as exc:  # noqa: BLE001 - the output is already safe; report, go on
            self._event("info", f"frame source: stop failed: {type(exc).__name__}: {exc}")
            return
        if ended is False:
            self._event("frames", "frame source did not stop (its reading thread is stuck, e.g. on an unreachable "
                                  "share): left behind; nothing it delivers later is recorded")

    @property
    def frames_dropped(self) -> int:
        """Frames lost on the way to the file: dropped by the frame source's queue (nobody polled in time)
        plus dropped by recorders that fell behind (their ``frames_dropped``)."""
        n = int(getattr(self.instruments.frames, "dropped", 0) or 0)
        for sink in self.sinks:
            n += int(getattr(getattr(sink, "__self__", sink), "frames_dropped", 0) or 0)
        return n

    def _note_source_drops(self) -> None:
        """An event when the frame source's queue dropped frames since the last look."""
        n = int(getattr(self.instruments.frames, "dropped", 0) or 0)
        if n > self._source_dropped:
            self._event("frames", f"frame source dropped {n - self._source_dropped} frame(s): its queue was full "
                                  f"({n} dropped so far)")
            self._source_dropped = n

    def _poll_frames(self) -> None:
        src = self.instruments.frames
        if src is None:
            return
        self._note_source_drops()
        try:
            got = src.poll()  # only drains the source's queue (drivers/producer.py): never waits for a read
        except Exception as exc:  # a bad file must not end a biasing run; the stall watch covers a dead source
            now = self.clock.now()
            if now >= self._next_frame_error_event:
                self._next_frame_error_event = now + 60.0
                self._event("info", f"frame source error (run continues): {type(exc).__name__}: {exc}")
            return
        for fr in got:
            self.n_delivered += 1
            if self.blanked is True:
                continue  # only frames taken with the beam on (or, without a blanker, unknown) are recorded
            if self._acquiring and fr.time_s < self._unblank_t:
                continue  # scanned before the beam was unblanked for this acquire
            px = fr.meta.get("pixel_size_m", float("nan")) if isinstance(fr.meta, dict) else float("nan")
            v_at, i_at = self._bias_at(fr.time_s)
            dose = self._dose_at(fr.time_s) if self.blanked is False else float("nan")
            self._emit(FrameRecord(fr.time_s, fr.data, v_at, i_at, False, dose, float(px),
                                   meta=dict(fr.meta or {})))
            self.n_frames += 1
            if fr.time_s >= self._acquire_t0:
                self._acquired += 1
            self._last_frame_t = self.clock.now()

    def _check_beam(self, now: float) -> None:
        bl = self.instruments.blanker
        if bl is None or now < self._next_beam_check:
            return
        self._next_beam_check = now + BEAM_CHECK_PERIOD_S
        actual = bl.is_blanked()
        if actual != self.blanked:
            raise _Stop("beam", f"beam is {'blanked' if actual else 'UNBLANKED'} but the protocol expects it "
                                f"{'blanked' if self.blanked else 'unblanked'} (step {self._step_label})")

    def _check_stall(self, now: float) -> None:
        stall_s = self.limits.frame_stall_s
        if self._acquiring and stall_s is None:
            stall_s = ACQUIRE_STALL_S
        imaging = self.instruments.frames is not None and self.blanked is False and stall_s is not None
        if not imaging:
            if self._stalled:
                self._stalled = False
            return
        gap = now - self._last_frame_t
        if gap > 3 * stall_s:
            raise _Stop("stall", f"no frame for {gap:.0f} s (3 × frame stall {stall_s:g} s): aborting")
        if gap > stall_s and not self._stalled:
            self._stalled = True
            self._event("stall", f"no frame for {gap:.0f} s: holding {self.setpoint:g} V, protocol clock paused")
        elif gap <= stall_s and self._stalled:
            self._stalled = False
            self._event("stall", "frames resumed: protocol continues")

    # ------------------------------------------------------------------ progress / status
    def _remaining(self) -> float:
        i = self._step_index
        if i < 0:
            return self.timeline.duration_s
        spent = self.protocol_time - self._step_t0
        return self._remaining_after[i] + max(0.0, self._expected[i] - spent)

    def _progress(self, now: float) -> None:
        paused = self._clock_stopped()
        with self._state_lock:
            if self.state in (EngineState.RUNNING, EngineState.PAUSED, EngineState.HELD):
                self.state = (EngineState.HELD if self._held.is_set() else
                              EngineState.PAUSED if self._paused.is_set() else EngineState.RUNNING)
            state = self.state
        self._emit(ProgressRecord(now, max(self._step_index, 0), len(self.flat), self._step_label,
                                  self.protocol_time, self._remaining(), paused, state, self._step_kind,
                                  self.frames_dropped))

    def status_line(self) -> str:
        """The one-line status: step, elapsed/remaining, V, I."""
        m = self.last
        flag = (" HELD by on_seed: hold (resume: GUI, or kill -USR1 the insitu run)" if self._held.is_set() else
                " PAUSED" if self._paused.is_set() else (" STALL" if self._stalled else ""))
        flag += " COMPLIANCE" if self._compliance else ""
        dropped = self.frames_dropped
        flag += f" FRAMES DROPPED {dropped}" if dropped else ""
        step = f"[{self._step_index + 1}/{len(self.flat)}] {self._step_label}" if self._step_index >= 0 else "start"
        if self._stopping:
            step = "stopping: ramping to 0 V" if self.output_maybe_on else "finished: output off"
        return (f"{step} | {_hms(self.protocol_time)} elapsed, {_hms(self._remaining())} left | "
                f"set {self.setpoint:+.3f} V  V {m.voltage_V:+.3f} V  I {m.current_A:+.3e} A{flag}")

    def _status(self, m) -> None:
        if self.status_stream is None:
            return
        t = time.monotonic()
        if t - self._status_t < STATUS_PERIOD_S:
            return
        self._status_t = t
        line = self.status_line()
        try:
            pad = max(0, self._status_len - len(line))
            self.status_stream.write("\r" + line + " " * pad)
            self.status_stream.flush()
            self._status_len = len(line)
        except Exception:
            pass

    def _status_done(self) -> None:
        if self.status_stream is not None and self._status_len:
            try:
                self._status_t = 0.0
                self._status(self.last)
                self.status_stream.write("\n")
                self.status_stream.flush()
            except Exception:
                pass

    # ------------------------------------------------------------------ stopping
    def _level_now(self) -> tuple[float, bool]:
        """(level in V, output on) as the instrument reads them back now; else the level last measured."""
        try:
            state = self.sm.read_state()
        except InstrumentError as exc:
            if _is_transport_failure(exc):
                raise
            level = float(self.last.voltage_V)
            self._event("fault", f"cannot read the level back ({exc}): ramping down from the level last "
                                 f"measured, {level:g} V")
            return level, True
        return float(state.level_V), bool(state.output_on)

    def _start_ramp_down(self) -> bool:
        """Take the level the instrument holds as the start of the ramp-down; False when there is nothing to ramp.

        The engine's own setpoint may be stale: a read-back beyond the limit, or a
        level changed by someone else, means the instrument sources something else.
        """
        level, on = self._level_now()
        if not on:
            self.sm.set_voltage(0.0)
            self.setpoint = 0.0
            self._event("info", f"output reads back off (level {level:g} V): level set to 0 V, nothing to ramp")
            return False
        if abs(level - self.setpoint) > 1e-6 * max(1.0, abs(level)):
            self._event("fault", f"the instrument holds {level:g} V, not the {self.setpoint:g} V last set: "
                                 f"ramping down from {level:g} V")
            self.setpoint = level
            self.guard.reset(level)
        return True

    def _ramp_to_zero(self, *, checks: bool = False) -> None:
        """Ramp from the level the instrument holds to 0 V at the allowed slew, reading back every tick.

        After a failed step the level is read back again and the ramp goes on from there (a refused
        command leaves the instrument where it was); five failures in a row raise.
        """
        failures = 0
        restart = True
        targets: list[float] = []
        i = 0
        while restart or self.setpoint != 0.0:
            if restart:
                restart = False
                if not self._start_ramp_down():
                    return
                targets, i = ramp_levels(self.setpoint, 0.0, self.ramp_rate * self.dt), 0
                continue
            target = targets[i] if i < len(targets) else 0.0
            try:
                self._tick(target, checks=checks)
                failures = 0
            except KeyboardInterrupt:
                self._say("still ramping down to 0 V, please wait")
                continue
            except (_Stop, LimitBreach):
                raise
            except InstrumentError as exc:
                if _is_transport_failure(exc):
                    raise
                failures += 1
                self._event("fault", f"during ramp-down: {exc}")
                if failures >= 5:
                    raise
                restart = True
                continue
            if self.setpoint == target:
                i += 1

    def _level_for_report(self) -> float:
        """The level to name when the output goes off without a ramp: read back if possible, else the setpoint."""
        try:
            return float(self.sm.read_state().level_V)
        except InstrumentError as exc:
            if _is_transport_failure(exc):
                raise
            return self.setpoint

    def _off_at_once(self, why: str) -> None:
        """Output off now, then level 0 V; records the level it was switched off at."""
        sm = self.sm
        level = self.setpoint
        sm.output = False
        self.output_maybe_on = False
        self.off_at_V = level
        sm.set_voltage(0.0)
        self.setpoint = 0.0
        self._event("info", f"output switched off at once at {level:g} V ({why}), level set to 0 V")

    def _shutdown(self, off_now: bool) -> None:
        sm = self.sm
        if not self.output_maybe_on:
            return
        if off_now:
            self._off_at_once("short")
            return
        try:
            self._ramp_to_zero(checks=False)
        except _Stop as stop:  # a short while ramping down: off at once
            self._event("short", stop.message)
            self._off_at_once("short while ramping down")
            return
        except InstrumentError as exc:
            if _is_transport_failure(exc):
                raise
            level = self._level_for_report()
            try:
                sm.output = False  # cannot ramp: switching off is the safe choice, and it is said loudly
            except InstrumentError as off_exc:
                if _is_transport_failure(off_exc):
                    raise
                msg = (f"COULD NOT RAMP DOWN ({exc}) AND COULD NOT SWITCH THE OUTPUT OFF ({off_exc}): "
                       f"THE OUTPUT MAY STILL BE ON at {level:g} V - switch it off at the instrument NOW")
            else:
                self.output_maybe_on = False
                self.off_at_V = level
                msg = f"COULD NOT RAMP DOWN ({exc}): OUTPUT SWITCHED OFF AT {level:g} V WITHOUT RAMPING"
                try:  # with the output off the level no longer reaches the specimen; 0 V is still the safe level
                    sm.set_voltage(0.0)
                    self.setpoint = 0.0
                except InstrumentError as zero_exc:
                    if _is_transport_failure(zero_exc):
                        raise
                    msg += f"; the level could not be set to 0 V ({zero_exc})"
            self._event("fault", msg)
            self._say("!" * 20 + " " + msg)
            raise InstrumentError(msg) from exc
        sm.output = False
        self.output_maybe_on = False
        self._event("info", "ramped to 0 V, output off")

    def _blank_after_stop(self) -> None:
        """A run that stopped early leaves the beam blanked (no dose while nobody is imaging), and says so."""
        bl = self.instruments.blanker
        if bl is None or self.blanked is not False:
            return
        try:
            self._set_beam(True, why="because the run stopped early")
        except BaseException as exc:  # noqa: BLE001 - the voltage side is already safe; report, go on
            self._event("fault", f"could not blank the beam after the stop: {type(exc).__name__}: {exc}")

    def _reopen(self):
        inst = self.instruments
        if inst.reconnect is not None:
            try:
                inst.source_meter.close()
            except Exception:
                pass
            inst.source_meter = inst.reconnect()
            return inst.source_meter
        sm = inst.source_meter
        for name in ("reconnect", "reopen"):
            fn = getattr(sm, name, None)
            if callable(fn):
                fn()
                return sm
        raise InstrumentError("this source-meter cannot be reopened")

    def _recover(self, exc: BaseException) -> BaseException:
        """After a lost connection: reconnect, ramp down from the level found, output off."""
        last_setpoint = self.setpoint
        self._event("fault", f"connection to the source-meter lost: {exc}; reconnecting "
                             f"(up to {self.reconnect_timeout_s:g} s)")
        self._say(f"connection lost ({exc}); reconnecting...")
        deadline = time.monotonic() + self.reconnect_timeout_s
        err: BaseException = exc
        while True:
            try:
                sm = self._reopen()
                state = sm.read_state()
                self._event("reconnect", f"reconnected: output {'ON' if state.output_on else 'off'} at "
                                         f"{state.level_V:g} V")
                self.setpoint = float(state.level_V)
                self.guard.reset(self.setpoint)
                self._next_t = self.clock.now()
                self._prev_t = None
                if state.output_on:
                    self.output_maybe_on = True
                    try:
                        self._shutdown(False)
                    except InstrumentError as down:
                        if _is_transport_failure(down):
                            raise
                        return InstrumentError(f"connection to the source-meter lost ({exc}); reconnected; {down}")
                else:
                    sm.set_voltage(0.0)
                    self.setpoint = 0.0
                    self.output_maybe_on = False
                msg = (f"connection to the source-meter lost ({exc}); reconnected, ramped down from "
                       f"{state.level_V:g} V, output off")
                return ConnectionLost(msg)
            except BaseException as e:  # noqa: BLE001
                err = e
                if time.monotonic() >= deadline or not (_is_transport_failure(e) or isinstance(e, InstrumentError)):
                    break
                time.sleep(0.5)
        msg = (f"CONNECTION LOST and not regained within {self.reconnect_timeout_s:g} s ({err}): "
               f"THE OUTPUT MAY STILL BE ON at {last_setpoint:g} V (last setpoint sent) - "
               "switch it off at the instrument NOW")
        self._event("fault", msg)
        self._say("!" * 20 + " " + msg)
        return InstrumentError(msg)

    def _say(self, text: str) -> None:
        """A line for the operator on the status stream (the exception carries the same news)."""
        stream = self.status_stream
        if stream is None:
            return
        try:
            stream.write(("\n" if self._status_len else "") + text + "\n")
            stream.flush()
            self._status_len = 0
        except Exception:
            pass


def _hms(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"
