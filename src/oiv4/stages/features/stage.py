"""The features stage: which plan shards of a set still need vectors, how one runs, the summary.

Shards are the set's plan shards (rows [start, stop) of `DEFAULT_SHARD_ROWS`), so the pairs concatenated in
shard order are in plan order. A shard runs only once every plan row in it has an outcome in the set's
ledger (fetch/archives finished there): vectors of a half-fetched shard would silently miss the images
fetched later. The weights are resolved and hashed here, once, and travel to the shards in the settings.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.compute as pc

from oiv4.contracts.errors import DamagedFeaturesError, FeaturesError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet, Outcome
from oiv4.contracts.shards import DEFAULT_SHARD_ROWS, describe_changes, setting_changes, shard_bounds
from oiv4.io.ledger import list_ledger
from oiv4.io.manifest import plan_rows
from oiv4.io.storage import Storage
from oiv4.io.vector_shards import stored_dim
from oiv4.stages.base import SetPlan, Shard, ShardResult, Shards, ShardStage, ShardTask, stored_ledger
from oiv4.stages.features.ledger import read_shard
from oiv4.stages.features.models import model_spec, require_extras, resolve_weights, sha256_file
from oiv4.stages.features.settings import FeaturesSettings
from oiv4.stages.features.shard import pick_device, run_features_shard


@dataclass
class FeaturesSummary:
    """What one `features_set` call did."""

    image_set: str
    model: str
    dim: int
    shards_run: int = 0
    vectors: int = 0
    already: int = 0  # images with a vector (or a recorded failure) from earlier runs
    waiting: list[int] = field(default_factory=list)  # shards whose images are not all stored yet
    failed: Counter[str] = field(default_factory=Counter)
    weights: str = ""
    weights_sha256: str = ""
    elapsed_s: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.vectors / self.elapsed_s if self.elapsed_s > 0 else 0.0


def plan_shard_rows(storage: Storage) -> int:
    """The plan's shard size (`plan/summary.json`), so features shards are exactly the fetch's plan shards."""
    rel = LAYOUT.plan_summary()
    if storage.exists(rel):
        return int(json.loads(storage.read_bytes(rel)).get("shard_rows", DEFAULT_SHARD_ROWS))
    return DEFAULT_SHARD_ROWS


def _changed(storage: Storage, settings: FeaturesSettings, image_set: ImageSet, shard: int) -> str | None:
    """How a finished shard's recorded settings differ from these, in words; None when they do not."""
    rel = settings.settings_record(image_set, shard)
    if not storage.exists(rel):
        return None
    old = json.loads(storage.read_bytes(rel)).get("settings", {})
    return describe_changes(setting_changes(old, settings.output_settings())) or None


def _finished(storage: Storage, model: str, image_set: ImageSet, shard: int) -> bool:
    return storage.exists(LAYOUT.features_ledger_shard(model, image_set, shard)) and not storage.exists(
        LAYOUT.features_work_dir(model, image_set, shard)
    )


def _check_sizes(storage: Storage, model: str, image_set: ImageSet, shard: int) -> None:
    """A finished shard's npy and metadata still have the sizes recorded when it finished (a stat each, no read):
    a truncated or deleted vector file is named here, not counted as done or hit later as a crash on mmap."""
    rel = LAYOUT.features_checksums(model, image_set, shard)
    if not storage.exists(rel):
        return
    for entry in json.loads(storage.read_bytes(rel)).values():
        path = entry["path"]
        size = storage.size(path) if storage.exists(path) else None
        if size != entry["bytes"]:
            state = "is missing" if size is None else f"holds {size:,} bytes, not the {entry['bytes']:,} written"
            raise DamagedFeaturesError(
                f"{storage.path(path)} {state}: remove {storage.path(LAYOUT.features_dir(model, image_set))}/*/*{shard:05d}.* "
                f"(its npy, metadata, ledger, checksums and settings) and run again to write shard {shard} anew"
            )


@dataclass(frozen=True)
class FeaturesPlan:
    """What planning found out, for the summary."""

    model: str
    waiting: list[int]  # shards whose images are not all stored yet
    weights: str
    weights_sha256: str


class FeaturesStage(ShardStage[FeaturesSettings, FeaturesPlan, None, FeaturesSummary]):
    """Writing one model's vectors of one set, one plan shard at a time."""

    name = "features"
    settings_type = FeaturesSettings
    error = FeaturesError

    def ledger_dir(self, image_set: ImageSet, settings: FeaturesSettings) -> str:
        """The model's features ledger of the set: one row per stored image as its batch is written."""
        return LAYOUT.features_ledger_dir(settings.model, image_set)

    def shards(
        self, storage: Storage, image_set: ImageSet, settings: FeaturesSettings
    ) -> Shards[FeaturesSettings, FeaturesPlan]:
        """Every plan shard: finished ones (checked against these settings), shards still waiting for
        images, and the rest carrying their stored images in their own settings."""
        spec = model_spec(settings.model)
        require_extras(spec)
        pick_device(settings.device)  # --device cuda without a GPU: refused before any work
        n = plan_rows(storage, image_set)
        if n is None:
            raise FeaturesError(
                f"{image_set.value} is not planned under {storage.root}: run oiv4 build (or oiv4 plan) first"
            )
        stored = stored_ledger(storage, image_set, FeaturesError, ["image_id", "row", "outcome", "location"])
        if (found := stored_dim(storage, settings.model, image_set)) and found[1] != spec.dim:
            raise FeaturesError(
                f"{found[0]} holds {found[1]}-d vectors but {spec.name} gives {spec.dim}-d: write to a new root or "
                f"remove {LAYOUT.features_dir(settings.model, image_set)}"
            )
        weights = resolve_weights(spec, settings.weights)
        settings = dataclasses.replace(settings, weights_path=str(weights), weights_sha256=sha256_file(weights))
        stored = stored.filter(pc.greater_equal(stored["row"], 0))  # unplanned archive members have no plan row
        rows = stored["row"].to_numpy()
        ok = pc.equal(stored["outcome"], Outcome.ok.value).to_numpy(zero_copy_only=False)
        shards, waiting = [], []
        # Shards a killed run left part-way: their recorded images are done, not this run's work (its progress
        # and ETA count only the rest). One listing of the features ledger finds them.
        listed = list_ledger(storage, image_set, ledger_dir=self.ledger_dir(image_set, settings)).shards
        for shard, (start, stop) in enumerate(shard_bounds(n, plan_shard_rows(storage))):
            lo, hi = np.searchsorted(rows, [start, stop])
            if _finished(storage, settings.model, image_set, shard):
                _check_sizes(storage, settings.model, image_set, shard)
                if diff := _changed(storage, settings, image_set, shard):
                    raise FeaturesError(
                        f"{image_set.value} shard {shard} was finished with other settings ({diff}): run with those, "
                        f"or remove {LAYOUT.features_dir(settings.model, image_set)} to write it again"
                    )
                shards.append(Shard(shard, start, stop, done=int(ok[lo:hi].sum()), finished=True))
            elif hi - lo < stop - start:
                waiting.append(shard)
                shards.append(Shard(shard, start, stop, finished=True))
            else:
                part = stored.slice(lo, hi - lo).filter(ok[lo:hi])
                todo = tuple(
                    zip(
                        part["row"].to_pylist(), part["image_id"].to_pylist(), part["location"].to_pylist(), strict=True
                    )
                )
                mine = dataclasses.replace(settings, todo=todo)
                recorded = read_shard(storage, settings.model, image_set, shard).num_rows if shard in listed else 0
                shards.append(Shard(shard, start, stop, todo=len(todo) - recorded, done=recorded, settings=mine))
        detail = FeaturesPlan(spec.name, waiting, str(weights), settings.weights_sha256)
        return Shards(shards, detail)

    def run(self, task: ShardTask[FeaturesSettings]) -> ShardResult[None]:
        t0 = time.monotonic()
        result = run_features_shard(task)
        result.elapsed_s = time.monotonic() - t0
        return result

    def summary(
        self,
        storage: Storage,
        plan: SetPlan[FeaturesSettings, FeaturesPlan],
        results: list[ShardResult[None]],
        elapsed_s: float,
    ) -> FeaturesSummary:
        asked = {s.shard for s in plan.finished} | {t.shard for t in plan.tasks}
        summary = FeaturesSummary(
            plan.image_set.value,
            plan.detail.model,
            model_spec(plan.detail.model).dim,
            shards_run=len(results),
            already=plan.skipped,  # finished shards' images and those a killed run recorded
            waiting=[s for s in plan.detail.waiting if s in asked],
            weights=plan.detail.weights,
            weights_sha256=plan.detail.weights_sha256,
            elapsed_s=elapsed_s,
        )
        for r in results:
            summary.vectors += r.outcomes["ok"]
            summary.failed.update({k: v for k, v in r.outcomes.items() if k != "ok"})
        return summary


def shard_ledger(storage: Storage, model: str, image_set: ImageSet | str, shard: int) -> Any:
    """One shard's features ledger (finished or running), for tests and tools."""
    return read_shard(storage, model, ImageSet(image_set), shard)


#: The stage instance `run_set` is given (stateless, so one is enough).
FEATURES = FeaturesStage()
