"""`hash_set`: run the hash stage over one set through an executor (local threads/processes or Dask)."""

from __future__ import annotations

from collections.abc import Iterable

from oiv4.contracts.schema import ImageSet
from oiv4.io.storage import Storage
from oiv4.run.executor import ExecutorSettings
from oiv4.run.stage_runner import run_set
from oiv4.stages.hash import HASH, HashSettings, HashSummary


def hash_set(
    storage: Storage,
    image_set: ImageSet | str,
    settings: HashSettings | None = None,
    executor: ExecutorSettings | None = None,
    *,
    shards: Iterable[int] | None = None,
) -> HashSummary:
    """Record phash + checksum for every `ok` row of `image_set` lacking them; resumable and idempotent.

    Raises HashError when the set has no ledger yet.
    """
    return run_set(HASH, storage, image_set, settings or HashSettings(), executor, shards=shards)
