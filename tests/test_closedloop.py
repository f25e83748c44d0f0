"""Closed-loop protocols (issue 20): the ``until:``/``on_seed:`` schema, ``insitu validate``, and the engine's
reactions on the mocks and through the real Keithley driver against the SCPI emulator.

Seeds are posted into the engine's inbox by a sink at a chosen clock time (no detector here: the
detector in the loop is tested on the virtual specimen in ``test_closedloop_virtual.py``).
"""
from __future__ import annotations

import math
import threading

import pytest

from insitu.cli import main
from insitu.control.engine import Engine, EngineState
from insitu.control.plan import level_at, plan, rebase
from insitu.control.protocol import expand, parse_protocol
from insitu.control.rules import Trigger, UntilWatch, parse_trigger
from insitu.core.clock import Clock
from insitu.core.errors import StoppedEarly, UserError
from insitu.core.records import BiasSample, EventRecord, SeedRecord, parse_seed_message
from insitu.drivers.interfaces import Instruments
from insitu.drivers.mock import MockBeamBlanker, MockSourceMeter
from test_engine_emulator import assert_safe_log, clock_changes, keithley_instruments

LIM = "limits: {max_voltage: 5, compliance_current: 1.0e-6, max_slew_rate: 1.0}\nsample_interval: 0.2\n"


# ----------------------------------------------------------------------------- schema
def test_until_and_on_seed_parse_into_the_plan():
    p = parse_protocol(LIM + """on_seed: blank
steps:
  - ramp: {to: 2, rate: 0.5, until: {current_above: 1.0e-7, seeds: 2}}
  - hold: {duration: 30, until: {current_below: -1.0e-8}}
  - hold: {duration: 5}
""")
    assert p.on_seed == "blank"
    flat = plan(p)
    assert flat[0].until.seeds == 2 and flat[0].until.current_above == 1e-7 and flat[0].until.current_below is None
    assert flat[1].until.current_below == -1e-8
    assert flat[2].until is None
    tl = expand(p)
    assert tl.segments[0].condition == "until seeds >= 2 or I > 1e-07 A"
    assert tl.segments[1].condition == "until I < -1e-08 A" and tl.segments[2].condition == ""
    # the timeline counts a conditional step with its longest duration
    assert tl.segments[1].t_end_s - tl.segments[1].t_start_s == pytest.approx(30.0)
    assert parse_protocol(LIM + "steps: [{hold: {duration: 1}}]").on_seed == "none"


@pytest.mark.parametrize("steps, on_seed, message", [
    ("[{hold: {duration: 5, until: {}}}]", None, r"p\.yaml: steps\[0\]\.hold\.until: .*at least one of seeds"),
    ("[{hold: {duration: 5, until: {seeds: 0}}}]", None, r"steps\[0\]\.hold\.until\.seeds: .*greater than or equal to 1"),
    ("[{ramp: {to: 1, until: {frames: 3}}}]", None, r"steps\[0\]\.ramp\.until\.frames: unknown key"),
    ("[{ramp: {to: 1, until: {seeds: yes}}}]", None, r"steps\[0\]\.ramp\.until\.seeds: .*boolean"),
    ("[{acquire: {frames: 2, until: {seeds: 1}}}]", None, r"steps\[0\]\.acquire\.until: unknown key"),
    ("[{hold: {duration: 1}}, {ramp: {to: 2, until: {current_above: 2.0e-6}}}]", None,
     r"steps\[1\]\.ramp\.until\.current_above: 2e-06 A can never be met.*compliance_current 1e-06 A"),
    ("[{repeat: {times: 2, steps: [{hold: {duration: 1, until: {current_below: -1.0e-6}}}]}}]", None,
     r"steps\[0\]\.repeat\.steps\[0\]\.hold\.until\.current_below: -1e-06 A can never be met"),
    ("[{hold: {duration: 1}}]", "sometimes", r"p\.yaml: on_seed: Input should be 'none', 'mark', 'blank'"),
])
def test_bad_conditions_are_one_line_errors_naming_step_and_key(steps, on_seed, message):
    text = LIM + (f"on_seed: {on_seed}\n" if on_seed else "") + f"steps: {steps}\n"
    with pytest.raises(UserError, match=message) as exc:
        parse_protocol(text, "p.yaml")
    assert "\n" not in str(exc.value)


def test_validate_shows_conditions_and_maximum_durations(tmp_path, capsys):
    f = tmp_path / "p.yaml"
    f.write_text(LIM + """on_seed: hold
steps:
  - ramp: {to: 2, rate: 0.5}
  - hold: {duration: 3000, until: {seeds: 1}}
  - ramp: {to: 0, rate: 0.5}
""")
    assert main(["validate", str(f)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "hold 3000 s" in line)
    assert "[until seeds >= 1; at most 0:50:00]" in row
    assert "on seed: hold" in out
    assert "at most: 1 conditional step may end earlier" in out


def test_the_examples_validate(capsys):
    from pathlib import Path

    ex = Path(__file__).resolve().parents[1] / "examples"
    for name in ("ding2023-find-onset.yaml", "ding2023-find-onset-dose.yaml"):
        assert main(["validate", str(ex / name)]) == 0
        out = capsys.readouterr().out
        assert "until seeds >= 1" in out
    p = parse_protocol((ex / "ding2023-find-onset-dose.yaml").read_text())
    assert p.on_seed == "blank" and any(s.kind == "acquire" for s in plan(p)[5:])


# ----------------------------------------------------------------------------- pure parts
def test_rebase_starts_a_step_from_the_present_level():
    p = parse_protocol(LIM + "steps: [{ramp: {to: 3, rate: 0.5}}, {hold: {duration: 1}}, {ramp: {to: -1, rate: 0.5}}]")
    flat = plan(p)
    down = rebase(flat[2], 1.3, 0.2)              # the ramp up ended early at 1.3 V
    assert down.v_start_V == 1.3 and down.v_end_V == -1.0
    assert down.n_ticks == math.ceil(2.3 / 0.1 - 1e-9)
    assert [level_at(down, k * 0.2, 0.2) for k in (0, down.n_ticks)] == [1.3, -1.0]
    assert rebase(flat[1], 1.3, 0.2).v_end_V == 1.3
    assert rebase(flat[2], 3.0, 0.2) is flat[2]


def test_seeds_count_from_the_step_start_and_messages_round_trip():
    w = UntilWatch(parse_protocol(LIM + "steps: [{hold: {duration: 1, until: {seeds: 2}}}]").steps[0].hold.until, 50.0)
    early = SeedRecord(60.0, 1, 3.0, 4.0, 2, 4, 49.9)
    assert w.seed(early) is None and w.n_seeds == 0
    assert w.seed(SeedRecord(70.0, 2, 3.0, 4.0, 5, 6, 55.0)) is None
    t = w.seed(SeedRecord(80.0, 5, 9.0, 4.0, 6, 8, 75.0))
    assert t == Trigger("until seeds 2", seed_id=5, frame=8)
    assert parse_trigger(t.message()) == t
    assert parse_seed_message(60.0, early.message()) == early


# ----------------------------------------------------------------------------- engine on the mocks
def mock_instruments(scale=100.0, **kw):
    clock = Clock(scale)
    return Instruments(MockSourceMeter(clock=clock, **kw), MockBeamBlanker(blanked=False), None, clock)


class SeedAt:
    """A sink that posts seeds into the engine when the clock passes given times (s)."""

    def __init__(self, times_s):
        self.times = sorted(times_s)
        self.engine = None
        self.posted: list[SeedRecord] = []

    def __call__(self, rec):
        if not isinstance(rec, BiasSample) or not self.times or rec.time_s < self.times[0]:
            return
        t = self.times.pop(0)
        k = len(self.posted)
        s = SeedRecord(rec.time_s, 10 + k, 20.0 + k, 30.0, 3 * k + 1, 3 * k + 2, t)
        self.posted.append(s)
        self.engine.post_seed(s)


def run_with_seeds(text, seed_times, inst=None, **kw):
    inst = inst or mock_instruments()
    seeds = SeedAt(seed_times)
    records: list = []
    eng = Engine(parse_protocol(text), inst, [records.append, seeds], **kw)
    seeds.engine = eng
    try:
        out = eng.run()
    except Exception as exc:  # noqa: BLE001 - the tests look at it
        out = exc
    return eng, records, out, inst


def events(records, kind=None):
    return [r for r in records if isinstance(r, EventRecord) and (kind is None or r.kind == kind)]


def ends_safe(inst):
    s = inst.source_meter.read_state()
    return s.output_on is False and s.level_V == 0.0


def test_hold_until_seeds_ends_at_the_seed_and_the_protocol_goes_on():
    text = LIM + """steps:
  - ramp: {to: 2, rate: 1}
  - hold: {duration: 3000, until: {seeds: 1}}
  - ramp: {to: -1, rate: 1}
  - hold: {duration: 2}
"""
    eng, records, out, inst = run_with_seeds(text, [30.0])
    assert out == "complete", out
    trig = events(records, "trigger")
    assert [e.message for e in trig] == ["until seeds 1 met by seed 10 (frame 2)"]
    assert 30.0 <= trig[0].time_s <= 30.0 + 2 * 0.2 + 0.05          # at the next tick after the seed arrived
    # the seed is an event in the file's words, and a typed record
    seed_ev = events(records, "seed")
    assert len(seed_ev) == 0 and [type(r).__name__ for r in records].count("SeedRecord") == 1
    steps = [e.message for e in events(records, "step")]
    assert steps[1].startswith("[2/5] hold 3000 s at 2 V, until seeds >= 1")
    assert steps[2].startswith("[3/5] ramp to -1 V")
    bias = [r for r in records if isinstance(r, BiasSample)]
    assert min(b.setpoint_V for b in bias) == pytest.approx(-1.0)          # the reversal ran
    assert eng.protocol_time < 60.0                                         # not 3000 s
    assert ends_safe(inst) and events(records)[-1].kind == "end"


def test_a_ramp_ended_early_keeps_its_level_and_the_next_hold_holds_it():
    text = LIM + """steps:
  - ramp: {to: 4, rate: 0.1, until: {seeds: 1}}
  - hold: {duration: 4}
"""
    eng, records, out, inst = run_with_seeds(text, [10.0])
    assert out == "complete", out
    bias = [r for r in records if isinstance(r, BiasSample)]
    t_trig = events(records, "trigger")[0].time_s
    level = [b.setpoint_V for b in bias if b.time_s <= t_trig][-1]
    assert 0.7 <= level <= 1.05                                       # 0.1 V/s for up to 10 s
    held = [b.setpoint_V for b in bias if t_trig < b.time_s <= t_trig + 4.0]
    assert held and all(v == level for v in held)                     # held, never beyond
    assert max(b.setpoint_V for b in bias) == level
    assert any("from " in e.message and "ended early" in e.message for e in events(records, "step"))
    assert ends_safe(inst)


def test_seeds_before_the_step_do_not_count():
    text = LIM + """steps:
  - hold: {duration: 20}
  - hold: {duration: 20, until: {seeds: 1}}
"""
    eng, records, out, inst = run_with_seeds(text, [5.0])
    assert out == "complete"
    assert events(records, "trigger") == []
    assert eng.protocol_time == pytest.approx(40.0, abs=0.5)


def test_on_seed_abort_ramps_down_and_stops_with_exit_3():
    text = LIM + "on_seed: abort\nsteps: [{ramp: {to: 3, rate: 1}}, {hold: {duration: 600}}]\n"
    eng, records, out, inst = run_with_seeds(text, [10.0])
    assert isinstance(out, StoppedEarly) and out.exit_code == 3
    assert "on_seed abort met by seed 10 (frame 2)" in str(out) and "ramped to 0 V, output off" in str(out)
    assert ends_safe(inst)
    bias = [r for r in records if isinstance(r, BiasSample)]
    assert bias[-1].setpoint_V == 0.0 and max(b.setpoint_V for b in bias) == pytest.approx(3.0)
    # the ramp-down respects the slew limit like a scripted ramp
    assert_safe_log(inst.source_meter.log, parse_protocol(text).limits)


def test_on_seed_blank_blanks_at_once_and_mark_only_records():
    text = LIM + "on_seed: blank\nsteps: [{ramp: {to: 1, rate: 1}}, {hold: {duration: 20}}]\n"
    eng, records, out, inst = run_with_seeds(text, [5.0, 12.0])
    assert out == "complete"
    assert inst.blanker.is_blanked()
    beam = [e for e in events(records, "beam") if "on_seed blank" in e.message]
    assert len(beam) == 1 and 5.0 <= beam[0].time_s <= 5.5
    assert [e.message for e in events(records, "trigger")] == ["on_seed blank met by seed 10 (frame 2)",
                                                              "on_seed blank met by seed 11 (frame 5)"]
    text = LIM + "on_seed: mark\nsteps: [{hold: {duration: 10}}]\n"
    eng, records, out, inst = run_with_seeds(text, [5.0])
    assert out == "complete" and not inst.blanker.is_blanked()
    assert [e.message for e in events(records, "trigger")] == ["on_seed mark met by seed 10 (frame 2)"]
    assert eng.protocol_time == pytest.approx(10.0, abs=0.5)


def test_on_seed_hold_pauses_the_protocol_clock_until_resume():
    text = LIM + "on_seed: hold\nsteps: [{ramp: {to: 1, rate: 1}}, {hold: {duration: 10}}]\n"
    inst = mock_instruments(scale=50.0)
    seeds = SeedAt([4.0])
    records: list = []
    eng = Engine(parse_protocol(text), inst, [records.append, seeds])
    seeds.engine = eng
    t = threading.Thread(target=eng.run)
    t.start()
    try:
        deadline = inst.clock.now() + 200.0
        while eng.state != EngineState.HELD and inst.clock.now() < deadline:
            inst.clock.sleep(1.0)
        assert eng.state == EngineState.HELD and eng.state == "held"
        p0, t0 = eng.protocol_time, inst.clock.now()
        inst.clock.sleep(30.0)
        assert eng.protocol_time == p0                       # the protocol clock stands still
        assert inst.source_meter.read_state().level_V == 1.0
        assert "HELD" in eng.status_line()
        eng.resume()
    finally:
        t.join(60)
    assert not t.is_alive() and eng.state == EngineState.DONE
    assert ends_safe(inst)
    assert inst.clock.now() - t0 >= 30.0 and eng.protocol_time == pytest.approx(12.4, abs=0.6)   # 1.2 s up, 10 s, 1.2 s down
    assert [e.message for e in events(records, "trigger")] == ["on_seed hold met by seed 10 (frame 2)"]
    assert any("resumed by the operator" in e.message for e in events(records, "info"))


def test_the_operator_disarms_rules():
    text = LIM + "on_seed: abort\nsteps: [{hold: {duration: 12, until: {seeds: 1}}}]\n"
    inst = mock_instruments()
    seeds = SeedAt([6.0])
    records: list = []
    eng = Engine(parse_protocol(text), inst, [records.append, seeds])
    seeds.engine = eng

    def disarm_both(rec):
        if isinstance(rec, BiasSample) and rec.time_s > 1.0 and eng.armed():
            assert eng.armed() == {"on_seed": "abort", "until": "until seeds >= 1"}
            eng.disarm("on_seed")
            eng.disarm("until")
    eng.sinks.insert(0, disarm_both)
    assert eng.run() == "complete"
    assert eng.armed() == {}
    assert eng.protocol_time == pytest.approx(12.0, abs=0.5)         # ran its scripted time
    assert events(records, "trigger") == []
    msgs = [e.message for e in events(records, "info") if "disarmed" in e.message]
    assert msgs == ["on_seed abort disarmed by the operator",
                    "until seeds >= 1 disarmed by the operator (step hold 12 s at 0 V)"]
    with pytest.raises(ValueError, match="unknown rule"):
        eng.disarm("everything")


def test_current_above_on_the_mock_with_a_hold_of_the_level():
    # 10 MΩ: 0.1 µA per V; current_above 2.5e-7 A ends the ramp at the first level above 2.5 V
    text = LIM + "steps: [{ramp: {to: 4, rate: 0.5, until: {current_above: 2.5e-7}}}, {hold: {duration: 2}}]\n"
    eng, records, out, inst = run_with_seeds(text, [], inst=mock_instruments(resistance_ohm=10e6))
    assert out == "complete"
    trig = events(records, "trigger")
    assert len(trig) == 1 and trig[0].message.startswith("until current_above 2.5e-07 A met by I = ")
    levels = [v for _, k, v in inst.source_meter.log if k == "level"]
    assert max(levels) == pytest.approx(2.6, abs=1e-9)              # 0.1 V steps: 2.6 V is the first > 2.5 V


# ----------------------------------------------------------------------------- through the real driver
def test_current_above_ends_a_ramp_on_the_emulator_at_the_right_level(emulator):
    """The real Keithley driver against the SCPI emulator (5 MΩ load): the instrument log shows no level
    beyond the first one whose current exceeds the threshold, the slew within limits, 0 V and off at the end."""
    emu = emulator(resistance_ohm=5e6)
    clock = Clock(8.0)
    inst = keithley_instruments(emu, clock)
    proto = parse_protocol("""
limits: {max_voltage: 2.5, compliance_current: 1.0e-6, max_slew_rate: 0.5}
sample_interval: 0.2
steps:
  - ramp: {to: 2.4, rate: 0.4, until: {current_above: 2.0e-7}}
  - hold: {duration: 1}
  - ramp: {to: -0.5, rate: 0.4}
""")
    records: list = []
    eng = Engine(proto, inst, [records.append])
    assert eng.run() == "complete"
    inst.close()
    changes = clock_changes(emu, clock)
    assert_safe_log(changes, proto.limits)
    levels = [v for _, k, v in changes if k == "level"]
    step = 0.4 * 0.2
    first_above = math.floor(2.0e-7 * 5e6 / step + 1) * step       # first staircase level with V/R > 0.2 µA
    assert max(levels) == pytest.approx(first_above, abs=1e-6)
    assert max(levels) < 2.4 and min(levels) == pytest.approx(-0.5)
    trig = [r for r in records if isinstance(r, EventRecord) and r.kind == "trigger"]
    assert len(trig) == 1 and parse_trigger(trig[0].message).current_A > 2.0e-7
    assert emu.output is False and emu.level_V == 0.0


# ----------------------------------------------------------------------------- the seed watcher
def _frames(n=10, size=96, start=5):
    import numpy as np

    rng = np.random.default_rng(0)
    for k in range(n):
        f = rng.poisson(100, (size, size)).astype(float)
        if k >= start:
            f[48:53, 32:37] += 60
        yield k, f


def test_seed_watcher_detects_in_its_own_thread_and_numbers_recorded_frames():
    from insitu.core.records import FrameRecord
    from insitu.seedwatch import SeedWatcher

    threads = set()
    got: list = []
    w = SeedWatcher(lambda rec: (threads.add(threading.get_ident()), got.append(rec))).start()
    for k, f in _frames():
        w(FrameRecord(100.0 + 25.0 * k, f, 0.0, 0.0, False, 0.0, 2e-8))
    w.stop()
    assert threads and threading.get_ident() not in threads          # never on the caller's (control) thread
    assert [(r.first_frame, r.confirm_frame) for r in got] == [(5, 7)]
    assert got[0].confirm_time_s == 100.0 + 25.0 * 7
    assert abs(got[0].x_px - 34) <= 1 and abs(got[0].y_px - 50) <= 1
    assert w.n_received == w.n_analysed == 10


def test_seed_watcher_survives_a_detector_failure_and_says_so():
    import numpy as np

    from insitu.core.records import FrameRecord
    from insitu.seedwatch import SeedWatcher

    said: list = []
    w = SeedWatcher(lambda rec: None, on_error=said.append).start()
    w(FrameRecord(0.0, np.zeros((64, 64)), 0.0, 0.0, False, 0.0, 2e-8))
    w(FrameRecord(25.0, np.zeros((32, 48)), 0.0, 0.0, False, 0.0, 2e-8))    # a frame of another shape
    w(FrameRecord(50.0, np.zeros((64, 64)), 0.0, 0.0, False, 0.0, 2e-8))
    w.stop()
    assert len(said) == 1 and said[0].startswith("live seed detection stopped at frame 1: ValueError")
    assert w.error == said[0] and w.n_analysed == 1


def test_attach_gives_a_watcher_only_to_protocols_that_react_to_seeds():
    from insitu.seedwatch import attach

    plain = Engine(parse_protocol(LIM + "steps: [{hold: {duration: 1, until: {current_above: 1.0e-7}}}]"),
                   mock_instruments())
    assert not plain.needs_seeds and attach(plain) is None
    eng = Engine(parse_protocol(LIM + "steps: [{hold: {duration: 1, until: {seeds: 1}}}]"), mock_instruments())
    w = attach(eng)
    try:
        assert eng.needs_seeds and w in eng.sinks and w.post == eng.post_seed
    finally:
        w.stop()


def test_live_view_shows_the_results_a_watcher_delivers_after_the_run_ended():
    """The runner stops waiting for its seed watcher after 5 s (a cold numba cache can hold it up
    longer); the GUI's analysis thread, told the run has ended (finish), still passes on every later
    result of the watcher, the last one included, and then ends."""
    import time
    from types import SimpleNamespace as NS

    import numpy as np

    from insitu.core.records import FrameRecord
    from insitu.gui.analysis_thread import AnalysisThread, LatestSlot
    from insitu.seedwatch import SeedWatcher

    gate = threading.Event()

    class Slow:
        """A detector that waits at its first frame until the test lets it go on."""
        def feed(self, frame, time_s):
            gate.wait(10)
            return NS(time_s=time_s, new_seeds=[], differential=None)

    w = SeedWatcher(lambda rec: None, analyzer=Slow()).start()
    view = AnalysisThread(LatestSlot(), analyzer="unused", max_rate_hz=0)
    view.follow(w)
    view.start()
    for k in range(3):
        w(FrameRecord(10.0 * k, np.zeros((96, 96)), 0.0, 0.0, False, 0.0, 2e-8))
    w.stop(timeout_s=0.05)                 # the runner gives up waiting; the watcher still holds 3 frames
    assert not w.done
    view.finish()                          # the run has ended
    time.sleep(0.1)
    assert view.is_alive() and view.results.take() is None
    gate.set()
    view.join(10)
    assert w.done and not view.is_alive()
    assert view.n_shared == 3
    shown = []
    while (res := view.results.take()) is not None:
        shown.append(res.time_s)
    assert shown and shown[-1] == 20.0     # the newest (last) result reached the view
