"""Issue 17: large frames arriving in a watched folder do not disturb the control loop's timing.

The real engine and the REAL Keithley 2450 driver against the strict SCPI emulator at a 0.1-s sample
interval, the beam unblanked; 4096² uint16 TIFFs (32 MB) are copied into the watched folder every 1.5 s
by another process (the microscope); a SessionWriter records. Evidence on the instrument side: the
arrival times of the ``:READ?`` queries at the emulator (one a tick).

Goal: every frame recorded (each file's own marker row, in order); p99 of |tick interval - 0.1 s|
<= 20 ms and no interval over 200 ms during the hold. On the old code (reading and writing on the
control thread) the same scenario measured p99 119-605 ms with gaps of 577-737 ms.

The machine running the tests is shared (2 cores, several test suites at once): one external stall of
more than 20 ms in the 12-s hold already decides a p99 over ~135 ticks, and the no-frames run of the same
scenario shows such stalls now and then. The timing is therefore judged on the better of two runs; every
run must record every frame.
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
    assert any(_ok(r) for r in runs), f"tick timing with 4096² frames arriving: {summary}"
