"""The engine on the pure-Python mocks (accelerated clock): suspenders, pause, abort, beam and dose, and a
property test that random valid protocols never break a limit on the instrument-side log."""
from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from insitu.core.clock import Clock
from insitu.control.dose import dose_rate
from insitu.drivers.interfaces import Frame
from insitu.drivers.mock import MockBeamBlanker, MockSourceMeter, NoiseFrameSource
from insitu.control.engine import Engine
from insitu.core.errors import InstrumentError, StoppedEarly, UserError
from insitu.drivers.interfaces import Instruments
from insitu.control.protocol import parse_protocol, protocol_text
from insitu.core.records import BeamSample, BiasSample, EventRecord, FrameRecord, ProgressRecord
from test_engine_emulator import assert_safe_log

LIM = "limits: {max_voltage: 5, compliance_current: 1.0e-6, max_slew_rate: 1.0%s}\n"


def mock(scale=50.0, frames=False, rate_hz=2.0, **sm_kw):
    clock = Clock(scale)
    bl = MockBeamBlanker()
    src = NoiseFrameSource((8, 8), rate_hz, clock, bl) if frames else None
    return Instruments(MockSourceMeter(clock=clock, **sm_kw), bl, src, clock)


def run(text, inst, **kw):
    records = []
    eng = Engine(parse_protocol(text), inst, [records.append], **kw)
    try:
        out = eng.run()
    except Exception as exc:  # noqa: BLE001
        out = exc
    return eng, records, out


def of(records, cls):
    return [r for r in records if isinstance(r, cls)]


def ends_safe(inst):
    st_ = inst.source_meter.read_state()
    return st_.output_on is False and st_.level_V == 0.0


# ----------------------------------------------------------------------------- property: limits never broken
@st.composite
def protocols(draw):
    max_v = draw(st.floats(0.5, 30))
    slew = draw(st.floats(0.2, 5))
    level = st.floats(-max_v, max_v)
    leaf = st.one_of(
        st.builds(lambda v: {"ramp": {"to": v}}, level),
        st.builds(lambda v, f: {"ramp": {"to": v, "rate": f * slew}}, level, st.floats(0.3, 1.0)),
        st.builds(lambda d: {"hold": {"duration": d}}, st.floats(0, 2)),
    )
    steps = draw(st.lists(st.one_of(leaf, st.builds(lambda n, s: {"repeat": {"times": n, "steps": s}},
                                                    st.integers(1, 2), st.lists(leaf, min_size=1, max_size=2))),
                          min_size=1, max_size=4))
    found = draw(st.one_of(st.none(), level))
    return {"limits": {"max_voltage": max_v, "compliance_current": 1e-6, "max_slew_rate": slew},
            "sample_interval": draw(st.sampled_from([0.1, 0.2, 0.5])), "steps": steps}, found


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(protocols())
def test_random_valid_protocols_never_break_a_limit_on_the_instrument_log(case):
    raw, found = case
    inst = mock(scale=100.0, resistance_ohm=1e9, output_on=found is not None, level_V=found or 0.0)
    eng, records, out = run(protocol_text(raw), inst)
    assert out == "complete", out
    lim = parse_protocol(protocol_text(raw)).limits
    log = inst.source_meter.log
    # found on: the ramp-down before the protocol is held to the same limits, from the found level
    assert_safe_log(log, lim, initial_level=found or 0.0)
    if found:
        # the found limit (105 mA) is lowered to the protocol's compliance, then the found output is ramped and
        # switched off, all before the protocol's own set-up
        kinds = [(k, v) for _, k, v in log if k != "level"]
        assert kinds[0] == ("limit", lim.compliance_current) and kinds[1] == ("output", 0.0)
    assert ends_safe(inst)


def test_found_level_ramp_down_and_protocol_start_share_one_slew_window():
    """A source found ON at +3.3 V is ramped down, then the protocol ramps on to -4.6 V in the same
    direction: the 2-s window across that hand-over must hold the slew limit too (found by the
    property test above: 0.209 V/s > 0.2 V/s when start-up forgot the ramp-down's history)."""
    raw = {"limits": {"max_voltage": 6.86, "compliance_current": 1e-06, "max_slew_rate": 0.2},
           "sample_interval": 0.1, "steps": [{"ramp": {"to": -4.65}}, {"hold": {"duration": 0.17}}]}
    for _ in range(3):
        inst = mock(scale=100.0, resistance_ohm=1e9, output_on=True, level_V=3.31)
        eng, records, out = run(protocol_text(raw), inst)
        assert out == "complete", out
        assert_safe_log(inst.source_meter.log, parse_protocol(protocol_text(raw)).limits, initial_level=3.31)
        assert ends_safe(inst)


# ----------------------------------------------------------------------------- suspenders
def test_compliance_hold_freezes_the_ramp_then_resumes():
    # 1 MOhm load, 1 uA limit: compliance above 1 V. The load recovers at t = 8 s (clock).
    inst = mock(scale=40.0, resistance_ohm=1e6)
    sm = inst.source_meter
    base = sm.load_resistance
    sm.load_resistance = lambda t: base(t) if t < 8.0 else 1e8
    eng, records, out = run(LIM % "" + "steps: [{ramp: {to: 3.0}}, {hold: {duration: 1}}]", inst)
    assert out == "complete", out
    ev = [e for e in of(records, EventRecord) if e.kind == "compliance"]
    assert len(ev) == 2 and "holding" in ev[0].message and "resuming" in ev[1].message
    bias = of(records, BiasSample)
    tripped = [b for b in bias if b.time_s <= ev[0].time_s][-1]          # the sample that hit the limit
    assert tripped.compliance and tripped.setpoint_V > 1.0
    during = [b.setpoint_V for b in bias if ev[0].time_s <= b.time_s < ev[1].time_s]
    assert len(during) > 10 and max(during) == tripped.setpoint_V         # the ramp froze right there
    assert max(b.setpoint_V for b in bias) == pytest.approx(3.0)
    assert ev[1].time_s >= 8.0 and ends_safe(inst)


def test_compliance_abort_and_short_switch_off_at_once():
    for extra, proto_lim in [("on_compliance: abort\n", ""), ("", ", short_current: 5.0e-7")]:
        inst = mock(scale=40.0, resistance_ohm=1e6)
        eng, records, out = run(LIM % proto_lim + extra + "steps: [{ramp: {to: 3.0}}]", inst)
        assert isinstance(out, StoppedEarly) and out.exit_code == 3
        log = inst.source_meter.log
        k_off = [n for n, (t, k, v) in enumerate(log) if k == "output" and v == 0.0][-1]
        before = [v for t, k, v in log[:k_off] if k == "level"]     # in the order sent (times may tie)
        assert 0.4 < before[-1] < 1.2          # switched off at the level where it tripped, not ramped down
        assert ends_safe(inst)
        assert any(e.kind == "short" for e in of(records, EventRecord))


class StallingFrames:
    """Delivers a frame every 0.5 s (clock) except in [t_stop, t_resume)."""

    def __init__(self, clock, t_stop, t_resume=float("inf")):
        self.clock, self.t_stop, self.t_resume = clock, t_stop, t_resume
        self.next_t = None
        self.period_s = 0.5

    def start(self):
        self.next_t = self.clock.now()

    def poll(self):
        out = []
        now = self.clock.now()
        while self.next_t is not None and self.next_t <= now:
            t = self.next_t
            self.next_t += 0.5
            if not (self.t_stop <= t < self.t_resume):
                out.append(Frame(0, t, np.zeros((4, 4), np.uint16), {"pixel_size_m": 1e-9}))
        return out

    def stop(self):
        self.next_t = None


def test_frame_stall_pauses_the_protocol_clock_then_aborts_after_3x():
    inst = mock(scale=40.0)
    inst.frames = StallingFrames(inst.clock, t_stop=3.0)
    eng, records, out = run(LIM % ", frame_stall_s: 2" + "steps: [{beam: unblank}, {ramp: {to: 1}}, "
                            "{hold: {duration: 30}}]", inst)
    assert isinstance(out, StoppedEarly) and "no frame" in str(out)
    stall = [e for e in of(records, EventRecord) if e.kind == "stall"]
    assert len(stall) == 2 and "holding" in stall[0].message and "aborting" in stall[1].message
    # abort after 3 x 2 s without frames; the protocol clock stood still from the first stall event
    last_frame = of(records, FrameRecord)[-1].time_s
    assert 6.0 < stall[1].time_s - last_frame < 6.0 + 2.0
    assert 2.0 < stall[0].time_s - last_frame < 2.0 + 2.0
    prog = [p for p in of(records, ProgressRecord) if stall[0].time_s + 0.3 < p.time_s < stall[1].time_s]
    assert prog and max(p.elapsed_s for p in prog) - min(p.elapsed_s for p in prog) < 1e-9
    assert all(p.paused for p in prog)
    assert ends_safe(inst)


def test_frame_stall_resumes_when_frames_come_back():
    inst = mock(scale=40.0)
    inst.frames = StallingFrames(inst.clock, t_stop=2.0, t_resume=6.0)
    eng, records, out = run(LIM % ", frame_stall_s: 1.5" + "steps: [{beam: unblank}, {hold: {duration: 6}}]", inst)
    assert out == "complete", out
    stall = [e.message for e in of(records, EventRecord) if e.kind == "stall"]
    assert len(stall) == 2 and "resumed" in stall[1]
    # the 6-s hold took ~6 s of protocol time but longer on the clock (the stall is added)
    start = [e for e in of(records, EventRecord) if e.kind == "step"][1].time_s
    end = [e for e in of(records, EventRecord) if e.kind == "end"][0].time_s
    assert end - start > 6.0 + 2.0
    assert eng.protocol_time == pytest.approx(6.0, abs=0.3)


def test_blanker_disobeying_aborts():
    inst = mock(scale=40.0)

    def meddle():
        # someone unblanks the beam by hand during a blanked protocol
        while inst.source_meter.read_state().level_V < 0.5:
            threading.Event().wait(0.002)
        inst.blanker.unblank()

    threading.Thread(target=meddle, daemon=True).start()
    eng, records, out = run(LIM % "" + "steps: [{beam: blank}, {ramp: {to: 1}}, {hold: {duration: 20}}]", inst)
    assert isinstance(out, StoppedEarly) and "UNBLANKED" in str(out)
    assert ends_safe(inst)


# ----------------------------------------------------------------------------- operator
def test_pause_holds_the_level_and_stops_the_protocol_clock():
    inst = mock(scale=40.0)
    proto = parse_protocol(LIM % "" + "steps: [{ramp: {to: 2}}, {hold: {duration: 2}}]")
    records = []
    eng = Engine(proto, inst, [records.append])

    def operator():
        while eng.setpoint < 1.0:
            threading.Event().wait(0.001)
        eng.pause()
        t = inst.clock.now()
        while inst.clock.now() < t + 4.0:
            threading.Event().wait(0.005)
        eng.resume()

    threading.Thread(target=operator, daemon=True).start()
    assert eng.run() == "complete"
    prog = of(records, ProgressRecord)
    paused = [p for p in prog if p.paused]
    assert paused and paused[-1].time_s - paused[0].time_s > 3.0
    assert max(p.elapsed_s for p in paused) - min(p.elapsed_s for p in paused) < 1e-9
    lv = {b.setpoint_V for b in of(records, BiasSample) if paused[0].time_s <= b.time_s <= paused[-1].time_s}
    assert len(lv) == 1 and 1.0 <= lv.pop() < 2.0                      # held mid-ramp
    assert eng.protocol_time == pytest.approx(eng.timeline.duration_s, abs=0.5)
    assert ends_safe(inst)


def test_abort_ramps_down_at_the_slew_and_raises_stopped_early():
    inst = mock(scale=40.0)
    proto = parse_protocol(LIM % "" + "steps: [{ramp: {to: 4}}, {hold: {duration: 30}}]")
    eng = Engine(proto, inst, [])

    def operator():
        while eng.setpoint < 4.0:
            threading.Event().wait(0.002)
        eng.request_abort("test says stop")

    threading.Thread(target=operator, daemon=True).start()
    with pytest.raises(StoppedEarly, match="test says stop"):
        eng.run()
    assert eng.state == "done" and ends_safe(inst)
    assert_safe_log(inst.source_meter.log, proto.limits)
    levels = [v for _, k, v in inst.source_meter.log if k == "level"]
    assert max(levels) == pytest.approx(4.0) and len([v for v in levels if 0 < v < 4]) > 20


def test_failing_sink_stops_the_run_safely():
    inst = mock(scale=40.0)
    n = {"i": 0}

    def sink(rec):
        n["i"] += 1
        if n["i"] > 20:
            raise OSError("disk full")

    eng = Engine(parse_protocol(LIM % "" + "steps: [{ramp: {to: 2}}, {hold: {duration: 10}}]"), inst, [sink])
    with pytest.raises(InstrumentError, match="recording failed: disk full"):
        eng.run()
    assert ends_safe(inst)


def test_acquire_without_frame_source_refused_before_anything_is_switched_on():
    inst = mock()
    eng, records, out = run(LIM % "" + "steps: [{acquire: {frames: 2}}]", inst)
    assert isinstance(out, UserError) and "frame source" in str(out)
    assert inst.source_meter.log == []


def test_dropped_mock_connection_reconnects():
    inst = mock(scale=40.0, drop_after_s=3.0)
    eng, records, out = run(LIM % "" + "steps: [{ramp: {to: 3}}, {hold: {duration: 5}}]", inst)
    assert out.exit_code == 2 and "reconnected" in str(out)
    assert ends_safe(inst)
    assert_safe_log(inst.source_meter.log, parse_protocol(LIM % "" + "steps: [{hold: {duration: 1}}]").limits)


# ----------------------------------------------------------------------------- beam, frames, dose
def test_acquire_in_a_blanked_protocol_unblanks_only_for_the_frames_and_counts_dose():
    inst = mock(scale=20.0, frames=True, rate_hz=2.0)
    inst.probe_current_A = 5e-11
    text = (LIM % "" + "field_of_view_m: 2.0e-6\nsteps: [{beam: blank}, {acquire: {frames: 3}}, {ramp: {to: 1}}, "
            "{hold: {duration: 3}}, {acquire: {frames: 2}}]")
    eng, records, out = run(text, inst)
    assert out == "complete", out
    frames = of(records, FrameRecord)
    assert len(frames) == 5 and not any(f.blanked for f in frames)
    beam = of(records, BeamSample)
    assert [b.blanked for b in beam] == [True, True, False, True, False, True]
    rate = dose_rate(5e-11, (2e-6) ** 2)
    assert beam[2].dose_rate == pytest.approx(rate) and beam[3].dose_rate == 0.0
    # cumulative dose = rate x unblanked time before each frame (independent bookkeeping from BeamSamples)
    on_periods = [(beam[i].time_s, beam[i + 1].time_s) for i in range(len(beam) - 1) if not beam[i].blanked]
    for f in frames:
        exposure = sum(max(0.0, min(f.time_s, b) - a) for a, b in on_periods)
        if f.time_s > on_periods[-1][0]:
            exposure = sum(b - a for a, b in on_periods[:-1]) + (f.time_s - on_periods[-1][0])
        assert f.dose == pytest.approx(rate * exposure, rel=1e-6, abs=1e-9)
    # the second acquire happened at 1 V: each frame carries the bias at its time
    assert frames[-1].bias_V == pytest.approx(1.0) and frames[0].bias_V == pytest.approx(0.0)
    assert eng.dose == pytest.approx(rate * sum(b - a for a, b in on_periods), rel=1e-6)


def test_status_line_shows_step_time_voltage_current():
    inst = mock(scale=20.0)
    stream = io.StringIO()
    eng, records, out = run(LIM % "" + "steps: [{ramp: {to: 1}}, {hold: {duration: 2}}]", inst,
                            status_stream=stream)
    assert out == "complete"
    text = stream.getvalue()
    assert "\r" in text and text.endswith("\n")
    last = text.rstrip("\n").split("\r")[-1]
    assert "left" in last and " V " in last and " A" in last and "elapsed" in last
    assert "[1/3] ramp to 1 V" in text


def test_abort_before_start_never_switches_on():
    inst = mock()
    eng = Engine(parse_protocol(LIM % "" + "steps: [{ramp: {to: 2}}]"), inst, [])
    eng.request_abort("changed my mind")
    with pytest.raises(StoppedEarly, match="before the output was switched on"):
        eng.run()
    assert not any(k == "output" and v for _, k, v in inst.source_meter.log)


def test_frame_source_errors_are_events_not_the_end_of_the_run():
    inst = mock(scale=40.0, frames=True)
    real_poll = inst.frames.poll
    calls = {"n": 0}

    def flaky_poll():
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            raise OSError("half-written file")
        return real_poll()

    inst.frames.poll = flaky_poll
    eng, records, out = run(LIM % "" + "steps: [{beam: unblank}, {hold: {duration: 3}}, {beam: blank}]", inst)
    assert out == "complete", out
    errs = [e for e in of(records, EventRecord) if "frame source error" in e.message]
    assert len(errs) == 1                       # reported once a minute, not every tick
    assert len(of(records, FrameRecord)) >= 3


class _LateFrames:
    """A frame source that delivers each frame ``delay_s`` after it was scanned (like a folder watch)."""

    def __init__(self, clock, period_s=1.0, delay_s=1.5):
        self.clock, self.period_s, self.delay_s = clock, period_s, delay_s
        self._next = None
        self._i = 0

    def start(self):
        self._next = self.clock.now() + self.period_s

    def poll(self):
        out = []
        while self._next is not None and self._next + self.delay_s <= self.clock.now():
            out.append(Frame(self._i, self._next, np.zeros((4, 4), np.uint16), {"pixel_size_m": 1e-9}))
            self._i += 1
            self._next += self.period_s
        return out

    def stop(self):
        self._next = None


def test_late_frames_carry_the_bias_at_their_own_time_not_at_delivery():
    clock = Clock(20.0)
    bl = MockBeamBlanker()
    inst = Instruments(MockSourceMeter(resistance_ohm=1e7, clock=clock), bl, _LateFrames(clock), clock)
    text = LIM % "" + "sample_interval: 0.1\nsteps: [{beam: unblank}, {ramp: {to: 4, rate: 0.5}}, {hold: {duration: 2}}]"
    eng, records, out = run(text, inst)
    assert out == "complete", out
    bias = of(records, BiasSample)
    t_b = np.array([b.time_s for b in bias])
    v_b = np.array([b.voltage_V for b in bias])
    ramp_frames = [f for f in of(records, FrameRecord) if 0.5 < f.bias_V < 3.5]
    assert len(ramp_frames) >= 3
    for f in ramp_frames:
        # the reading at delivery (1.5 s later on a 0.45 V/s ramp) would be ~0.7 V higher
        assert f.bias_V == pytest.approx(np.interp(f.time_s, t_b, v_b), abs=0.06)
        assert f.current_A == pytest.approx(f.bias_V / 1e7, rel=0.02)


# ----------------------------------------------------------------------------- issue 18: found output, loud off
def test_found_output_ramped_under_the_protocols_limit_or_says_why_not():
    """A source found on at 3 V with a 105 mA limit: the limit goes down to the protocol's 1 µA before the first
    ramp step (old code: the whole ramp-down ran under 105 mA). An instrument that refuses the change (output
    on) still gets its ramp-down, and the event log says under which limit."""
    text = LIM % "" + "steps: [{ramp: {to: 1.0}}]\n"
    inst = mock(scale=100.0, resistance_ohm=1e9, output_on=True, level_V=3.0)
    eng, records, out = run(text, inst)
    assert out == "complete", out
    log = inst.source_meter.log
    assert log[0][1:] == ("limit", 1e-6) and log[1][1] == "level" and log[1][2] < 3.0
    assert any("lowered from 0.105 A to the protocol's 1e-06 A" in e.message for e in of(records, EventRecord))

    class Refuses(MockSourceMeter):
        def set_current_limit(self, current_A):
            raise InstrumentError("mock: -221,\"Settings conflict\"")

    clock = Clock(100.0)
    inst = Instruments(Refuses(clock=clock, resistance_ohm=1e9, output_on=True, level_V=3.0), MockBeamBlanker(),
                       None, clock)
    eng, records, out = run(text, inst)
    assert out == "complete", out
    assert_safe_log(inst.source_meter.log, parse_protocol(text).limits, initial_level=3.0)
    msgs = [e.message for e in of(records, EventRecord)]
    assert any("could not lower the current limit" in m and "under the limit found, 0.105 A" in m for m in msgs)
    assert ends_safe(inst)


def test_short_exit_message_names_the_level_it_was_switched_off_at():
    inst = mock(scale=50.0, resistance_ohm=1e9, short_after_s=2.0, short_resistance_ohm=1e3)
    eng, records, out = run(LIM % ", short_current: 5.0e-7" + "steps: [{ramp: {to: 4.0}}]\n", inst)
    assert isinstance(out, StoppedEarly)
    off = [v for t, k, v in inst.source_meter.log if k == "output"]
    levels = [(t, v) for t, k, v in inst.source_meter.log if k == "level"]
    t_off = [t for t, k, v in inst.source_meter.log if k == "output" and v == 0.0][-1]
    held = [v for t, v in levels if t <= t_off][-1]
    assert off[-1] == 0.0 and held > 0.5
    assert f"output switched off at once at {held:g} V" in str(out), str(out)
