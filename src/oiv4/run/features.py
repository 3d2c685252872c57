"""`features_set`: run the features stage over one set through an executor (local processes or Dask)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from oiv4.contracts.schema import ImageSet
from oiv4.contracts.setting import setting
from oiv4.io.storage import Storage
from oiv4.run.executor import WORKERS_HELP, ExecutorSettings
from oiv4.run.stage_runner import run_set
from oiv4.stages.features import FEATURES, FeaturesSettings, FeaturesSummary
from oiv4.stages.fetch.progress import FetchProgress


@dataclass(frozen=True)
class FeaturesExecutorSettings(ExecutorSettings):
    """`ExecutorSettings` as `oiv4 features` offers them: the local pool's default is one shard process (see
    `features_set`), and its help says so."""

    workers: int | None = setting(
        None,
        help=WORKERS_HELP,
        flag="--workers",
        default_text="1 with --executor local (one shard keeps every core busy), else the cluster's",
    )


def features_set(
    storage: Storage,
    image_set: ImageSet | str,
    settings: FeaturesSettings | None = None,
    executor: ExecutorSettings | None = None,
    *,
    shards: Iterable[int] | None = None,
    progress: Callable[[FetchProgress], None] | None = None,
) -> FeaturesSummary:
    """Write one vector per stored image of `image_set` (or its failure to the features ledger); resumable.

    The local pool defaults to one shard process: a shard already keeps every core busy (torch's intra-op
    threads run the model, its DataLoader workers decode), and each further process would hold another copy
    of the model (VGG16: 0.5 GB) to compete for the same cores. `progress` gets a snapshot of the images this run
    has recorded about every second, read from the features ledger. Raises FeaturesError with a one-line message.
    """
    executor = executor or ExecutorSettings()
    if executor.kind == "local" and executor.workers is None:
        executor = dataclasses.replace(executor, workers=1)
    return run_set(
        FEATURES, storage, image_set, settings or FeaturesSettings(), executor, shards=shards, progress=progress
    )
