"""Control timing: how close the engine's sample ticks come to their schedule.

Run: ``.venv/bin/python -m bench bench_control`` (about 2 minutes).

Goal (issue 4): against the mock source-meter at ``sample_interval`` 0.1 s,
p99 of |actual - scheduled| sample time <= 20 ms over 60 s.

The engine runs a 60-s hold on a :class:`~insitu.drivers.mock.MockSourceMeter`
(real time, clock scale 1) with a :class:`~insitu.core.session.SessionWriter` as
sink (the recorder's flushing thread competes for the CPU as in a real run),
plus the noise frame source at 2 frames/s. Baseline, in the same process: a
bare loop that only sleeps until each scheduled time on the same clock (the
best any Python loop can do on this machine). Printed: p50/p99/max lateness
for both, and the ratio engine/baseline.

``INSITU_BENCH_SECONDS`` shortens the run (e.g. 10) for a quick look.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from insitu.core.clock import Clock

DT_S = 0.1


def _stats(late_s: np.ndarray) -> dict:
    a = np.abs(late_s) * 1e3
    return {"n": int(a.size), "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "max_ms": float(a.max())}


def baseline(seconds: float) -> dict:
    """Sleep until each scheduled time; nothing else."""
    clock = Clock()
    t0 = clock.now()
    late = []
    for k in range(1, int(seconds / DT_S) + 1):
        t_s = t0 + k * DT_S
        clock.sleep_until(t_s)
        late.append(clock.now() - t_s)
    return _stats(np.array(late))


def engine(seconds: float) -> dict:
    from insitu.drivers.mock import MockBeamBlanker, MockSourceMeter, NoiseFrameSource
    from insitu.control.engine import Engine
    from insitu.drivers.interfaces import Instruments
    from insitu.control.protocol import parse_protocol
    from insitu.core.session import SessionWriter

    clock = Clock()
    bl = MockBeamBlanker()
    inst = Instruments(MockSourceMeter(50e6, clock), bl, NoiseFrameSource((256, 256), 2.0, clock, bl), clock)
    proto = parse_protocol(f"""
name: bench-control
limits: {{max_voltage: 5, compliance_current: 1.0e-6, max_slew_rate: 1.0}}
sample_interval: {DT_S}
steps: [{{beam: unblank}}, {{ramp: {{to: 1.0}}}}, {{hold: {{duration: {seconds}}}}}, {{beam: blank}}]
""")
    with tempfile.TemporaryDirectory() as d:
        w = SessionWriter(Path(d) / "bench.h5", start_time_iso=clock.start_iso, protocol_text=proto.text)
        eng = Engine(proto, inst, [w])
        eng.run()
        w.close()
    t = np.array(eng.timing)
    return {**_stats(t[:, 1] - t[:, 0]), "frames": eng.n_frames}


def main() -> dict:
    seconds = float(os.environ.get("INSITU_BENCH_SECONDS", "60"))
    b = baseline(seconds)
    e = engine(seconds)
    print(f"sample interval {DT_S} s, {seconds:g} s of ticks")
    print(f"  baseline (sleep only): n={b['n']}  p50 {b['p50_ms']:.2f} ms  p99 {b['p99_ms']:.2f} ms  "
          f"max {b['max_ms']:.2f} ms")
    print(f"  engine + mock + writer: n={e['n']}  p50 {e['p50_ms']:.2f} ms  p99 {e['p99_ms']:.2f} ms  "
          f"max {e['max_ms']:.2f} ms  ({e['frames']} frames recorded)")
    ratio = e["p99_ms"] / max(b["p99_ms"], 1e-6)
    ok = e["p99_ms"] <= 20.0
    print(f"  p99 engine/baseline = {ratio:.2f}x; goal p99 <= 20 ms: {'MET' if ok else 'NOT MET'}")
    return {"baseline": b, "engine": e, "ratio_p99": ratio, "goal_met": ok}


if __name__ == "__main__":
    main()
