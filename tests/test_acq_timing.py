"""Issue 17: large frames arriving in a watched folder do not disturb the control loop's timing.

The real engine and the REAL Keithley 2450 driver against the strict SCPI emulator at a 0.1-s sample
interval, the beam unblanked; 4096² uint16 TIFFs (32 MB) are copied into the watched folder every 1.5 s
by another process (the microscope); a SessionWriter records. Evidence on the instrument side: the
arrival times of the ``:READ?`` queries at the emulator (one a tick).

Goal: every frame recorded (each file's own marker row, in order); p99 of |tick interval - 0.1 s|
<= 20 ms and no interval over 200 ms during the hold. On the old code (reading and writing on the
control thread) the same scenario measured p99 169-178 ms with gaps of 285-310 ms.

The machine running the tests is shared (2 cores, several test suites at once): one external stall of
more than 20 ms in the 12-s hold already decides a p99 over ~135 ticks. So: every run must record every
frame; the timing goal must be met by the first run, or else by a second one, unless the same scenario
WITHOUT frames (measured right then) misses the goal too, in which case the machine is too loaded to judge
and the test skips, printing both measurements. Spread measured while developing (load 5-7 on 2 cores):
with frames p99 9-35 ms (median 15), gaps 110-195 ms; without frames p99 6-13 ms, gaps up to 135 ms.
"""
from __future__ import annotations

import pytest

import acq_scenario

N_FRAMES = 8
P99_MS = 20.0
GAP_MS = 200.0


def _ok(r: dict) -> bool:
    return r["p99_ms"] <= P99_MS and r["max_gap_ms"] <= GAP_MS


@pytest.mark.timeout(240)
def test_4096_tiffs_every_1_5_s_keep_the_tick_timing_and_are_all_recorded(tmp_path):
    runs = []
    for attempt in range(2):
        d = tmp_path / f"run{attempt}"
        d.mkdir()
        r = acq_scenario.run(d, n_frames=N_FRAMES, period_s=1.5, shape=(4096, 4096))
        runs.append(r)
        assert r["status"] == "complete"
        assert r["frames_delivered"] == N_FRAMES
        assert r["markers"] == list(range(N_FRAMES)), "a frame is missing, doubled or out of order"
        assert r["frames_dropped"] == 0 and not r["frame_events"]
        assert r["n_ticks"] >= 0.9 * (N_FRAMES * 1.5 + 2.5) / acq_scenario.DT_S - 5
        if _ok(r):
            break
    summary = "; ".join(f"p99 {r['p99_ms']:.1f} ms, max gap {r['max_gap_ms']:.0f} ms over {r['n_ticks']} ticks"
                        for r in runs)
    if any(_ok(r) for r in runs):
        return
    d = tmp_path / "no_frames"
    d.mkdir()
    base = acq_scenario.run(d, n_frames=0, period_s=N_FRAMES * 1.5 / 10)
    if not _ok(base):
        pytest.skip(f"machine too loaded to judge the tick timing: without frames p99 {base['p99_ms']:.1f} ms, "
                    f"max gap {base['max_gap_ms']:.0f} ms; with frames {summary}")
    pytest.fail(f"tick timing with 4096² frames arriving: {summary}; the same without frames: "
                f"p99 {base['p99_ms']:.1f} ms, max gap {base['max_gap_ms']:.0f} ms")
