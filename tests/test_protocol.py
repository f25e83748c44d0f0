"""Protocol schema, one-line errors naming the field, expansion (checked against hand-computed timelines)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from insitu.cli import main
from insitu.control.dose import dose_rate
from insitu.core.errors import UserError
from insitu.control.plan import is_done, level_at
from insitu.control.protocol import effective_rate, expand, flatten, load_protocol, parse_protocol, protocol_text

ROOT = Path(__file__).resolve().parents[1]

ISSUE_EXAMPLE = """
name: ding2023-first-extraction
limits:
  max_voltage: 17.5          # V, required: |setpoint| never above
  compliance_current: 1.0e-6 # A, required: set on the instrument before output on
  max_slew_rate: 0.5         # V/s, required
  short_current: 8.0e-7      # A, optional: |I| at or above -> short suspender
  frame_stall_s: 30          # s, optional: no frame this long while imaging -> stall suspender
sample_interval: 0.2         # s, source-meter read period (default 0.2)
on_compliance: hold          # hold | abort (default hold)
steps:
  - beam: blank              # blank | unblank
  - acquire: {frames: 2}     # record N frames; if blanked, unblank for them, then blank again
  - ramp: {to: 10.0, rate: 0.2}   # rate optional: default and maximum = max_slew_rate
  - hold: {duration: 600}
  - repeat: {times: 3, steps: [{ramp: {to: 17.0}}, {hold: {duration: 60}}, {ramp: {to: 10.0}}]}
  - ramp: {to: -10.0}        # reversal
  - ramp: {to: 0.0}
"""


def test_issue_example_expands_as_computed_by_hand():
    p = parse_protocol(ISSUE_EXAMPLE, "protocol.yaml")
    assert p.name == "ding2023-first-extraction" and p.on_compliance == "hold"
    tl = expand(p, 5e-11, frame_rate_hz=1.0)
    dt = 0.2
    r = 0.5 * 2 / (2 + dt) * (1 - 1e-3)          # the default ramp rate: the capped maximum slew
    assert effective_rate(None, p.limits, dt) == pytest.approx(r)

    def ramp_t(dv, rate):
        return math.ceil(abs(dv) / (rate * dt) - 1e-9) * dt

    expected = 2.0 + ramp_t(10, 0.2) + 600 + 3 * (ramp_t(7, r) + 60 + ramp_t(7, r)) + ramp_t(20, r) + ramp_t(10, r)
    assert tl.duration_s == pytest.approx(expected)
    assert tl.peak_abs_V == 17.0
    assert len(tl.labels) == 4 + 9 + 2 and len(tl.segments) == len(tl.labels)
    assert tl.labels[4].startswith("[1/3] ramp") and tl.labels[7].startswith("[2/3] ramp")
    # the beam is blanked except during the acquire (2 frames at 1 frame/s)
    assert tl.beam_on_s == pytest.approx(2.0) and tl.n_frames == 2
    assert tl.dose == pytest.approx(2.0 * dose_rate(5e-11, p.field_of_view_m ** 2))
    # segments are contiguous in time and level
    for a, b in zip(tl.segments, tl.segments[1:]):
        assert b.t_start_s == pytest.approx(a.t_end_s) and b.v_start_V == a.v_end_V


def test_examples_are_valid_and_match_the_paper():
    cont = load_protocol(ROOT / "examples" / "ding2023.yaml")
    ref = load_protocol(ROOT / "examples" / "ding2023-beam-blank.yaml")
    a, b = expand(cont), expand(ref)
    # same biasing: identical level schedule
    la = [(s.v_start_V, s.v_end_V, s.t_end_s - s.t_start_s) for s in a.segments if s.label.split()[0] in ("ramp", "hold")]
    lb = [(s.v_start_V, s.v_end_V, s.t_end_s - s.t_start_s) for s in b.segments if s.label.split()[0] in ("ramp", "hold")]
    assert la == lb
    levels = {s.v_end_V for s in a.segments}
    assert max(levels) == 17.0 and 10.0 in levels and min(levels) == -10.0      # 10-17 V, reversal
    assert a.beam_on_s > 0.9 * a.duration_s and b.beam_on_s == pytest.approx(10.0)
    assert 2000 < a.duration_s < 4000                                              # the paper: up to ~3340 s


@pytest.mark.parametrize("mutation, field", [
    ("steps: [{ramp: {to: 20}}]", "steps[0].ramp.to: 20 V exceeds limits.max_voltage 17.5 V"),
    ("steps: [{hold: {duration: 1}}, {repeat: {times: 2, steps: [{ramp: {to: -18}}]}}]",
     "steps[1].repeat.steps[0].ramp.to: -18 V exceeds limits.max_voltage"),
    ("steps: [{ramp: {to: 1, rate: 0.6}}]", "steps[0].ramp.rate: 0.6 V/s exceeds limits.max_slew_rate 0.5 V/s"),
    ("steps: [{ramp: {to: 1, speed: 0.1}}]", "steps[0].ramp.speed: unknown key"),
    ("steps: [{ramp: {}}]", "steps[0].ramp.to: required"),
    ("steps: [{jump: {to: 1}}]", "steps[0]: a step is a mapping with exactly one key"),
    ("steps: [{ramp: {to: 1}, hold: {duration: 1}}]", "steps[0]: a step is a mapping with exactly one key"),
    ("steps: [{beam: dark}]", "steps[0].beam:"),
    ("steps: [{hold: {duration: -1}}]", "steps[0].hold.duration:"),
    ("steps: [{hold: {duration: yes}}]", "steps[0].hold.duration:"),
    ("steps: [{acquire: {frames: 0}}]", "steps[0].acquire.frames:"),
    ("steps: [{repeat: {times: 0, steps: [{hold: {duration: 1}}]}}]", "steps[0].repeat.times:"),
    ("steps: []", "steps:"),
    ("sample_interval: 2\nsteps: [{hold: {duration: 1}}]", "sample_interval:"),
    ("on_compliance: ignore\nsteps: [{hold: {duration: 1}}]", "on_compliance:"),
    ("steps: [{hold: {duration: .nan}}]", "steps[0].hold.duration:"),
])
def test_errors_name_the_field_in_one_line(mutation, field):
    text = "limits: {max_voltage: 17.5, compliance_current: 1.0e-6, max_slew_rate: 0.5}\n" + mutation
    with pytest.raises(UserError) as ei:
        parse_protocol(text, "protocol.yaml")
    msg = str(ei.value)
    assert msg.startswith("protocol.yaml: ") and field in msg and "\n" not in msg


@pytest.mark.parametrize("limits, field", [
    ("{compliance_current: 1.0e-6, max_slew_rate: 0.5}", "limits.max_voltage: required"),
    ("{max_voltage: 250, compliance_current: 1.0e-6, max_slew_rate: 0.5}", "limits.max_voltage:"),
    ("{max_voltage: 10, compliance_current: 2, max_slew_rate: 0.5}", "limits.compliance_current:"),
    ("{max_voltage: 10, compliance_current: 1.0e-6, max_slew_rate: 0}", "limits.max_slew_rate:"),
    ("{max_voltage: 10, compliance_current: 1.0e-6, max_slew_rate: 0.5, short: 1}", "limits.short: unknown key"),
])
def test_limit_errors(limits, field):
    with pytest.raises(UserError, match=field.replace("(", r"\(").replace("[", r"\[")):
        parse_protocol(f"limits: {limits}\nsteps: [{{hold: {{duration: 1}}}}]")


def test_not_yaml_not_a_mapping_empty_unreadable(tmp_path):
    for text, what in [("steps: [", "not valid YAML at line"), ("- 1\n- 2", "a protocol is a mapping"),
                       ("", "empty protocol")]:
        with pytest.raises(UserError, match=what):
            parse_protocol(text, "p.yaml")
    with pytest.raises(UserError, match="cannot read protocol"):
        load_protocol(tmp_path / "missing.yaml")


def test_huge_repeat_refused_quickly():
    text = ("limits: {max_voltage: 1, compliance_current: 1.0e-6, max_slew_rate: 1}\n"
            "steps: [{repeat: {times: 10000, steps: [{repeat: {times: 10000, steps: [{hold: {duration: 1}}]}}]}}]")
    with pytest.raises(UserError, match="more than 100000 steps"):
        parse_protocol(text)


def test_staircase_levels_and_done():
    p = parse_protocol("limits: {max_voltage: 5, compliance_current: 1.0e-6, max_slew_rate: 1}\n"
                       "sample_interval: 0.25\nsteps: [{ramp: {to: -1.5, rate: 0.5}}]")
    st_ = flatten(p)[0]
    assert st_.n_ticks == 12                       # 1.5 V at 0.5 V/s = 3 s = 12 ticks of 0.25 s
    levels = [level_at(st_, k * 0.25, 0.25) for k in range(14)]
    assert levels[0] == 0.0 and levels[12] == -1.5 and levels[13] == -1.5
    assert all(abs((b - a) + 0.125) < 1e-12 for a, b in zip(levels[:12], levels[1:13]))
    assert not is_done(st_, 11 * 0.25, 0.25) and is_done(st_, 12 * 0.25, 0.25)


# ----------------------------------------------------------------------------- property tests
def _limits(max_v, slew):
    return {"max_voltage": max_v, "compliance_current": 1e-6, "max_slew_rate": slew}


@st.composite
def valid_protocols(draw):
    max_v = draw(st.floats(0.5, 200))
    slew = draw(st.floats(0.01, 10))
    level = st.floats(-max_v, max_v)
    leaf = st.one_of(
        st.builds(lambda v, f: {"ramp": {"to": v, "rate": f * slew}}, level, st.floats(0.05, 1.0)),
        st.builds(lambda v: {"ramp": {"to": v}}, level),
        st.builds(lambda d: {"hold": {"duration": d}}, st.floats(0, 1000)),
        st.sampled_from([{"beam": "blank"}, {"beam": "unblank"}, {"acquire": {"frames": 3}}]),
    )
    steps = draw(st.lists(st.one_of(leaf, st.builds(lambda n, s: {"repeat": {"times": n, "steps": s}},
                                                    st.integers(1, 4), st.lists(leaf, min_size=1, max_size=3))),
                          min_size=1, max_size=6))
    return {"name": "random", "limits": _limits(max_v, slew),
            "sample_interval": draw(st.floats(0.01, 1.0)), "steps": steps}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_protocols())
def test_valid_protocols_expand_within_limits(raw):
    p = parse_protocol(protocol_text(raw))
    tl = expand(p)
    lim = p.limits
    assert tl.peak_abs_V <= lim.max_voltage
    assert tl.segments[-1].v_end_V == 0.0                     # always ends at 0 V
    for s in tl.segments:
        d = s.t_end_s - s.t_start_s
        if s.label.split("] ")[-1].startswith("ramp") or s.label.startswith("final ramp"):
            assert abs(s.v_end_V - s.v_start_V) <= lim.max_slew_rate * 2 / (2 + p.sample_interval) * d + 1e-9


def _parses_as_float(text: str) -> bool:
    """Whether the schema would read ``text`` as a number (number strings are accepted by design)."""
    from pydantic import TypeAdapter, ValidationError

    try:
        TypeAdapter(float).validate_python(text)
    except ValidationError:
        return False
    return True


def _bad_value():
    return st.one_of(st.text(max_size=8).filter(lambda s: not _parses_as_float(s)), st.just(-1), st.just(1e9), st.just([1, 2]), st.just({"a": 1}),
                     st.just(None), st.just(True))


@st.composite
def invalid_yaml(draw):
    kind = draw(st.integers(0, 5))
    base = {"limits": _limits(17.5, 0.5), "steps": [{"ramp": {"to": 10.0}}, {"hold": {"duration": 5}}]}
    if kind == 0:                                    # arbitrary text: never a mapping with limits and steps
        return draw(st.text(max_size=60))
    if kind == 1:                                    # a limit replaced by a bad value
        key = draw(st.sampled_from(["max_voltage", "compliance_current", "max_slew_rate"]))
        base["limits"][key] = draw(_bad_value())
    elif kind == 2:                                  # a level beyond the limit
        base["steps"][0]["ramp"]["to"] = draw(st.sampled_from([-1, 1])) * draw(st.floats(17.500001, 1e6))
    elif kind == 3:                                  # a required key missing
        del base[draw(st.sampled_from(["limits", "steps"]))]
    elif kind == 4:                                  # an unknown key somewhere
        where = draw(st.sampled_from(["top", "limits", "ramp"]))
        tgt = base if where == "top" else (base["limits"] if where == "limits" else base["steps"][0]["ramp"])
        tgt[draw(st.sampled_from(["foo", "speed", "Max_voltage"]))] = 1
    else:                                            # a step replaced by garbage
        base["steps"][1] = draw(st.one_of(_bad_value(), st.just({"ramp": {"to": 1}, "hold": {"duration": 1}})))
    return protocol_text(base)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(invalid_yaml())
def test_random_invalid_yaml_gives_exit_1_and_one_line(tmp_path, capsys, text):
    p = tmp_path / "bad.yaml"
    p.write_text(text, encoding="utf-8")
    capsys.readouterr()
    rc = main(["validate", str(p)])
    out = capsys.readouterr()
    assert rc == 1, out.out
    err = out.err.strip()
    assert err.startswith("insitu validate: error: ") and "\n" not in err and "Traceback" not in err
