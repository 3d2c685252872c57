"""The unit of work: a shard. Manifest rows in, files + ledger rows out, nothing else shared.

Because a shard only reads its manifest slice and writes its own files and ledger, any executor can
run it (a local process pool, a Dask cluster) and re-running it is always safe: the ledger tells it
which rows are already finished.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from oiv4.contracts.schema import ImageSet

#: Rows per URL-set shard. 7.27M URLs -> ~727 shards: enough to balance 100 workers, few enough
#: that the scheduler and the ledger directory stay small. Recorded in the plan so resume is stable.
DEFAULT_SHARD_ROWS = 10_000


@dataclass(frozen=True)
class ShardTask:
    """Everything a worker needs to run one shard, picklable and self-contained."""

    stage: str  # "fetch" or "archives"
    image_set: ImageSet
    shard: int
    start: int  # first manifest row (inclusive)
    stop: int  # last manifest row (exclusive)
    root: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    settings: Any = None  # the stage's settings dataclass
    name: str = ""  # archive stem for archive shards, e.g. "train_3"

    @property
    def key(self) -> str:
        return f"{self.stage}-{self.image_set.value}-{self.shard:05d}"


@dataclass
class ShardResult:
    """What a finished shard reports back: counts only, the details are in its ledger."""

    image_set: ImageSet
    shard: int
    outcomes: Counter[str] = field(default_factory=Counter)
    skipped: int = 0  # rows already finished by an earlier run
    bytes_downloaded: int = 0
    elapsed_s: float = 0.0

    @property
    def done(self) -> int:
        return sum(self.outcomes.values())


def shard_bounds(n_rows: int, shard_rows: int) -> list[tuple[int, int]]:
    """[(start, stop), ...] covering `n_rows` in order."""
    return [(s, min(s + shard_rows, n_rows)) for s in range(0, n_rows, shard_rows)]
