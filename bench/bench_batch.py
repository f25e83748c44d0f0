"""Benchmark: ``insitu batch analyze`` of 8 sessions on 2 local dask workers against 1 worker.

Goal (issue 19): >= 1.7x faster on 2 workers than on 1, same run. Both runs go through the same
code as the command (:func:`insitu.core.scaleout.open_client`, :func:`insitu.core.scaleout.run_tasks`,
:func:`insitu.analysis.batch.analyze_task`, forced so nothing is skipped), each on a cluster that
was started and warmed up (imports, one analysis per worker) before the clock starts: the
ratio is the one of the analysis itself, not of starting processes.

Run: ``.venv/bin/python -m bench bench_batch``.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

N_SESSIONS = 8
N_FRAMES = 60
SHAPE = (256, 256)
GOAL = 1.7


def _batch(client, tasks) -> float:
    from insitu.analysis.batch import analyze_task
    from insitu.core.scaleout import run_tasks

    t0 = time.perf_counter()
    rows = [res["row"] for _, res in run_tasks(client, analyze_task, tasks, progress=False)]
    dt = time.perf_counter() - t0
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        raise RuntimeError(f"{len(bad)} sessions failed: {bad[0]['error']}")
    return dt


def _worker_cpu_s(client) -> float:
    """CPU seconds (user + system) used so far by all worker processes."""
    import resource

    def cpu():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    return sum(client.run(cpu).values())


def _timed(n_workers: int, sessions, out: Path) -> tuple[float, float]:
    from insitu.analysis.batch import BatchTask
    from insitu.core.scaleout import open_client

    with open_client(workers=n_workers) as client:
        warm = [BatchTask(str(sessions[i % len(sessions)]), str(out / f"warm{n_workers}-{i}"), force=True)
                for i in range(n_workers)]
        _batch(client, warm)
        tasks = [BatchTask(str(s), str(out / f"w{n_workers}" / s.stem), force=True) for s in sessions]
        c0 = _worker_cpu_s(client)
        dt = _batch(client, tasks)
        return dt, _worker_cpu_s(client) - c0


def main() -> dict:
    from mock_sessions import write_mock_session

    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        d = Path(tmp)
        print(f"writing {N_SESSIONS} sessions of {N_FRAMES} frames {SHAPE[1]}×{SHAPE[0]} ...", flush=True)
        sessions = [d / f"s{k}.h5" for k in range(N_SESSIONS)]
        for k, s in enumerate(sessions):
            write_mock_session(s, seed=k, n_frames=N_FRAMES, shape=SHAPE, n_seeds=5)
        load = os.getloadavg()[0]
        print(f"load average before: {load:.2f} on {os.cpu_count()} cores (other processes share them)", flush=True)
        t1, c1 = _timed(1, sessions, d)
        print(f"1 worker : {t1:6.2f} s ({t1 / N_SESSIONS:.2f} s a session), workers' CPU {c1:.2f} s: "
              f"{c1 / t1:.2f} cores obtained", flush=True)
        t2, c2 = _timed(2, sessions, d)
        print(f"2 workers: {t2:6.2f} s, workers' CPU {c2:.2f} s: {c2 / t2:.2f} cores obtained "
              "(the ratio below can reach this at most)", flush=True)
    ratio = t1 / t2
    print(f"speed-up 2 vs 1 worker: {ratio:.2f}x (goal >= {GOAL}x): {'met' if ratio >= GOAL else 'NOT met'}; "
          f"load average after: {os.getloadavg()[0]:.2f}")
    return dict(t1_s=t1, t2_s=t2, ratio=ratio, goal=GOAL, load_before=load, cores_1=c1 / t1, cores_2=c2 / t2)


if __name__ == "__main__":
    main()
