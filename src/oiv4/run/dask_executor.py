"""Run shards on a Dask distributed cluster: one Dask task per shard, nothing else on the wire.

`run_shards(..., ExecutorSettings(kind="dask", scheduler="tcp://host:8786"))` lands here. Without a
scheduler address a `LocalCluster` sized like the local pool is started (one single-threaded worker
process per core: a shard is already concurrent inside, so more threads per worker only fight over
the GIL).

Why this is safe without any cluster code of our own:

- Workers write images and ledger parts *directly* to the root (the picklable `Storage` travels whole
  inside each `ShardTask`); only the small `ShardResult` counts come back.
- A worker that dies takes its running shard with it. The scheduler re-runs that task elsewhere
  (`distributed.scheduler.allowed-failures`), a shard that *raises* is retried `retries` times, and
  the re-run skips every row its ledger already holds, so nothing is done twice.
- A LocalCluster we start dies with us. distributed's own watchdog (each worker process exits when a
  pipe from its parent closes) already ends workers when the main process is SIGKILLed; on top of it
  every worker process sets PR_SET_PDEATHSIG (the `dask_setup` preload below), which works even when
  the watchdog thread cannot get the GIL. SIGTERM/SIGINT stop the command like Ctrl-C, and leaving the
  `LocalCluster` context closes it (tests/run/test_dask_hygiene.py).
- Keys are `<task.key>-<run token>`: one task per shard, readable in the dashboard, and unique per
  run so a long-lived scheduler never hands back a result remembered from an earlier run.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from oiv4.contracts.errors import DaskSetupError
from oiv4.contracts.extras import require
from oiv4.io.storage import Storage
from oiv4.run.worker_process import PoolSettings, ShardFn, default_workers, die_with_parent
from oiv4.stages.base import ShardResult, ShardTask

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

#: dask.config key holding the PID of the process that started a LocalCluster (read by `dask_setup`).
MAIN_PID_KEY = "oiv4.local-cluster-main-pid"


def run_dask(
    tasks: list[ShardTask],
    fn: ShardFn,
    settings: PoolSettings,
    on_result: Callable[[ShardResult], None] | None = None,
) -> list[ShardResult]:
    """Run `fn(task)` for every task on a Dask cluster; results come back in completion order.

    `settings.scheduler` names an existing scheduler (`tcp://host:8786`); None starts a LocalCluster
    of `settings.workers` (default: one per core) single-threaded worker processes for this call.
    `settings.max_pool_restarts` bounds both how often a raising shard is retried and (on the
    LocalCluster) how many worker deaths one shard may cause before it is declared poison.
    A shard that still fails re-raises its error here, after the remaining shards are cancelled.
    """
    _require_dask()
    tasks = list(tasks)
    if not tasks:
        return []
    with _client(settings, len(tasks)) as client:
        _check_workers(client, tasks[0])
        return _run(client, tasks, fn, settings, on_result)


def _require_dask() -> None:
    # A MissingExtraError is a usage error: the CLI prints its install hint in one line, like any category.
    require("dask", "distributed", extra="dask", feature="the dask executor")


@contextmanager
def _client(settings: PoolSettings, n_tasks: int) -> Iterator[Client]:
    import dask
    from distributed import Client, LocalCluster

    if settings.scheduler:
        try:
            # Waits `distributed.comm.timeouts.connect` (30 s by default; DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT).
            client = Client(settings.scheduler)
        except OSError as exc:
            raise DaskSetupError(
                f"cannot reach the Dask scheduler at {settings.scheduler} ({exc}). Start one with "
                "`dask scheduler` and workers with `dask worker <address> --nthreads 1` (see docs/cluster.md)."
            ) from None
        with client:
            log.info("connected to %s (%d workers)", settings.scheduler, len(client.scheduler_info()["workers"]))
            yield client
        return
    n_workers = max(1, min(settings.workers or default_workers(), n_tasks))
    # The scheduler reads allowed-failures when it starts: set it for the cluster we own only. Worker
    # processes inherit this config when spawned (restarts too), so each runs `dask_setup` below.
    own = {
        "distributed.scheduler.allowed-failures": settings.max_pool_restarts,
        "distributed.worker.preload": [*dask.config.get("distributed.worker.preload", []), __name__],
        MAIN_PID_KEY: os.getpid(),
    }
    with (
        dask.config.set(own),
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # a free port: never collides with another run (needs bokeh to serve)
        ) as cluster,
        Client(cluster) as client,
    ):
        log.info("started a LocalCluster of %d worker processes (%s)", n_workers, cluster.dashboard_link)
        yield client


def dask_setup(worker: object) -> None:
    """Worker preload (runs in each worker process of a LocalCluster we start): die with the main process.

    Only for a worker spawned directly by the main process (the LocalCluster's nannies live there); any
    other arrangement (forkserver, a user's own preload of this module) keeps distributed's watchdog alone.
    """
    import dask

    main_pid = dask.config.get(MAIN_PID_KEY, None)
    if main_pid is not None and os.getppid() == int(main_pid):
        die_with_parent(int(main_pid))  # exits at once if the main process died since the check


def _probe_worker(storage: Storage) -> str | None:
    """On a worker: None if oiv4 imports and the root is reachable, else why not (shown to the user)."""
    try:
        return storage.unreachable()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def _check_workers(client: Client, task: ShardTask) -> None:
    """Fail before submitting anything if a worker cannot import oiv4 or reach the root.

    A local root on a multi-machine cluster must be a shared mount at the same path everywhere; an
    object-store root needs credentials in every worker's environment. Both are easy to get wrong and
    would otherwise surface as every shard failing in turn.
    """
    import dask

    # A scheduler whose workers are still starting (or were never started) would queue every shard silently.
    wait = dask.config.get("distributed.comm.timeouts.connect")
    try:
        client.wait_for_workers(1, timeout=wait)
    except TimeoutError:
        raise DaskSetupError(
            f"no Dask worker joined the scheduler within {wait}: start some with "
            "`dask worker <scheduler address> --nworkers <cores> --nthreads 1` (see docs/cluster.md)"
        ) from None
    try:
        problems = client.run(_probe_worker, task.storage)
    except Exception as exc:  # a worker without oiv4 installed cannot even unpickle the probe
        raise DaskSetupError(f"a Dask worker cannot run oiv4 ({type(exc).__name__}: {exc}); install it there") from None
    bad = {addr: why for addr, why in problems.items() if why}
    if bad:
        lines = "\n".join(f"  {addr}: {why}" for addr, why in sorted(bad.items()))
        raise DaskSetupError(
            f"{len(bad)} of {len(problems)} Dask workers cannot use the root {task.storage.root}:\n{lines}\n"
            "Use a shared folder mounted at the same path on every machine, or an s3:// root with "
            "credentials in each worker's environment (docs/cluster.md)."
        )


def _run(
    client: Client,
    tasks: list[ShardTask],
    fn: ShardFn,
    settings: PoolSettings,
    on_result: Callable[[ShardResult], None] | None,
) -> list[ShardResult]:
    from distributed import as_completed

    token = secrets.token_hex(4)
    futures = [
        client.submit(
            fn,
            task,
            key=f"{task.key}-{token}",
            pure=False,
            retries=settings.max_pool_restarts,
            priority=len(tasks) - i,  # plan order: the first shards finish first, like the local pool
        )
        for i, task in enumerate(tasks)
    ]
    results: list[ShardResult] = []
    try:
        for fut in as_completed(futures):
            # Re-raises a shard's own exception, or KilledWorker when one shard took down too many workers.
            result = fut.result()
            results.append(result)
            if on_result:
                on_result(result)
    finally:
        # On error or Ctrl-C: stop queued shards. Running ones finish on their own; their files and ledger
        # rows are complete and atomic, so the next run simply skips them.
        client.cancel([f for f in futures if not f.done()])
    return results
