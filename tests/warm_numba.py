"""Compile the project's numba kernels into their on-disk cache, on the core pytest leaves idle.

`make test` starts this in the background beside pytest: most tests wait on clocks, threads and
sub-processes (load ~0.6 on 2 cores), while a fresh clone's first tests that touch a kernel each
pay its compile (~3 min in all) on pytest's critical path. Whatever is cached here first is loaded
by the tests instead; a kernel the tests reach first is compiled by them as before. numba writes
its cache files atomically, so two processes compiling the same kernel only duplicate work.
Nothing here is asserted: it is a warm-up, not a test (its output is discarded by `make test`).

Run: ``.venv/bin/python tests/warm_numba.py``.
"""
from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path


def main() -> int:
    t0 = time.perf_counter()
    warnings.simplefilter("ignore")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import numpy as np

    from insitu.analysis.pipeline import LiveAnalyzer
    from seriesgen import make_series

    s = make_series(n_frames=10, shape=(128, 128), seed=0)
    la = LiveAnalyzer()
    for f, t in zip(s.frames, s.times):
        la.feed(f, float(t))
    print(f"analysis kernels: {time.perf_counter() - t0:.1f} s", flush=True)

    from insitu.analysis.transport.lamella import voronoi_lamella
    from insitu.analysis.transport.simulator import simulate

    for shape, solver in (((64, 64), "direct"), ((288, 288), "mg")):   # mg: the multi-threaded path too
        m = voronoi_lamella(shape, n_grains=12, seed=0)
        for model in ("paper", "full"):
            simulate(m, {"top": 0.0, "right": 1.0}, model=model, solver=solver)
    simulate(voronoi_lamella((48, 48), n_grains=6, seed=0), {"top": 0.0, "right": 1.0}, refine=2)
    print(f"transport kernels: {time.perf_counter() - t0:.1f} s", flush=True)
    try:
        from orix.quaternion import Rotation

        Rotation.from_euler(np.zeros((2, 3))).to_euler()
    except Exception:       # orix's kernels are a convenience here
        pass
    print(f"done: {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
