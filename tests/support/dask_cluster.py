"""The Dask cluster the executor tests run against: a real scheduler and worker processes on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from distributed import Client, LocalCluster


@contextmanager
def two_worker_cluster() -> Iterator[tuple[LocalCluster, Client]]:
    """A scheduler + 2 single-threaded worker processes, the shape `dask worker --nthreads 1` (and
    `oiv4 --executor dask --workers 2`) gives, with a client connected to it."""
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        yield cluster, client
