"""Run shards: a local process pool by default, a Dask cluster on request, or threads of this process.

The executor only moves `ShardTask`s to workers and `ShardResult`s back; all durable state is in
the shard's files and ledger, so a shard lost with its worker is simply submitted again.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from oiv4.contracts.errors import SettingError
from oiv4.contracts.extras import require
from oiv4.contracts.limits import at_least
from oiv4.contracts.setting import setting
from oiv4.run.dask_executor import run_dask
from oiv4.run.worker_process import ShardFn, default_workers, die_with_parent
from oiv4.stages.base import ShardResult, ShardTask

__all__ = ["WORKERS_HELP", "ExecutorSettings", "ShardFn", "default_workers", "die_with_parent", "run_shards"]

KINDS = ("local", "dask", "thread")
WORKERS_HELP = (
    "Worker processes: the local pool's, or the LocalCluster's with --executor dask and no --scheduler "
    "(a running cluster brings its own workers)."
)


@dataclass(frozen=True)
class ExecutorSettings:
    """How shards are run. `kind` is "local" (process pool), "dask" (distributed scheduler) or "thread"
    (threads of this process: in-process progress callbacks keep working; what archive sets use by default).

    A `scheduler` address implies `kind="dask"`. Dask retries a shard up to `max_pool_restarts` times.
    """

    kind: str = setting(
        "local",
        help="local: a process pool on this machine. dask: one Dask task per shard; workers write straight to "
        "--root (a shared folder or s3://bucket/prefix). See docs/cluster.md.",
        flag="--executor",
        choices=("local", "dask"),
    )
    workers: int | None = setting(None, help=WORKERS_HELP, flag="--workers", default_text="one per core")
    scheduler: str | None = setting(
        None,
        help="Dask scheduler address, e.g. tcp://10.0.0.5:8786 (implies --executor dask).",
        flag="--scheduler",
        default_text="a LocalCluster sized to this machine",
    )
    max_pool_restarts: int = setting(
        3, help="Times a shard is retried after its worker died.", flag="--max-pool-restarts"
    )

    def __post_init__(self) -> None:
        if self.scheduler:
            object.__setattr__(self, "kind", "dask")
        if self.kind not in KINDS:
            raise SettingError(f"unknown executor {self.kind!r}: use one of {', '.join(KINDS)}")
        at_least(self, 1, "workers")
        at_least(self, 0, "max_pool_restarts")
        if self.kind == "dask":
            # Checked with the other options, so a missing extra is the one line before any work or progress.
            require("dask", "distributed", extra="dask", feature="the dask executor")


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Kill the pool's workers now: on Ctrl-C or SIGTERM we do not wait for whole shards to finish.

    Safe: rows without a ledger outcome are simply done again by the next run, and files are only ever
    renamed into place, so a killed worker leaves at worst a temp file that the next run removes.
    """
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for proc in procs:
        if proc.is_alive():
            proc.kill()
    for proc in procs:
        proc.join(timeout=5)
    # With its workers dead the pool's manager thread ends at once, so waiting for it costs nothing. Left
    # running, it would keep the interpreter from a normal exit: the CLI then ends without atexit, and
    # multiprocessing's resource tracker reports the pool's queue semaphores as leaked.
    pool.shutdown(wait=True, cancel_futures=True)


def run_shards(
    tasks: Iterable[ShardTask],
    fn: ShardFn,
    settings: ExecutorSettings | None = None,
    on_result: Callable[[ShardResult], None] | None = None,
    interrupt: Callable[[], None] | None = None,
) -> list[ShardResult]:
    """Run `fn` on every task and return the results (in completion order).

    `interrupt` is called when the run stops early (Ctrl-C, a failing shard) to stop shards running in
    this process (thread executor); shards in other processes are stopped by their executor.
    """
    settings = settings or ExecutorSettings()
    tasks = list(tasks)
    if not tasks:
        return []
    if settings.kind == "local":
        return _run_local(tasks, fn, settings, on_result)
    if settings.kind == "dask":
        return run_dask(tasks, fn, settings, on_result)
    if settings.kind == "thread":
        return _run_threads(tasks, fn, settings, on_result, interrupt)
    raise SettingError(f"unknown executor {settings.kind!r}: use one of {', '.join(KINDS)}")


def _run_local(
    tasks: list[ShardTask],
    fn: ShardFn,
    settings: ExecutorSettings,
    on_result: Callable[[ShardResult], None] | None,
) -> list[ShardResult]:
    workers = min(settings.workers or default_workers(), len(tasks))
    results: list[ShardResult] = []
    pending = list(tasks)
    restarts = 0
    # spawn, not fork: the parent may be running an event loop or a mirror thread, which fork copies badly.
    ctx = multiprocessing.get_context("spawn")
    while pending:
        pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=die_with_parent, initargs=(os.getpid(),)
        )
        try:
            futures: dict[Future[ShardResult], ShardTask] = {pool.submit(fn, t): t for t in pending}
            while futures:
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for fut in done:
                    task = futures.pop(fut)
                    result = fut.result()
                    pending.remove(task)
                    results.append(result)
                    if on_result:
                        on_result(result)
            pool.shutdown(wait=True)
        except BrokenProcessPool:
            pool.shutdown(wait=True)
            # A worker died (OOM killer, kill -9). Its shard's ledger lets the re-run skip finished rows.
            restarts += 1
            if restarts > settings.max_pool_restarts:
                raise
        except Exception:
            pool.shutdown(wait=True)  # a failing shard (disk full): the others stop at their own next check
            raise
        except BaseException:
            _stop_workers(pool)  # Ctrl-C or SIGTERM: nothing may outlive this call
            raise
    return results


def _run_threads(
    tasks: list[ShardTask],
    fn: ShardFn,
    settings: ExecutorSettings,
    on_result: Callable[[ShardResult], None] | None,
    interrupt: Callable[[], None] | None,
) -> list[ShardResult]:
    """Shards on `settings.workers` (default 2) threads of this process, submitted in plan order.

    For shards that mostly wait on the network or on code that releases the GIL (archive download and
    inflate): two at a time overlap one download with one conversion, and callbacks need no pickling.
    """
    results: list[ShardResult] = []
    pool = ThreadPoolExecutor(max_workers=min(settings.workers or 2, len(tasks)), thread_name_prefix="oiv4-shard")
    finished = False
    try:
        futures = [pool.submit(fn, t) for t in tasks]
        for fut in as_completed(futures):
            result = fut.result()
            results.append(result)
            if on_result:
                on_result(result)
        finished = True
    finally:
        if not finished and interrupt is not None:
            interrupt()  # Ctrl-C or a failing shard: running shards stop at their next chunk
        # On Ctrl-C, do not wait for a shard blocked in a socket read: it ends at its next chunk.
        pool.shutdown(wait=finished, cancel_futures=True)
    return results
