"""The engine through the REAL Keithley 2450 driver against the loopback SCPI emulator.

The emulator's instrument-side log of applied changes (time, kind, value) is
the evidence: |V| within the limit, no step larger than one second of the
maximum slew, the slew over any 2-s window within the limit, the current limit
set before the output goes on, output on at 0 V, the run ends at 0 V with the
output off, and the error queue was read and is empty.

``assert_safe_log`` is shared with the other engine tests (mock-log format is
the same: ``(time_s, kind, value)``).
"""
from __future__ import annotations

import bisect
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from insitu.core.clock import Clock
from insitu.drivers.keithley import Keithley2450
from insitu.drivers.mock import MockBeamBlanker
from insitu.control.engine import Engine
from insitu.core.errors import ConnectionLost, StoppedEarly
from insitu.drivers.interfaces import Instruments
from insitu.control.protocol import parse_protocol, protocol_text
from insitu.core.records import BeamSample, BiasSample, EventRecord
from scpi_emulator import Emulator2450

TOL = 1e-9


# ----------------------------------------------------------------------------- the checker
def level_steps(changes, initial_level=0.0):
    """(times, levels) of the programmed level, starting at -inf with ``initial_level``."""
    ts, vs = [float("-inf")], [float(initial_level)]
    for t, k, v in changes:
        if k == "level":
            ts.append(float(t))
            vs.append(float(v))
    return ts, vs


def max_window_change(ts, vs, window_s=2.0):
    """sup over b of |L(b) - L(b - window)| for a right-continuous step function L."""
    worst = 0.0
    for j in range(1, len(ts)):
        # b in [t_j, t_{j+1}): L(b) = v_j; b - w ranges over [t_j - w, t_{j+1} - w)
        lo = ts[j] - window_s
        hi = ts[j + 1] - window_s if j + 1 < len(ts) else ts[j]
        i0 = bisect.bisect_right(ts, lo) - 1            # level in effect at t_j - w
        i1 = bisect.bisect_left(ts, hi)                  # changes strictly before t_{j+1} - w
        for i in range(max(i0, 0), max(i1, i0 + 1)):
            worst = max(worst, abs(vs[j] - vs[i]))
    return worst


def assert_safe_log(changes, limits, *, initial_level=0.0, check_slew=True):
    """Assert every safety property of the issue on an instrument-side change log.

    ``changes``: ``[(time_s, kind, value)]`` with kinds ``level`` (V), ``output``
    (bool/0/1), ``limit`` (A), in clock seconds.
    """
    ts, vs = level_steps(changes, initial_level)
    levels = vs[1:]
    assert levels, "no level was ever set"
    assert max(abs(v) for v in levels) <= limits.max_voltage + TOL, "a level beyond max_voltage was set"
    if check_slew:
        steps = [abs(b - a) for a, b in zip(vs, vs[1:])]
        assert max(steps) <= limits.max_slew_rate * 1.0 + TOL, \
            f"a single step of {max(steps):.4g} V > one second of max slew"
        worst = max_window_change(ts, vs)
        assert worst <= 2.0 * limits.max_slew_rate + TOL, \
            f"2-s averaged slew {worst / 2:.4g} V/s > {limits.max_slew_rate} V/s"
    outputs = [(t, bool(v)) for t, k, v in changes if k == "output"]
    limit_sets = [(t, float(v)) for t, k, v in changes if k == "limit"]
    ons = [t for t, on in outputs if on]
    assert ons, "the output was never switched on"
    # in the order the instrument saw them (an accelerated mock clock may give both the same time stamp)
    k_limit = next((k for k, (_, kind, _) in enumerate(changes) if kind == "limit"), None)
    k_on = next(k for k, (_, kind, v) in enumerate(changes) if kind == "output" and bool(v))
    assert limit_sets and k_limit is not None and k_limit < k_on, "current limit not set before output on"
    assert all(v <= limits.compliance_current * (1 + TOL) for _, v in limit_sets), "current limit above compliance"
    for t_on in ons:
        i = bisect.bisect_right(ts, t_on) - 1
        assert abs(vs[i]) < 1e-9, f"output switched on at {vs[i]} V, not 0 V"
    assert outputs[-1][1] is False, "the output was left on"
    assert abs(vs[-1]) < 1e-12, f"run ended at {vs[-1]} V, not 0 V"
    return worst if check_slew else None


def test_checker_catches_violations():
    """The checker itself must fail on bad logs (so that passing means something)."""
    lim = parse_protocol(PROTO_RHR).limits
    good = [(0.0, "limit", 1e-6), (0.1, "level", 0.0), (0.2, "output", 1)]
    good += [(0.2 + 0.1 * k, "level", 0.045 * k) for k in range(1, 41)]     # 0.45 V/s
    good += [(10.0 + 0.1 * k, "level", 1.8 - 0.045 * k) for k in range(1, 41)]
    good += [(20.0, "output", 0)]
    assert_safe_log(good, lim)
    jump = good[:5] + [(0.5, "level", 1.0)] + good[5:]
    with pytest.raises(AssertionError, match="single step"):
        assert_safe_log(jump, lim)
    fast = [(0.0, "limit", 1e-6), (0.1, "level", 0.0), (0.2, "output", 1)]
    fast += [(0.2 + 0.1 * k, "level", 0.055 * k) for k in range(1, 41)]     # 0.55 V/s in 0.1-s steps
    fast += [(20.0, "level", 0.0), (20.1, "output", 0)]
    with pytest.raises(AssertionError, match="2-s averaged"):
        assert_safe_log([c for c in fast if c[0] < 19] + [(19.0 + 0.1 * k, "level", 2.2 - 0.05 * k)
                                                          for k in range(1, 45)] + [(30, "output", 0)], lim)
    late_limit = [(0.2, "output", 1), (0.3, "limit", 1e-6)] + good[3:]
    with pytest.raises(AssertionError, match="before output on"):
        assert_safe_log(late_limit, lim)
    left_on = good[:-1]
    with pytest.raises(AssertionError, match="left on"):
        assert_safe_log(left_on, lim)


# ----------------------------------------------------------------------------- helpers
PROTO_RHR = """
name: ramp-hold-reversal
limits: {max_voltage: 2.5, compliance_current: 1.0e-6, max_slew_rate: 0.5, short_current: 8.0e-7}
sample_interval: 0.2
steps:
  - ramp: {to: 2.0}          # at the maximum slew
  - hold: {duration: 2}
  - ramp: {to: -1.5}         # reversal
  - hold: {duration: 1}
  - ramp: {to: 0.0, rate: 0.4}
"""
TIME_SCALE = 8.0   # clock seconds per real second: the protocol above takes ~2 real s


def clock_changes(emu, clock):
    """The emulator's changes with times converted from time.monotonic() to clock seconds."""
    offset = time.monotonic() - clock.now() / clock.time_scale
    return [((t - offset) * clock.time_scale, k, v) for t, k, v in emu.changes]


def keithley_instruments(emu, clock):
    def reconnect():
        return Keithley2450.connect(emu.resource, clock=clock, timeout_s=1.0)

    sm = reconnect()
    return Instruments(sm, MockBeamBlanker(), None, clock, reconnect=reconnect)


def run_engine(protocol, inst, **kw):
    records = []
    eng = Engine(protocol, inst, [records.append], **kw)
    outcome = None
    try:
        outcome = eng.run()
    except Exception as exc:  # noqa: BLE001 - the tests look at it
        outcome = exc
    return eng, records, outcome


# ----------------------------------------------------------------------------- tests
def test_ramp_hold_reversal_through_the_real_driver_is_safe(emulator):
    emu = emulator()
    clock = Clock(TIME_SCALE)
    inst = keithley_instruments(emu, clock)
    proto = parse_protocol(PROTO_RHR)
    eng, records, outcome = run_engine(proto, inst)
    inst.close()
    assert outcome == "complete", outcome
    changes = clock_changes(emu, clock)
    worst = assert_safe_log(changes, proto.limits)
    # the protocol really happened: it reached +2 V and -1.5 V and the guard used the slew it was given
    levels = [v for _, k, v in changes if k == "level"]
    assert max(levels) == pytest.approx(2.0) and min(levels) == pytest.approx(-1.5)
    assert worst > 0.8 * 2 * proto.limits.max_slew_rate
    # ends at 0 V with the output off, as the instrument says
    assert emu.output is False and emu.level_V == 0.0
    # the error queue was read after the last change and is empty
    cmds = emu.commands()
    assert any(c.upper().startswith("SYST:ERR?") for c in cmds[-3:])
    assert len(emu.errors) == 0
    # bias samples on the same clock, every sample interval, within the limits
    bias = [r for r in records if isinstance(r, BiasSample)]
    times = [b.time_s for b in bias]
    assert all(b > a for a, b in zip(times, times[1:]))
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    assert gaps[len(gaps) // 2] == pytest.approx(0.2, abs=0.05)
    assert all(abs(b.setpoint_V) <= 2.5 for b in bias)
    assert bias[-1].setpoint_V == 0.0
    # read-back agrees with the setpoint (resistive load, no compliance)
    assert all(abs(b.voltage_V - b.setpoint_V) < 1e-6 for b in bias[1:])
    kinds = [r.kind for r in records if isinstance(r, EventRecord)]
    assert kinds[0] == "start" and kinds[-1] == "end"


def test_found_on_is_ramped_down_never_jumped(emulator):
    emu = emulator(initial_output=True, initial_level=2.0, initial_limit=1e-4)
    clock = Clock(TIME_SCALE)
    inst = keithley_instruments(emu, clock)
    proto = parse_protocol("""
limits: {max_voltage: 2.5, compliance_current: 1.0e-6, max_slew_rate: 0.5}
steps: [{ramp: {to: 0.5}}, {hold: {duration: 0.4}}]
""")
    eng, records, outcome = run_engine(proto, inst)
    inst.close()
    assert outcome == "complete", outcome
    changes = clock_changes(emu, clock)
    # the first levels go down from 2 V in small steps, while the found output is still on
    first_off = next(t for t, k, v in changes if k == "output" and not v)
    down = [v for t, k, v in changes if k == "level" and t < first_off]
    assert len(down) >= 8 and down[-1] == 0.0
    assert all(b < a for a, b in zip([2.0] + down, down))
    # the whole log (found state included) keeps the slew limits
    ts_, vs_ = level_steps(changes, initial_level=2.0)
    assert max(abs(b - a) for a, b in zip(vs_, vs_[1:])) <= 0.5 + TOL
    assert max_window_change(ts_, vs_) <= 1.0 + TOL
    # the protocol's current limit was set BEFORE the found level was ramped down (the ramp ran under it),
    # and again with the configuration before our output on
    limits = [(t, v) for t, k, v in changes if k == "limit"]
    first_level = next(t for t, k, v in changes if k == "level")
    on_t = [t for t, k, v in changes if k == "output" and v]
    assert limits[0][0] < first_level and limits[0][1] == pytest.approx(1e-6)
    assert all(v == pytest.approx(1e-6) for _, v in limits)
    assert any(first_off < t < on_t[0] for t, _ in limits)
    assert emu.output is False and emu.level_V == 0.0
    ev = [r.message for r in records if isinstance(r, EventRecord)]
    assert any("found ON at 2 V" in m for m in ev)


def when_level_reaches(emu, level_V, action):
    """In a background thread: once the emulator's level reaches ``level_V``, call ``action()``."""
    import threading

    def watch():
        while emu.level_V < level_V:
            time.sleep(0.01)
        action()

    threading.Thread(target=watch, daemon=True).start()


def test_short_switches_off_at_once_and_stops_with_exit_3(emulator):
    emu = emulator()
    clock = Clock(TIME_SCALE)
    inst = keithley_instruments(emu, clock)
    proto = parse_protocol(PROTO_RHR)

    when_level_reaches(emu, 1.0, lambda: setattr(emu, "resistance_ohm", 1e3))  # a filament bridges
    eng, records, outcome = run_engine(proto, inst)
    inst.close()
    assert isinstance(outcome, StoppedEarly) and outcome.exit_code == 3
    assert "short" in str(outcome) or "|I|" in str(outcome)
    assert emu.output is False and emu.level_V == 0.0
    changes = clock_changes(emu, clock)
    # output off came BEFORE the level went to 0 (no ramp through a short)
    t_off = [t for t, k, v in changes if k == "output" and not v][-1]
    t_zero = [t for t, k, v in changes if k == "level" and v == 0.0][-1]
    assert t_off < t_zero
    ev = [r for r in records if isinstance(r, EventRecord)]
    assert any(e.kind == "short" for e in ev)


def test_dropped_connection_reconnects_ramps_down_and_exits_2(emulator):
    emu = emulator()
    clock = Clock(TIME_SCALE)
    inst = keithley_instruments(emu, clock)
    proto = parse_protocol(PROTO_RHR)
    when_level_reaches(emu, 1.5, emu.drop_connection)
    eng, records, outcome = run_engine(proto, inst)
    inst.close()
    assert isinstance(outcome, ConnectionLost) and outcome.exit_code == 2, outcome
    assert "ramped down" in str(outcome) and "output off" in str(outcome)
    assert emu.connections >= 2
    assert emu.output is False and emu.level_V == 0.0
    changes = clock_changes(emu, clock)
    assert_safe_log(changes, proto.limits)
    bias = [r for r in records if isinstance(r, BiasSample)]
    # samples before the drop kept (the tick that met the drop may have no sample: one step of slack)
    assert max(b.setpoint_V for b in bias) >= 1.5 - proto.limits.max_slew_rate * proto.sample_interval
    kinds = [r.kind for r in records if isinstance(r, EventRecord)]
    assert "reconnect" in kinds and "fault" in kinds
    # the ramp-down after reconnecting was recorded too
    i_rec = kinds.index("reconnect")
    assert any(isinstance(r, BiasSample) for r in records[[i for i, r in enumerate(records)
                                                             if isinstance(r, EventRecord)][i_rec]:])


def test_lost_for_good_says_loudly_the_output_may_be_on(emulator):
    emu = emulator()
    clock = Clock(TIME_SCALE)
    inst = keithley_instruments(emu, clock)
    proto = parse_protocol(PROTO_RHR)
    when_level_reaches(emu, 1.0, emu.stop)          # the instrument goes away for good
    eng, records, outcome = run_engine(proto, inst, reconnect_timeout_s=1.0)
    assert outcome.exit_code == 2
    msg = str(outcome)
    assert "MAY STILL BE ON" in msg and "V" in msg
    lvl = float(msg.split("MAY STILL BE ON at ")[1].split(" V")[0])
    # the last setpoint sent: the instrument holds it or the one before (the last command may not have arrived)
    assert abs(lvl - emu.level_V) <= proto.limits.max_slew_rate * proto.sample_interval + 1e-6
    assert lvl >= 1.0 and emu.output is True
    assert "\n" not in msg


def test_beam_state_checked(emulator):
    """A blanker that does not do what it is told aborts the run (exit 3), still ending at 0 V."""
    emu = emulator()
    clock = Clock(TIME_SCALE)
    inst = keithley_instruments(emu, clock)

    class Stuck(MockBeamBlanker):
        def unblank(self):
            pass          # the beam stays blanked

    inst.blanker = Stuck()
    proto = parse_protocol("""
limits: {max_voltage: 2.5, compliance_current: 1.0e-6, max_slew_rate: 0.5}
steps: [{ramp: {to: 1.0}}, {beam: unblank}, {hold: {duration: 2}}]
""")
    eng, records, outcome = run_engine(proto, inst)
    inst.close()
    assert isinstance(outcome, StoppedEarly) and "blank" in str(outcome)
    assert emu.output is False and emu.level_V == 0.0
    assert_safe_log(clock_changes(emu, clock), proto.limits)
    assert any(isinstance(r, BeamSample) for r in records)


# ----------------------------------------------------------------------------- property test on the emulator log


@st.composite
def small_protocols(draw):
    max_v = draw(st.floats(1.0, 5.0))
    slew = draw(st.floats(1.0, 5.0))
    level = st.floats(-max_v, max_v)
    leaf = st.one_of(st.builds(lambda v: {"ramp": {"to": v}}, level),
                     st.builds(lambda v, f: {"ramp": {"to": v, "rate": f * slew}}, level, st.floats(0.5, 1.0)),
                     st.builds(lambda d: {"hold": {"duration": d}}, st.floats(0, 1.0)))
    steps = draw(st.lists(leaf, min_size=1, max_size=3))
    found = draw(st.one_of(st.none(), level))
    return {"limits": {"max_voltage": max_v, "compliance_current": 1e-6, "max_slew_rate": slew},
            "sample_interval": draw(st.sampled_from([0.1, 0.2])), "steps": steps}, found


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_protocols())
def test_random_valid_protocols_never_break_a_limit_on_the_emulator_log(case):
    raw, found = case
    emu = Emulator2450(initial_output=found is not None, initial_level=found or 0.0, resistance_ohm=1e9)
    emu.start()
    try:
        clock = Clock(10.0)
        inst = keithley_instruments(emu, clock)
        proto = parse_protocol(protocol_text(raw))
        eng, records, outcome = run_engine(proto, inst)
        inst.close()
        assert outcome == "complete", outcome
        assert_safe_log(clock_changes(emu, clock), proto.limits, initial_level=found or 0.0)
        assert emu.output is False and emu.level_V == 0.0 and len(emu.errors) == 0
    finally:
        emu.stop()


def test_found_above_the_limit_is_ramped_down_not_switched_off_abruptly(emulator):
    emu = emulator(initial_output=True, initial_level=4.0, initial_limit=1e-4)
    clock = Clock(TIME_SCALE)
    inst = keithley_instruments(emu, clock)
    proto = parse_protocol("""
limits: {max_voltage: 2.5, compliance_current: 1.0e-6, max_slew_rate: 1.0}
steps: [{ramp: {to: 1.0}}]
""")
    eng, records, outcome = run_engine(proto, inst)
    inst.close()
    assert outcome == "complete", outcome
    changes = clock_changes(emu, clock)
    first_off = next(t for t, k, v in changes if k == "output" and not v)
    down = [v for t, k, v in changes if k == "level" and t < first_off]
    assert down[-1] == 0.0 and all(b < a for a, b in zip([4.0] + down, down))
    ts, vs = level_steps(changes, initial_level=4.0)
    assert max(abs(b - a) for a, b in zip(vs, vs[1:])) <= 1.0 + TOL
    assert max_window_change(ts, vs) <= 2.0 + TOL
    # after the found level, the protocol never went beyond its own limit
    assert max(abs(v) for t, k, v in changes if k == "level" and t > first_off) <= 2.5
    assert emu.output is False and emu.level_V == 0.0


# ----------------------------------------------------------------------------- issue 18: ramp-down and replies
PROTO_HOLD = """
name: hold-at-1V
limits: {max_voltage: 2.5, compliance_current: 1.0e-6, max_slew_rate: 0.5}
sample_interval: 0.2
steps:
  - ramp: {to: 1.0}
  - hold: {duration: 6}
"""


def _levels_after(changes, t0):
    return [v for t, k, v in changes if k == "level" and t > t0]


def test_readback_over_the_limit_ramps_down_from_the_level_the_instrument_holds(emulator):
    """Someone else sets 10 V (beyond the 2.5 V limit) while the engine holds 1 V: the read-back trips the fault
    and the ramp-down starts from 10 V, in steps of at most one second of slew, never one jump to the stale
    setpoint (the old code stepped 10 V -> its setpoint at once, or could not step at all)."""
    emu = emulator()
    clock = Clock(TIME_SCALE)
    inst = keithley_instruments(emu, clock)
    proto = parse_protocol(PROTO_HOLD)
    when_level_reaches(emu, 1.0, lambda: (time.sleep(0.2), emu.front_panel_level(10.0)))
    eng, records, outcome = run_engine(proto, inst)
    inst.close()
    assert outcome.exit_code == 2 and "read-back" in str(outcome), outcome
    changes = clock_changes(emu, clock)
    t10 = next(t for t, k, v in changes if k == "level" and v == 10.0)
    down = _levels_after(changes, t10)
    t_off = [t for t, k, v in changes if k == "output" and not v][-1]
    assert all(t < t_off for t, k, v in changes if k == "level" and t > t10), "level changed after output off"
    steps = [a - b for a, b in zip([10.0] + down, down)]
    assert down[-1] == 0.0 and len(down) >= 20
    assert all(0 < s <= proto.limits.max_slew_rate * 1.0 + TOL for s in steps), max(steps)
    assert down[0] > 9.0                                    # the first step starts at the real 10 V
    assert emu.output is False and emu.level_V == 0.0
    ev = [r.message for r in records if isinstance(r, EventRecord)]
    assert any("holds 10 V, not the 1 V last set" in m for m in ev), ev


def test_a_false_readback_over_the_limit_never_ramps_up_to_it(emulator):
    """A single reading that claims 10 V while the instrument holds 1 V: the ramp-down starts from the 1 V read
    back (`:SOUR:VOLT:LEV?`), not from the 10 V reading, so no level is ever set above 1 V."""
    emu = emulator()
    clock = Clock(TIME_SCALE)
    inst = keithley_instruments(emu, clock)
    proto = parse_protocol(PROTO_HOLD)
    read = ':READ? "defbuffer1", READ, SOUR, REL'
    when_level_reaches(emu, 1.0, lambda: emu.override(read, "+2.0E-08,+1.000000E+01,+1.0E+00"))
    eng, records, outcome = run_engine(proto, inst)
    inst.close()
    assert outcome.exit_code == 2 and "read-back 10 V" in str(outcome), outcome
    levels = [v for _, k, v in clock_changes(emu, clock) if k == "level"]
    assert max(levels) == pytest.approx(1.0) and levels[-1] == 0.0
    assert_safe_log(clock_changes(emu, clock), proto.limits)
    assert emu.output is False and emu.level_V == 0.0


@pytest.mark.parametrize("after", [":SOUR:VOLT:ILIM:TRIP?", "SYST:ERR?", ":READ?"])
def test_a_stray_reply_line_is_discarded_and_the_run_completes_safely(emulator, after):
    """One reply line nobody asked for, sent during the ramp: the old driver took it for the next answer and
    stayed one reply behind for good (after 5 failed ramp steps: output off at 1.39 V without a ramp). Now it is
    discarded before the next query, the run completes, and the event log says what was discarded."""
    emu = emulator()
    clock = Clock(TIME_SCALE)
    inst = keithley_instruments(emu, clock)
    proto = parse_protocol(PROTO_RHR)
    when_level_reaches(emu, 1.0, lambda: emu.extra_reply_line(after, "+1.390000E+00"))
    eng, records, outcome = run_engine(proto, inst)
    inst.close()
    assert outcome == "complete", outcome
    changes = clock_changes(emu, clock)
    assert_safe_log(changes, proto.limits)
    levels = [v for _, k, v in changes if k == "level"]
    assert max(levels) == pytest.approx(2.0) and min(levels) == pytest.approx(-1.5)
    assert emu.output is False and emu.level_V == 0.0 and len(emu.errors) == 0
    faults = [r.message for r in records if isinstance(r, EventRecord) and r.kind == "fault"]
    assert len(faults) == 1 and "'+1.390000E+00'" in faults[0] and "nobody asked for" in faults[0]
    # every reading after the stray line is the instrument's own (read-back = setpoint on a resistive load)
    bias = [r for r in records if isinstance(r, BiasSample)]
    assert all(abs(b.voltage_V - b.setpoint_V) < 1e-6 for b in bias[1:])


def test_a_ramp_down_that_keeps_failing_says_loudly_where_the_output_went_off(emulator):
    """The instrument refuses every level above 0.21 V from 1 V on (a range it was switched to behind our back):
    the ramp-down cannot proceed, the output is switched off at the level it holds, and the exit message says
    so in capitals with that level (the old message named only the refused command)."""
    emu = emulator()
    clock = Clock(TIME_SCALE)
    inst = keithley_instruments(emu, clock)
    proto = parse_protocol(PROTO_HOLD)

    def narrow_range():
        emu.range_auto, emu.range_V = False, 0.2

    when_level_reaches(emu, 1.0, narrow_range)
    eng, records, outcome = run_engine(proto, inst)
    inst.close()
    assert outcome.exit_code == 2
    msg = str(outcome)
    assert "OUTPUT SWITCHED OFF AT 1 V WITHOUT RAMPING" in msg and "\n" not in msg, msg
    changes = clock_changes(emu, clock)
    t_off = [t for t, k, v in changes if k == "output" and not v][-1]
    held = [v for t, k, v in changes if k == "level" and t < t_off][-1]
    assert held == pytest.approx(1.0)
    assert emu.output is False and emu.level_V == 0.0       # level set to 0 V once the output was off
    assert any(r.kind == "fault" and "WITHOUT RAMPING" in r.message for r in records if isinstance(r, EventRecord))
