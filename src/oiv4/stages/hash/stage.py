"""The hash stage: which ledger shards of a set hold `ok` rows without phash/checksum, how one is hashed, and
the summary. `oiv4.run.hash.hash_set` runs it through an executor.

Why a stage: images stored before fetch hashed them (and every archive set: the CVDF JPEGs are stored as they
are, never decoded) have no `phash`, so `oiv4 dedup` cannot compare them. Shards are the ledger's own shards.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from oiv4.contracts.errors import HashError
from oiv4.contracts.schema import ImageSet, Outcome
from oiv4.io.storage import Storage
from oiv4.stages.base import SetPlan, Shard, ShardResult, Shards, ShardStage, ShardTask, stored_ledger
from oiv4.stages.hash.settings import HashSettings
from oiv4.stages.hash.shard import HashCounts, run_hash_shard, unhashed


@dataclass
class HashSummary:
    """What one `hash_set` call did."""

    image_set: str
    shards_run: int
    hashed: int = 0
    unreadable: int = 0  # ok rows whose stored file could not be read or decoded (left for verify)
    already: int = 0  # ok rows that already had both
    elapsed_s: float = 0.0
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def images_per_s(self) -> float:
        return self.hashed / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _per_shard(column: pa.ChunkedArray) -> dict[int, int]:
    """Rows per shard number."""
    vc = pc.value_counts(column)
    return dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True))


class HashStage(ShardStage[HashSettings, None, HashCounts, HashSummary]):
    """Hashing one set's stored images, one ledger shard at a time."""

    name = "hash"
    settings_type = HashSettings
    error = HashError

    def shards(self, storage: Storage, image_set: ImageSet, settings: HashSettings) -> Shards[HashSettings, None]:
        """Every ledger shard, with its `ok` rows lacking a phash or a checksum still to do."""
        ledger = stored_ledger(storage, image_set, HashError, ["shard", "outcome", "phash", "checksum"])
        todo = _per_shard(unhashed(ledger)["shard"])
        ok = _per_shard(ledger.filter(pc.equal(ledger["outcome"], Outcome.ok.value))["shard"])
        every = sorted(set(ledger["shard"].to_pylist()))
        shards = [
            Shard(int(s), todo=todo.get(s, 0), done=ok.get(s, 0) - todo.get(s, 0), finished=s not in todo)
            for s in every
        ]
        return Shards(shards, None)

    def run(self, task: ShardTask[HashSettings]) -> ShardResult[HashCounts]:
        return run_hash_shard(task)

    def summary(
        self,
        storage: Storage,
        plan: SetPlan[HashSettings, None],
        results: list[ShardResult[HashCounts]],
        elapsed_s: float,
    ) -> HashSummary:
        summary = HashSummary(plan.image_set.value, len(results), already=plan.skipped, elapsed_s=elapsed_s)
        for r in results:
            counts = r.detail or HashCounts()
            summary.hashed += counts.hashed
            summary.unreadable += counts.unreadable
            summary.reasons.update(counts.reasons)
        return summary


#: The stage instance `run_set` is given (stateless, so one is enough).
HASH = HashStage()
