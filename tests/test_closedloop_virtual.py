"""Closed loop on the virtual specimen (issue 20, "Done when"): the live seed detector in its own thread
ends a hold at the first true seed, blanks the beam or aborts on a seed, and a replay of the recorded
session fires the same triggers at the same frames.

The specimen's ground truth (``/entry/sample/truth/seeds``, nucleation times) is the reference. The
protocols image 8 frames at 0 V first: the detector needs a few frames of reference before it can
confirm anything (a seed already there in the first frames is part of the background).
"""
from __future__ import annotations

import numpy as np
import pytest

from insitu.cli import main
from insitu.commands.demo import run_virtual_experiment
from insitu.control.protocol import parse_protocol
from insitu.control.rules import parse_trigger
from insitu.core.records import parse_seed_message
from insitu.core.session import open_session
from insitu.seedwatch import replay_triggers

#: virtual frame period (s, the mock default) and the accelerated clock of these runs
PERIOD_S = 25.0
TIME_SCALE = 50.0
SPECIMEN = 12

HEAD = """
limits: {max_voltage: 17.5, compliance_current: 1.0e-6, max_slew_rate: 0.5, short_current: 8.0e-7, frame_stall_s: 30}
sample_interval: 0.2
"""
WARM_UP = """  - beam: unblank
  - acquire: {frames: 8}             # the detector's reference, at 0 V (nothing nucleates without current)
  - ramp: {to: 10.0, rate: 0.45}
"""
HOLD_UNTIL_SEED = HEAD + "name: hold-until-seed\nsteps:\n" + WARM_UP + """  - hold: {duration: 3000, until: {seeds: 1}}
  - ramp: {to: -2.0, rate: 0.45}
  - hold: {duration: 10}
"""


def run_virtual(text, path):
    status, specimen, engine = run_virtual_experiment(parse_protocol(text), path, seed=SPECIMEN,
                                                      time_scale=TIME_SCALE)
    return status, engine, open_session(path)


def of_kind(session, kind):
    return [(t, m) for t, k, m in session.events if k == kind]


@pytest.fixture(scope="module")
def hold_session(tmp_path_factory):
    path = tmp_path_factory.mktemp("closedloop") / "hold.h5"
    status, engine, session = run_virtual(HOLD_UNTIL_SEED, path)
    yield status, engine, session, path
    session.close()


def test_hold_until_seeds_ends_after_the_first_true_seed_and_the_protocol_completes(hold_session):
    status, engine, s, _ = hold_session
    assert status == "complete" and s.status == "complete"
    truth = s.group("/entry/sample/truth/seeds")
    t_nuc = float(np.min(truth["t_nucleation_s"]))
    trig = of_kind(s, "trigger")
    assert [parse_trigger(m).rule for _, m in trig] == ["until seeds 1"]
    t_trig = trig[0][0]
    # ends after the first true seed nucleated, within 4 frame periods + 5 s of it
    assert t_nuc < t_trig <= t_nuc + 4 * PERIOD_S + 5.0, (t_nuc, t_trig)
    # the seed that met it is a 'seed' event in the file, confirmed at the frame the trigger names
    seeds = [parse_seed_message(t, m) for t, m in of_kind(s, "seed")]
    met = parse_trigger(trig[0][1])
    first = next(r for r in seeds if r.seed_id == met.seed_id)
    assert first.confirm_frame == met.frame
    assert first.confirm_time_s == pytest.approx(float(s.frame_table["time"][met.frame]), abs=1e-3)
    # ... and it is a true seed: within 4 px of one the specimen made
    d = np.hypot(np.asarray(truth["x_px"]) - first.x_px, np.asarray(truth["y_px"]) - first.y_px)
    assert d.min() <= 4.0
    # the hold did not run its 3000 s; the protocol went on (the reversal ran) and ended at 0 V, output off
    steps = [m for _, m in of_kind(s, "step")]
    assert any(m.startswith("[5/") and "ramp to -2 V" in m for m in steps)
    assert float(np.min(s.bias["setpoint"])) == pytest.approx(-2.0)
    assert s.bias["setpoint"][-1] == 0.0
    assert of_kind(s, "info")[-1][1] == "ramped to 0 V, output off"
    assert engine.protocol_time < 1000.0


def test_replay_fires_the_same_triggers_at_the_same_frames(hold_session):
    _, engine, s, path = hold_session
    recorded = [parse_trigger(m) for _, m in of_kind(s, "trigger")]
    recorded_seeds = [parse_seed_message(t, m) for t, m in of_kind(s, "seed")]
    seeds, triggers = replay_triggers(path)
    assert recorded and triggers == recorded
    # the detector saw the same seeds at the same frames (those the engine took in before the end)
    assert [(r.seed_id, r.first_frame, r.confirm_frame) for r in recorded_seeds] == \
        [(r.seed_id, r.first_frame, r.confirm_frame) for r in seeds[:len(recorded_seeds)]]


def test_replay_of_a_session_with_a_different_rule_fires_that_rule(hold_session, tmp_path):
    """The replay judges the protocol of the file: a changed threshold changes the trigger (the test can fail)."""
    import h5py
    import shutil

    _, _, s, path = hold_session
    copy = tmp_path / "copy.h5"
    shutil.copy(path, copy)
    with h5py.File(copy, "r+") as f:
        text = f["/entry/protocol"][()].decode().replace("until: {seeds: 1}",
                                                         "until: {seeds: 1, current_above: 1.0e-9}")
        del f["/entry/protocol"]
        f["/entry/protocol"] = text
    _, triggers = replay_triggers(copy)
    assert [t.rule for t in triggers] == ["until current_above 1e-09 A"]      # the first reading of the hold
    i_hold = [i for t, i in zip(s.bias["time"], s.bias["current"]) if t >= of_kind(s, "step")[3][0]]
    assert triggers[0].current_A == pytest.approx(i_hold[0], rel=1e-3)


def test_on_seed_blank_blanks_within_one_frame_period_of_the_confirmation(tmp_path):
    text = HEAD + "name: blank-on-seed\non_seed: blank\nsteps:\n" + WARM_UP + "  - hold: {duration: 300}\n"
    status, engine, s = run_virtual(text, tmp_path / "blank.h5")
    assert status == "complete"
    trig = of_kind(s, "trigger")
    assert trig and parse_trigger(trig[0][1]).rule == "on_seed blank"
    first = parse_trigger(trig[0][1])
    t_confirm = float(s.frame_table["time"][first.frame])
    blanks = [t for t, m in of_kind(s, "beam") if "on_seed blank" in m]
    assert len(blanks) == 1 and t_confirm <= blanks[0] <= t_confirm + PERIOD_S
    beam_t, beam_b = np.asarray(s.beam["time"]), np.asarray(s.beam["blanked"])
    assert beam_b[np.searchsorted(beam_t, blanks[0], side="right") - 1]      # the blanker's own record
    assert float(np.max(s.frame_table["time"])) <= blanks[0]               # no frame after it (beam off)
    s.close()


def test_on_seed_abort_exits_3_with_the_output_off(tmp_path, capsys):
    p = tmp_path / "abort.yaml"
    p.write_text(HEAD + "name: abort-on-seed\non_seed: abort\nsteps:\n" + WARM_UP + "  - hold: {duration: 3000}\n")
    out = tmp_path / "abort.h5"
    rc = main(["run", str(p), "--mock", "--seed", str(SPECIMEN), "--time-scale", str(TIME_SCALE), "--out", str(out),
               "--quiet"])
    err = capsys.readouterr().err
    assert rc == 3, err
    assert "on_seed abort met by seed" in err and "ramped to 0 V, output off" in err
    s = open_session(out)
    assert s.status == "aborted"
    assert s.bias["setpoint"][-1] == 0.0 and float(np.max(s.bias["setpoint"])) == pytest.approx(10.0)
    kinds = [k for _, k, _ in s.events]
    assert "seed" in kinds and "trigger" in kinds and kinds[-1] == "end"
    assert any(m == "ramped to 0 V, output off" for _, m in of_kind(s, "info"))
    s.close()


def test_replay_cli_compares_triggers(hold_session, capsys):
    _, _, s, path = hold_session
    assert main(["replay", str(path), "--triggers"]) == 0
    out = capsys.readouterr().out
    assert "same: recorded until seeds 1 met by seed" in out and "the same" in out.splitlines()[-1]
