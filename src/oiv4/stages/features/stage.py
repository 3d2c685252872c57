"""The features stage as a `Stage`: which plan shards of a set still need vectors, how one runs, the summary.

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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.compute as pc

from oiv4.contracts.errors import FeaturesError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet, Outcome
from oiv4.contracts.shards import DEFAULT_SHARD_ROWS, SetPlan, ShardResult, ShardTask, shard_bounds
from oiv4.io.ledger import read_ledger
from oiv4.io.manifest import plan_rows
from oiv4.io.storage import Storage
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


def existing_dim(storage: Storage, model: str, image_set: ImageSet) -> tuple[str, int] | None:
    """(path, d) of the first finished npy of this model and set, from its header only."""
    for rel in sorted(storage.glob(f"{LAYOUT.features_dir(model, image_set)}/img_emb/img_emb_*.npy")):
        with storage.open(rel) as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, _ = read(fh)
        return rel, int(shape[1])
    return None


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
    old, new = json.loads(storage.read_bytes(rel)).get("settings", {}), settings.output_settings()
    diff = [
        f"{k}: was {old.get(k)!r}, now {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
    ]
    return ", ".join(diff) or None


def _finished(storage: Storage, model: str, image_set: ImageSet, shard: int) -> bool:
    return storage.exists(LAYOUT.features_ledger_shard(model, image_set, shard)) and not storage.exists(
        LAYOUT.features_work_dir(model, image_set, shard)
    )


class FeaturesStage:
    """The `Stage` protocol for writing one model's vectors of one set."""

    name = "features"

    def plan_set(
        self,
        root: str,
        storage_options: Mapping[str, Any],
        image_set: ImageSet,
        settings: FeaturesSettings,
        shards: Iterable[int] | None,
    ) -> SetPlan:
        spec = model_spec(settings.model)
        require_extras(spec)
        pick_device(settings.device)  # --device cuda without a GPU: refused before any work
        storage = Storage(root, dict(storage_options))
        n = plan_rows(storage, image_set)
        if n is None:
            raise FeaturesError(f"{image_set.value} is not planned under {root}: run oiv4 build (or oiv4 plan) first")
        stored = read_ledger(storage, image_set, ["image_id", "row", "outcome", "location"])
        if stored.num_rows == 0:
            raise FeaturesError(
                f"{image_set.value} has no stored images under {root} yet: run oiv4 build (or fetch/archives) first"
            )
        if (found := existing_dim(storage, settings.model, image_set)) and found[1] != spec.dim:
            raise FeaturesError(
                f"{found[0]} holds {found[1]}-d vectors but {spec.name} gives {spec.dim}-d: write to a new root or "
                f"remove {LAYOUT.features_dir(settings.model, image_set)}"
            )
        weights = resolve_weights(spec, settings.weights)
        settings = dataclasses.replace(settings, weights_path=str(weights), weights_sha256=sha256_file(weights))
        stored = stored.filter(pc.greater_equal(stored["row"], 0))  # unplanned archive members have no plan row
        rows = stored["row"].to_numpy()
        ok = pc.equal(stored["outcome"], Outcome.ok.value).to_numpy(zero_copy_only=False)
        wanted = set(shards) if shards is not None else None
        bounds = shard_bounds(n, plan_shard_rows(storage))
        tasks, waiting, skipped = [], [], 0
        for shard, (start, stop) in enumerate(bounds):
            if wanted is not None and shard not in wanted:
                continue
            lo, hi = np.searchsorted(rows, [start, stop])
            if _finished(storage, settings.model, image_set, shard):
                if diff := _changed(storage, settings, image_set, shard):
                    raise FeaturesError(
                        f"{image_set.value} shard {shard} was finished with other settings ({diff}): run with those, "
                        f"or remove {LAYOUT.features_dir(settings.model, image_set)} to write it again"
                    )
                skipped += int(ok[lo:hi].sum())
                continue
            if hi - lo < stop - start:
                waiting.append(shard)
                continue
            part = stored.slice(lo, hi - lo).filter(ok[lo:hi])
            todo = tuple(
                zip(part["row"].to_pylist(), part["image_id"].to_pylist(), part["location"].to_pylist(), strict=True)
            )
            tasks.append(
                ShardTask(
                    self.name,
                    image_set,
                    shard,
                    start,
                    stop,
                    root,
                    dict(storage_options),
                    dataclasses.replace(settings, todo=todo),
                )
            )
        notes = [
            {"model": spec.name, "waiting": waiting, "weights": str(weights), "weights_sha256": settings.weights_sha256}
        ]
        todo_rows = sum(len(t.settings.todo) for t in tasks)  # type: ignore[union-attr]
        return SetPlan(tasks, shards=len(bounds), todo=todo_rows, skipped=skipped, notes=notes)

    def run_shard(self, task: ShardTask) -> ShardResult:
        t0 = time.monotonic()
        result = run_features_shard(task)
        result.elapsed_s = time.monotonic() - t0
        return result

    def summarise(
        self, root: str, storage_options: Mapping[str, Any], plan: SetPlan, results: list[ShardResult], elapsed_s: float
    ) -> FeaturesSummary:
        first = plan.tasks[0] if plan.tasks else None
        note = plan.notes[0] if plan.notes else {}
        model = str(note.get("model", ""))
        summary = FeaturesSummary(
            first.image_set.value if first else "",
            model,
            model_spec(model).dim if model else 0,
            shards_run=len(results),
            already=plan.skipped,
            waiting=list(note.get("waiting", [])),  # type: ignore[call-overload]
            weights=str(note.get("weights", "")),
            weights_sha256=str(note.get("weights_sha256", "")),
            elapsed_s=elapsed_s,
        )
        for r in results:
            summary.already += r.skipped
            summary.vectors += r.outcomes["ok"]
            summary.failed.update({k: v for k, v in r.outcomes.items() if k != "ok"})
        return summary

    def aborted(self, message: str) -> Exception:
        return FeaturesError(message)

    def interrupt(self) -> None:
        """Nothing to stop in this process: a shard records whole batches, and the executor ends its process."""


def shard_ledger(storage: Storage, model: str, image_set: ImageSet | str, shard: int) -> Any:
    """One shard's features ledger (finished or running), for tests and tools."""
    return read_shard(storage, model, ImageSet(image_set), shard)


#: The stage instance `run_set` is given (stateless, so one is enough).
FEATURES = FeaturesStage()
