"""The hash stage as a `Stage`: which ledger shards of a set hold `ok` rows without phash/checksum, how one is
hashed, and the summary. `oiv4.run.hash.hash_set` runs it through an executor.

Why a stage: images stored before fetch hashed them (and every archive set: the CVDF JPEGs are stored as they
are, never decoded) have no `phash`, so `oiv4 dedup` cannot compare them. Shards are the ledger's own shards.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow.compute as pc

from oiv4.contracts.errors import HashError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.limits import at_least
from oiv4.contracts.schema import ImageSet
from oiv4.contracts.setting import setting
from oiv4.contracts.shards import SetPlan, SettingValue, ShardResult, ShardTask
from oiv4.io.damage import damaged, read_json_object
from oiv4.io.ledger import read_set
from oiv4.io.storage import Storage
from oiv4.stages.hash.shard import run_hash_shard, unhashed


@dataclass(frozen=True)
class HashSettings:
    """How `oiv4 hash` works through a set."""

    threads: int = setting(2, help="Decode threads per worker (Pillow releases the GIL).", flag="--threads")
    batch_rows: int = setting(
        2000, help="Hashed rows per ledger part: a kill loses at most this many.", flag="--batch-rows"
    )
    force_settings: bool = setting(
        False,
        cli=False,
        help="Unused: hash stores no image bytes.",
        why="hash has no output settings to protect",
    )
    #: The shard's already recorded output settings (of the fetch or archive run that stored it), echoed back:
    #: hash changes no stored byte, and settings records are kept per (set, shard), not per stage.
    recorded: tuple[tuple[str, SettingValue], ...] = setting(
        (),
        help="Recorded output settings echoed back.",
        cli=False,
        why="set per shard by the stage, not the user",
    )

    def __post_init__(self) -> None:
        at_least(self, 1, "threads", "batch_rows")

    def output_settings(self) -> dict[str, SettingValue]:
        """Whatever the shard was stored with: hashing must never look like a change of output settings."""
        return dict(self.recorded)


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


class HashStage:
    """The `Stage` protocol for hashing one set's stored images."""

    name = "hash"

    def plan_set(
        self,
        root: str,
        storage_options: Mapping[str, Any],
        image_set: ImageSet,
        settings: HashSettings,
        shards: Iterable[int] | None,
    ) -> SetPlan:
        storage = Storage(root, dict(storage_options))
        ledger = read_set(storage, image_set)
        if ledger.num_rows == 0:
            raise HashError(
                f"{image_set.value} has no ledger under {root}: build it first (oiv4 build / fetch / archives)"
            )
        todo = unhashed(ledger)
        wanted = set(shards) if shards is not None else None
        vc = pc.value_counts(todo["shard"])
        per_shard = dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True))
        tasks = [
            ShardTask(
                self.name,
                image_set,
                int(shard),
                0,
                0,
                root,
                dict(storage_options),
                dataclasses.replace(settings, recorded=_recorded(storage, image_set, int(shard))),
            )
            for shard in sorted(per_shard)
            if wanted is None or shard in wanted
        ]
        ok = int(pc.sum(pc.equal(ledger["outcome"], "ok")).as_py() or 0)
        todo_rows = sum(per_shard[t.shard] for t in tasks)
        return SetPlan(tasks, shards=len(set(ledger["shard"].to_pylist())), todo=todo_rows, skipped=ok - todo_rows)

    def run_shard(self, task: ShardTask) -> ShardResult:
        return run_hash_shard(task)

    def summarise(
        self, root: str, storage_options: Mapping[str, Any], plan: SetPlan, results: list[ShardResult], elapsed_s: float
    ) -> HashSummary:
        name = plan.tasks[0].image_set.value if plan.tasks else ""
        summary = HashSummary(name, len(results), already=plan.skipped, elapsed_s=elapsed_s)
        for r in results:
            summary.image_set = r.image_set.value
            summary.hashed += r.outcomes["hashed"]
            summary.unreadable += r.outcomes["unreadable"]
            summary.reasons.update(dict(r.detail.get("unreadable", {})))  # type: ignore[arg-type]
        return summary

    def aborted(self, message: str) -> Exception:
        return HashError(message)

    def interrupt(self) -> None:
        """Nothing to stop: a hash shard only reads, and records whole batches."""


def _recorded(storage: Storage, image_set: ImageSet, shard: int) -> tuple[tuple[str, SettingValue], ...]:
    """The output settings recorded when the shard was stored (`run.shard_settings` writes this file)."""
    rel = LAYOUT.ledger_shard(image_set, shard).removesuffix(".parquet") + ".settings.json"
    if not storage.exists(rel):
        return ()
    settings = read_json_object(storage, rel).get("settings", {})
    if not isinstance(settings, dict):
        raise damaged(storage, rel, "its `settings` is not an object")
    return tuple(sorted(settings.items()))


#: The stage instance `run_set` is given (stateless, so one is enough).
HASH = HashStage()
