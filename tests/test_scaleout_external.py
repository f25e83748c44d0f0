"""``--scheduler``: batch and sweep run on an external ``dask scheduler`` + ``dask worker`` (loopback only).

The two processes are started here on 127.0.0.1 with the project environment's ``dask`` command,
bounded in time (worker death timeout, waits of at most 60 s) and stopped at the end of the module.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from insitu.analysis.transport.lamella import voronoi_lamella
from insitu.analysis.transport.microstructure import write_microstructure
from insitu.cli import main
from mock_sessions import write_mock_session

DASK = Path(sys.executable).with_name("dask")


def _wait(cond, what, timeout_s=60.0):
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"{what} did not come up within {timeout_s:g} s")
        time.sleep(0.2)


def _stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture(scope="module")
def external(tmp_path_factory):
    """(scheduler address, worker address) of a scheduler and one single-thread worker on loopback."""
    if not DASK.exists():
        pytest.skip(f"{DASK} not found (the 'distributed' dependency provides it)")
    d = tmp_path_factory.mktemp("dask")
    sfile = d / "scheduler.json"
    env = dict(os.environ)
    log_s, log_w = open(d / "scheduler.log", "w"), open(d / "worker.log", "w")
    procs = [subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(sfile)], stdout=log_s, stderr=subprocess.STDOUT, env=env,
                              cwd=d)]
    try:
        _wait(lambda: sfile.is_file() and sfile.stat().st_size > 0, "dask scheduler")
        addr = json.loads(sfile.read_text())["address"]
        procs.append(subprocess.Popen([str(DASK), "worker", "--scheduler-file", str(sfile), "--host", "127.0.0.1",
                                       "--nthreads", "1", "--no-nanny", "--no-dashboard", "--name", "ext-worker",
                                       "--death-timeout", "60"], stdout=log_w, stderr=subprocess.STDOUT,
                                      env=env, cwd=d))
        from distributed import Client

        with Client(addr, timeout="30s", set_as_default=False) as c:
            _wait(lambda: len(c.scheduler_info()["workers"]) == 1, "dask worker")
            (worker,) = c.scheduler_info()["workers"]
        yield addr, worker
    finally:
        for p in reversed(procs):
            _stop(p)
        log_s.close()
        log_w.close()


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_batch_runs_on_the_external_worker(external, tmp_path, capsys):
    addr, worker = external
    assert worker.startswith("tcp://127.0.0.1:")
    write_mock_session(tmp_path / "a.h5", seed=1, n_frames=8, shape=(64, 64))
    write_mock_session(tmp_path / "b.h5", seed=2, n_frames=8, shape=(64, 64))
    assert main(["batch", "analyze", str(tmp_path / "a.h5"), str(tmp_path / "b.h5"), "--out", str(tmp_path / "o"),
                 "--scheduler", addr, "--quiet"]) == 0
    rows = _csv(tmp_path / "o" / "batch.csv")
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert {r["worker"] for r in rows} == {worker}


def test_sweep_runs_on_the_external_worker(external, tmp_path, capsys):
    addr, worker = external
    write_microstructure(tmp_path / "m.h5", voronoi_lamella((32, 32), n_grains=8, seed=3))
    assert main(["sweep", str(tmp_path / "m.h5"), "--potential", "top=0", "--potential", "right=1",
                 "--param", "gb_ratio=10,30", "--out", str(tmp_path / "s"), "--scheduler", addr, "--quiet",
                 "--numba-cache", str(tmp_path / "numba")]) == 0
    rows = _csv(tmp_path / "s" / "sweep.csv")
    assert len(rows) == 2 and {r["worker"] for r in rows} == {worker}
    # the scheduler and its worker are still there: insitu closed only its own connection
    from distributed import Client

    with Client(addr, timeout="10s", set_as_default=False) as c:
        assert set(c.scheduler_info()["workers"]) == {worker}
        # the worker was set up by insitu: one thread for numba and BLAS, numba's cache where asked
        env = c.run(lambda: {k: os.environ.get(k) for k in ("NUMBA_CACHE_DIR", "OMP_NUM_THREADS")})[worker]
    assert env == {"NUMBA_CACHE_DIR": str(tmp_path / "numba"), "OMP_NUM_THREADS": "1"}
    # the simulator's kernels, first loaded on that worker after the set-up, are cached there
    assert any(p.suffix in (".nbi", ".nbc") for p in (tmp_path / "numba").rglob("*"))
