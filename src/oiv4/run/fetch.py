"""`fetch_set`: run the fetch stage over one URL set (train or extended_targets) through an executor."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from oiv4.contracts.schema import ImageSet
from oiv4.io.storage import Storage
from oiv4.run.executor import ExecutorSettings
from oiv4.run.stage_runner import run_set
from oiv4.stages.fetch import FETCH, FetchProgress, FetchSettings, FetchSummary


def fetch_set(
    storage: Storage,
    image_set: ImageSet | str,
    settings: FetchSettings | None = None,
    executor: ExecutorSettings | None = None,
    *,
    shards: Iterable[int] | None = None,
    progress: Callable[[FetchProgress], None] | None = None,
    progress_interval: float = 1.0,
) -> FetchSummary:
    """Fetch, verify, shrink and store every unfinished row of a URL set; resumable and idempotent.

    Shards whose ledger is complete are not even submitted. `progress`, if given, is called about every
    `progress_interval` seconds from a background thread with a `FetchProgress` snapshot.
    Raises `FetchError` if the fetch cannot start, `SettingsChangedError` if a started shard would be
    resumed with other output settings (unless `settings.force_settings`), and `FetchAborted` if the disk
    filled up or the root became unwritable (what is finished stays finished; re-run after fixing the cause).
    Run one fetch per set at a time: a starting run removes temp files an interrupted one left behind.
    """
    return run_set(
        FETCH,
        storage,
        image_set,
        settings or FetchSettings(),
        executor,
        shards=shards,
        progress=progress,
        progress_interval=progress_interval,
    )
