"""`run_set`: run one set of any stage (fetch, archives, hash, features) as shards through an executor.

The same steps for every stage: the stage plans its unfinished shards, the recorded output settings
of shards already started are checked (`shard_settings`), the shards run on the chosen executor (this
process's threads, the local process pool, a Dask cluster), live progress is polled from the ledger,
and the stage summarises the results. Stages subclass `oiv4.stages.base.ShardStage` and never import
this layer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from oiv4.contracts.schema import ImageSet
from oiv4.io.ledger_write import now_utc
from oiv4.io.storage import Storage
from oiv4.run.executor import ExecutorSettings, run_shards
from oiv4.run.shard_settings import RecordingShard, refuse_or_override
from oiv4.stages.base import ShardResult, ShardStage
from oiv4.stages.fetch.progress import FetchProgress, LedgerPoller

SettingsT = TypeVar("SettingsT")
SummaryT = TypeVar("SummaryT")


def run_set(
    stage: ShardStage[SettingsT, Any, Any, SummaryT],
    storage: Storage,
    image_set: ImageSet | str,
    settings: SettingsT,
    executor: ExecutorSettings | None = None,
    *,
    shards: Iterable[int] | None = None,
    progress: Callable[[FetchProgress], None] | None = None,
    progress_interval: float = 1.0,
) -> SummaryT:
    """Plan, check, run and summarise one set of `stage`; resumable and idempotent.

    `progress`, if given, is called about every `progress_interval` seconds from a background thread
    with a snapshot of the rows recorded since the run started (read from the ledger, so it works the
    same for every executor).
    Raises the stage's own errors, `SettingsChangedError` when a started shard would be resumed with
    other output settings (unless they say `force_settings`), `SettingsTypeError` when `settings` are not
    the stage's type, and `stage.aborted(...)` when the local pool's workers keep dying.
    """
    image_set = ImageSet(image_set)
    executor = executor or ExecutorSettings()
    started = now_utc()
    t0 = time.monotonic()
    plan = stage.plan_set(storage, image_set, settings, shards)
    refuse_or_override(storage, image_set, plan.tasks)

    stop_polling = threading.Event()
    poller_thread = None
    if progress is not None and plan.tasks:
        poller = LedgerPoller(storage, image_set, started, plan.todo, stage.ledger_dir(image_set, settings))

        def poll() -> None:
            while not stop_polling.wait(progress_interval):
                progress(poller.poll())
            progress(poller.poll())

        poller_thread = threading.Thread(target=poll, name=f"oiv4-{stage.name}-progress", daemon=True)
        poller_thread.start()

    results: list[ShardResult[Any]] = []
    try:
        run_shards(plan.tasks, RecordingShard(stage.run_shard), executor, results.append, stage.interrupt)
    except BrokenProcessPool as exc:
        raise stage.aborted(
            "worker processes kept dying (out of memory? killed?); finished rows are kept: re-run to resume, "
            "with fewer --workers or a lower --concurrency if memory is short"
        ) from exc
    finally:
        stop_polling.set()
        if poller_thread is not None:
            poller_thread.join()
    return stage.summarise(storage, plan, results, time.monotonic() - t0)
