"""`oiv4 estimate`: what the work still to do will cost in transfer, disk and time, before committing to it.

Three parts, each in its own module: the build (`build`: transfer, disk and CPU time of the rows and archives
still to do), `oiv4 features` (`features`: the vectors of one model still to write, their disk, CPU and GPU
time) and `oiv4 neighbors` (`neighbors`: one ground-truth job's Parquet, its passes over the database and
its CPU/GPU time). Only the build counts in the totals and the wall time; features and neighbours come after
it and are reported beside. Every figure says which basis it used: this root's measurements, or a default
measured in benchmarks/RESULTS.md, or (GPU) a figure on paper in docs/similarity.md.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from oiv4.contracts.errors import UsageError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.io.sql import attach_filesystem
from oiv4.io.storage import Storage
from oiv4.stages.estimate.build import (
    ARCHIVE_CORE_S_PER_GB,
    DEFAULT_IMAGES_PER_CORE_S,
    DEFAULT_STORED_RATIO,
    SetEstimate,
    build_estimates,
    published_archive_bytes,
)
from oiv4.stages.estimate.features import (
    VGG16_CPU_IMAGES_PER_CORE_S,
    VGG16_GPU_IMAGES_PER_S,
    FeaturesEstimate,
    features_estimates,
    model_dim,
)
from oiv4.stages.estimate.neighbors import (
    GROUND_TRUTH_BYTES_PER_ROW,
    KNN_MULTIPLY_ADDS_PER_CPU_S,
    NeighborsEstimate,
    Sizing,
    neighbors_estimate,
)
from oiv4.stages.estimate.settings import DEFAULT_DATABASE, DEFAULT_QUERIES, EstimateSettings

__all__ = [
    "ARCHIVE_CORE_S_PER_GB",
    "DEFAULT_IMAGES_PER_CORE_S",
    "DEFAULT_STORED_RATIO",
    "GROUND_TRUTH_BYTES_PER_ROW",
    "KNN_MULTIPLY_ADDS_PER_CPU_S",
    "VGG16_CPU_IMAGES_PER_CORE_S",
    "VGG16_GPU_IMAGES_PER_S",
    "Estimate",
    "EstimateSettings",
    "FeaturesEstimate",
    "NeighborsEstimate",
    "SetEstimate",
    "estimate",
    "features_estimates",
    "neighbors_estimate",
    "published_archive_bytes",
]


@dataclass
class Estimate:
    """Every planned set's estimate, and the totals for `workers` processes and the given link."""

    sets: list[SetEstimate]
    workers: int
    link_mbps: float | None
    #: `oiv4 features` for the chosen model and dtype, per set: not part of the totals above.
    features: list[FeaturesEstimate] = field(default_factory=list)
    #: `oiv4 neighbors` for the chosen job (None: not asked and its default sets are not planned).
    neighbors: NeighborsEstimate | None = None
    #: Why the default ground-truth job was not costed (e.g. a demo database smaller than k); "" otherwise.
    neighbors_skipped: str = ""

    @property
    def transfer_bytes(self) -> int:
        return sum(s.transfer_bytes for s in self.sets)

    @property
    def disk_bytes(self) -> int:
        return sum(s.disk_bytes for s in self.sets)

    @property
    def cpu_seconds(self) -> float:
        """Wall time if the CPUs are the limit: core-seconds spread over the workers."""
        return sum(s.core_seconds for s in self.sets) / self.workers

    @property
    def network_seconds(self) -> float | None:
        """Wall time if the link is the limit; None when no link speed was given."""
        return None if not self.link_mbps else self.transfer_bytes * 8 / (self.link_mbps * 1e6)

    @property
    def wall_seconds(self) -> float:
        """The larger of the two limits (the CPU bound alone when the link is unknown)."""
        return max(self.cpu_seconds, self.network_seconds or 0.0)

    def to_json(self) -> str:
        out = {
            "workers": self.workers,
            "link_mbps": self.link_mbps,
            "transfer_bytes": self.transfer_bytes,
            "disk_bytes": self.disk_bytes,
            "cpu_seconds": round(self.cpu_seconds, 1),
            "network_seconds": None if self.network_seconds is None else round(self.network_seconds, 1),
            "wall_seconds": round(self.wall_seconds, 1),
            "sets": [asdict(s) for s in self.sets],
            "features": [asdict(f) for f in self.features],
            "neighbors": None if self.neighbors is None else asdict(self.neighbors),
            "neighbors_skipped": self.neighbors_skipped,
        }
        return json.dumps(out, indent=1)


def estimate(
    storage: Storage,
    settings: EstimateSettings | None = None,
    *,
    dims: dict[str, int] | None = None,
    sizing: Sizing | None = None,
) -> Estimate:
    """The estimate for every set that has a plan under `storage` (a `UsageError` when there is none).

    `dims` is the feature-model registry's d per model name and `sizing` the neighbors search's own
    `plan_sizes`: stages never import each other, so the caller (the CLI) passes them. Without `dims` the
    model's d is read from its stored vectors (vgg16-fc2: 4096); without `sizing` no ground truth is costed.
    """
    import duckdb

    settings = settings or EstimateSettings()
    con = duckdb.connect()
    attach_filesystem(con, storage)
    planned = [s for s in ImageSet if storage.exists(LAYOUT.plan(s))]
    if not planned:
        raise UsageError(
            f"nothing to estimate: no plan under {storage.root}: run `oiv4 plan --root {storage.root}` first"
        )
    sets = build_estimates(con, storage, planned, settings.keep_tar)
    dim = model_dim(storage, settings.model, dims)
    features = features_estimates(con, storage, planned, settings.model, dim, settings.dtype)
    neighbors, skipped = None, ""
    asked = settings.neighbors_queries is not None or settings.neighbors_database is not None
    queries = settings.neighbors_queries or DEFAULT_QUERIES
    database = settings.neighbors_database or DEFAULT_DATABASE
    if asked and sizing is None:
        raise UsageError("a ground-truth estimate needs the search's sizing (`sizing=plan_sizes`)")
    if sizing is not None and (asked or {ImageSet(DEFAULT_QUERIES), ImageSet(DEFAULT_DATABASE)} <= set(planned)):
        try:
            neighbors = neighbors_estimate(
                storage,
                queries,
                database,
                model=settings.model,
                dim=dim,
                dtype=settings.dtype,
                k=settings.k,
                memory_gb=settings.memory_gb,
                features=features,
                sizing=sizing,
            )
        except UsageError as exc:
            if asked:
                raise
            # The job nobody named must not stop the rest of the estimate (a demo's targets hold fewer than
            # k = 100 images): say why it is missing instead.
            skipped = f"{queries} against {database}: {exc}"
    workers = settings.workers or os.cpu_count() or 1
    return Estimate(sets, workers, settings.link_mbps, features, neighbors, skipped)
