"""Virtual specimen: start-up, frame rendering and an offline paper protocol, against baselines.

Baselines, run in the same process: the simulator alone (start-up is dominated by it), and a
plain Poisson frame of the same size (``NoiseFrameSource``), for the HAADF renderer.
Goals: start-up < 1.5 × the simulation; a frame < 10 × a plain Poisson frame (and well under
the engine's 0.2-s tick at any time scale used by the demo).
"""
from __future__ import annotations

import time

import numpy as np


def _best(fn, n=5):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def main() -> dict:
    from insitu.analysis.transport.simulator import simulate
    from insitu.core.clock import Clock
    from insitu.drivers.mock import NoiseFrameSource
    from insitu.control.protocol import expand, load_protocol
    from insitu.virtual.specimen import NEGATIVE, POSITIVE, VirtualSpecimen, make_lamella, run_timeline
    from insitu.commands.demo import find_example

    m = make_lamella(0)
    t_sim = _best(lambda: simulate(m, {NEGATIVE: 0.0, POSITIVE: 1.0}), 2)
    t0 = time.perf_counter()
    sp = VirtualSpecimen(seed=0)
    t_build = time.perf_counter() - t0
    print(f"start-up {t_build:.2f} s, simulation alone {t_sim:.2f} s: ratio {t_build / t_sim:.2f} (goal < 1.5)")

    sp.set_drive(0.0, 17.0)
    sp.advance(1500.0)
    ts = iter(np.arange(1500.0, 1e6, 25.0))
    t_frame = _best(lambda: sp.frame(next(ts)), 20)
    nf = NoiseFrameSource(shape=sp.base.shape, clock=Clock())
    rng = np.random.default_rng(0)
    t_noise = _best(lambda: rng.poisson(nf.mean_counts, nf.shape).astype(np.uint16), 20)
    print(f"frame {1e3 * t_frame:.1f} ms, plain Poisson frame {1e3 * t_noise:.1f} ms: ratio "
          f"{t_frame / t_noise:.1f} (goal < 10)")

    tl = expand(load_protocol(find_example("ding2023.yaml")))
    sp2 = VirtualSpecimen(seed=0, microstructure=sp.microstructure, simulation=sp.simulation)
    t0 = time.perf_counter()
    n = run_timeline(sp2, tl, 25.0)
    t_run = time.perf_counter() - t0
    print(f"offline paper protocol ({tl.duration_s:.0f} s, {n} frames): {t_run:.2f} s "
          f"({tl.duration_s / t_run:.0f}x real time)")
    return dict(startup_s=t_build, simulate_s=t_sim, frame_s=t_frame, noise_frame_s=t_noise, offline_run_s=t_run)


if __name__ == "__main__":
    main()
