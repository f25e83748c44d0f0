"""Running many independent tasks on dask.distributed: the engine behind ``insitu batch`` and ``insitu sweep``.

The plan (which tasks, what each returns) lives with the command that needs it
(:mod:`insitu.analysis.batch`, :mod:`insitu.analysis.sweep`); this module only
opens a cluster, makes every worker behave (one thread, numba and FFT on one
thread, numba's cache where asked) and runs the tasks with a progress display.

- ``workers=N`` (default): an embedded :class:`distributed.LocalCluster` of N processes with one
  thread each, on 127.0.0.1, no dashboard; closed at the end.
- ``scheduler=ADDRESS``: connect to a scheduler that is already running (``dask scheduler`` on a lab
  server, SLURM via dask-jobqueue, ...). Nothing is started or stopped remotely.

Tasks receive file paths and return small tables (dicts of numbers and strings): large arrays are
read, computed and written on the workers and never travel. Paths must therefore be visible under
the same names from every worker (a shared file system) when the workers run on other machines.

Example
-------
>>> with open_client(workers=2) as client:                     # doctest: +SKIP
...     for item, result in run_tasks(client, square, [1, 2, 3], label=str):
...         print(item, result)
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

from insitu.core.errors import UserError

#: environment every worker process gets (one BLAS/OpenMP/numba thread per worker process)
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "NUMBA_NUM_THREADS": "1"}
#: environment variable naming a numba cache folder for the workers (same as ``--numba-cache``)
NUMBA_CACHE_ENV = "INSITU_NUMBA_CACHE"
#: how long (s) to try to reach a scheduler given by address before a one-line error
CONNECT_TIMEOUT_S = 10.0


def default_workers() -> int:
    """Worker processes of the embedded cluster when none is asked for: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:   # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def worker_env(numba_cache: str | None = None) -> dict:
    """Environment for a worker process: :data:`THREAD_ENV` plus ``NUMBA_CACHE_DIR`` when given."""
    env = dict(THREAD_ENV)
    if numba_cache:
        env["NUMBA_CACHE_DIR"] = str(numba_cache)
    return env


def _worker_setup(numba_cache: str | None) -> None:
    """The thread limits and the numba cache folder of a worker process, before the simulator's
    compiled kernels are first imported there."""
    os.environ.update(worker_env(numba_cache))
    if "numba" in sys.modules:
        from numba.core import config

        try:
            config.reload_config()   # picks up NUMBA_CACHE_DIR for kernels compiled from now on
        except RuntimeError:         # numba's threads already run with another count: keep them
            os.environ["NUMBA_NUM_THREADS"] = str(config.NUMBA_NUM_THREADS)
            config.reload_config()


def _setup_plugin(numba_cache: str | None):
    """A dask WorkerPlugin running :func:`_worker_setup` on every worker, also on those that join
    later (a SLURM cluster scaling up)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class InsituWorkerSetup(WorkerPlugin):
        # registered under one name: a later run replaces it and its setup runs again with its own cache
        def __init__(self, cache):
            self.cache = cache

        def setup(self, worker):
            _worker_setup(self.cache)

    return InsituWorkerSetup(numba_cache)


def limit_task_threads() -> None:
    """Call at the start of a task: numba's thread count is per calling thread, so it is set there."""
    try:
        import numba

        numba.set_num_threads(1)
    except Exception:   # pragma: no cover - numba absent or already limited below 1
        pass


def worker_address() -> str:
    """Address of the dask worker running the calling task ('' outside a worker)."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except ValueError:
        return ""


@contextmanager
def open_client(workers: int | None = None, scheduler: str | None = None, *,
                numba_cache: str | None = None, connect_timeout_s: float | None = None):
    """A :class:`distributed.Client` on an embedded LocalCluster or on a running scheduler.

    Parameters
    ----------
    workers : int, optional
        Worker processes of the embedded cluster (one thread each); default :func:`default_workers`.
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``); excludes ``workers``.
    numba_cache : str, optional
        Folder for numba's compiled-kernel cache on every worker (a shared path lets machines reuse
        what one compiled); default ``$INSITU_NUMBA_CACHE``, else numba's own default.
    connect_timeout_s : float, optional
        How long (s) to try to reach ``scheduler`` before giving up with a one-line error
        (default :data:`CONNECT_TIMEOUT_S`).

    Yields
    ------
    distributed.Client
    """
    from distributed import Client, LocalCluster

    if workers is not None and scheduler:
        raise UserError("give either --workers or --scheduler, not both")
    if workers is not None and workers < 1:
        raise UserError(f"--workers {workers}: must be at least 1")
    numba_cache = numba_cache or os.environ.get(NUMBA_CACHE_ENV) or None
    if numba_cache:
        try:
            os.makedirs(numba_cache, exist_ok=True)
        except OSError as exc:
            raise UserError(f"numba cache folder {numba_cache}: {exc.strerror}") from None
    cluster = None
    if scheduler:
        try:
            timeout = CONNECT_TIMEOUT_S if connect_timeout_s is None else connect_timeout_s
            client = Client(scheduler, timeout=f"{timeout}s", set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise UserError(f"cannot reach the dask scheduler at {scheduler}: {exc}") from None
    else:
        cluster = LocalCluster(n_workers=workers or default_workers(), threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None, env=worker_env(numba_cache),
                               # no dashboard; the scheduler's small HTTP server on any free loopback port
                               scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
        client = Client(cluster, set_as_default=False)
    try:
        client.register_plugin(_setup_plugin(numba_cache), name="insitu-worker-setup")
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


class _Progress:
    """A bar on a terminal (tqdm), else one line per finished task."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.total, self.done, self.desc = total, 0, desc
        self.enabled = enabled
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            import shutil

            cols = shutil.get_terminal_size((80, 24)).columns
            self.bar = tqdm(total=total, desc=desc, unit="task", file=sys.stderr, ncols=cols if cols >= 40 else 80)

    def step(self, text: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(text[:40], refresh=False)
            self.bar.update(1)
        else:
            print(f"{self.desc} [{self.done}/{self.total}] {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_tasks(client, fn: Callable, items: Iterable, *, label: Callable = str, desc: str = "tasks",
              progress: bool = True, status: Callable | None = None) -> Iterator[tuple]:
    """Submit ``fn(item)`` for every item; yield ``(item, result)`` as tasks finish.

    ``fn`` should catch its own errors and return them in its result (a row with the error), so
    that one bad item never stops the others. A task that fails anyway (its worker died, it could
    not be sent) is yielded as ``(item, exception)``.

    Parameters
    ----------
    label : item -> str, shown in the progress display.
    status : result -> str, optional, appended to the label in the progress display.
    """
    from distributed import as_completed

    items = list(items)
    futures = {client.submit(fn, it, pure=False): it for it in items}
    bar = _Progress(len(items), desc, progress)
    try:
        for fut in as_completed(futures, loop=client.loop):
            item = futures[fut]
            try:
                res = fut.result()
            except Exception as exc:   # the task itself could not run (lost worker, pickling)
                res = exc
            text = label(item)
            if status is not None:
                text += f": {status(res) if not isinstance(res, Exception) else 'error'}"
            bar.step(text)
            yield item, res
    finally:
        bar.close()
        for fut in futures:
            fut.release()
