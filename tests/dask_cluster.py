"""A dask LocalCluster fixture for the scale-out tests (import ``cluster`` into a test module).

Starting a cluster costs a few seconds, so each module that imports the fixture shares one.
"""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def cluster():
    """One LocalCluster (2 processes, one thread each, loopback) per module: its scheduler address and
    the set of its worker addresses."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as lc, Client(lc, set_as_default=False) as c:
        yield lc.scheduler_address, set(c.scheduler_info()["workers"])
