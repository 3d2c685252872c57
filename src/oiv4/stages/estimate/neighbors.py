"""`oiv4 neighbors` in the estimate: the ground truth's disk, what its search reads, and its CPU/GPU time.

For one job (queries SET or SET:N, database SET[,SET...], k, --memory-gb), mirroring `oiv4 neighbors`:

- vectors: a set's count and dtype come from its written vectors of the model when they are complete, else
  from the images it will have (its `ok` ledger rows, or its plan) and `--dtype`; an unplanned set without
  vectors is an error.
- disk: queries x k rows of `GROUND_TRUTH_BYTES_PER_ROW`, plus `GROUND_TRUTH_PART_BYTES` a part and a footer.
- passes: the queries are cut into parts of `query_rows` (the search's own sizing of `--memory-gb`, passed
  in by the caller since stages never import each other); each part reads the database twice (candidates,
  then the float64 re-rank), so bytes read = 2 x parts x the database's vectors.
- CPU: queries x database x d multiply-adds at `KNN_MULTIPLY_ADDS_PER_CPU_S`, measured; GPU on paper.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from oiv4.contracts.errors import NoFeaturesError, UsageError
from oiv4.contracts.schema import ImageSet
from oiv4.contracts.vectors import VECTOR_DTYPES
from oiv4.io.storage import Storage
from oiv4.io.vector_shards import open_features
from oiv4.stages.estimate.features import FeaturesEstimate

#: benchmarks/RESULTS.md "Exact kNN", oiv4's whole run (both passes, re-rank, Parquet) in CPU-seconds:
#: 2k x 100k x 4096 in 19.9 CPU-s = 4.1e10 multiply-adds per CPU-second (10k x 500k x 512 in 47.6-54.7 CPU-s is
#: 4.7-5.4e10). The 4096-d figure, the slowest, is used: VGG16-FC2 vectors are 4096-d.
KNN_MULTIPLY_ADDS_PER_CPU_S = 4.1e10
#: On paper (docs/similarity.md): one GPU at ~15 TFLOP/s float32 is 7.5e12 multiply-adds/s at its peak;
#: GPU faiss is taken at two thirds of it. The re-rank pass stays on the CPU and is not counted here.
KNN_GPU_MULTIPLY_ADDS_PER_S = 5e12
#: A `oiv4 neighbors` Parquet (query_id, rank, neighbor_id, neighbor_set, distance; pyarrow's defaults),
#: measured on a written file of 2,000 queries x k 100 over 1.74M random 16-hex ids and float64 distances:
#: 26.9 B a row (28.7 at 500 queries); the footer ~2 KB, and each part (a row group) ~1.1 KB of metadata. A database of fewer than ~100k ids writes less
#: (the neighbour ids fit Parquet's dictionary): the figure is then a ceiling (0.47-0.9x of it in the tests).
GROUND_TRUTH_BYTES_PER_ROW = 27
GROUND_TRUTH_FIXED_BYTES = 2048
GROUND_TRUTH_PART_BYTES = 1200
#: Passes over the database per part of queries: faiss's candidates, then the exact float64 re-rank.
PASSES_PER_PART = 2

Sizing = Callable[[float, int, int, int, int, int], Any]


@dataclass
class NeighborsEstimate:
    """One ground-truth job: its size, its passes over the database, and its time."""

    queries: str
    database: list[str]
    model: str
    k: int
    query_count: int
    database_rows: int
    dim: int
    disk_bytes: int
    database_bytes: int  # one pass over the database's vectors
    parts: int
    passes: int
    read_bytes: int
    multiply_adds: float
    cpu_core_seconds: float
    gpu_seconds: float
    memory_gb: float
    counts_basis: list[str] = field(default_factory=list)
    rate_basis: str = ""


def _set(name: str) -> ImageSet:
    try:
        return ImageSet(name.strip())
    except ValueError:
        raise UsageError(
            f"unknown set {name.strip()!r}: choose one of {', '.join(s.value for s in ImageSet)}"
        ) from None


def _vectors(
    storage: Storage, model: str, image_set: ImageSet, features: dict[str, FeaturesEstimate], dtype: str
) -> tuple[int, int, str]:
    """(vectors, bytes per value, basis) of one set: written and complete, else the images it will have."""
    planned = features.get(image_set.value)
    try:
        store = open_features(storage, model, image_set)
    except NoFeaturesError:
        store = None
    if store is not None and (planned is None or planned.remaining == 0):
        return len(store), store.dtype.itemsize, f"{image_set.value}: {len(store):,} {store.dtype} vectors written"
    if planned is None:
        raise UsageError(
            f"{image_set.value} has neither a plan nor {model} features under {storage.root}: "
            f"run `oiv4 plan --root {storage.root}` first"
        )
    return planned.images, VECTOR_DTYPES[dtype], f"{image_set.value}: {planned.images:,} images, vectors to write"


def neighbors_estimate(
    storage: Storage,
    queries: str,
    database: str,
    *,
    model: str,
    dim: int,
    dtype: str,
    k: int,
    memory_gb: float,
    features: list[FeaturesEstimate],
    sizing: Sizing,
) -> NeighborsEstimate:
    """The cost of `oiv4 neighbors --queries QUERIES --database DATABASE` (a `UsageError` for a bad job).

    `features` are the features estimates of `model` (they give the sets' image counts before their
    vectors exist); `sizing(memory_gb, dim, itemsize, k, extra, database_rows)` is the search's own sizing
    (`plan_sizes` of the neighbors stage), whose `query_rows` decides the parts.
    """
    by_set = {f.image_set: f for f in features}
    qname, _, sample = queries.partition(":")
    qset = _set(qname)
    dbs = [_set(x) for x in database.split(",")]
    if len(set(dbs)) != len(dbs):
        raise UsageError(f"--neighbors-database names a set twice: {database}")
    counted = {s: _vectors(storage, model, s, by_set, dtype) for s in dict.fromkeys([qset, *dbs])}
    nq = counted[qset][0]
    if sample:
        if not sample.isdigit() or int(sample) < 1:
            raise UsageError(f"--neighbors-queries {queries}: N in SET:N must be a positive number")
        if int(sample) > nq:
            raise UsageError(f"--neighbors-queries {queries} asks for more queries than {qname} has ({nq:,})")
        nq = int(sample)
    rows = sum(counted[s][0] for s in dbs)
    extra = 1 if qset in dbs else 0  # a query never returns itself (dedup pairs, if excluded, add to this)
    if k > rows - extra:
        raise UsageError(f"--k {k} is larger than the database ({rows:,} vectors)")
    itemsize = max(counted[s][1] for s in [qset, *dbs])
    query_rows = max(1, min(sizing(memory_gb, dim, itemsize, k, extra, rows).query_rows, nq))
    parts = math.ceil(nq / query_rows) if nq else 0
    db_bytes = sum(counted[s][0] * counted[s][1] for s in dbs) * dim
    macs = float(nq) * rows * dim
    return NeighborsEstimate(
        queries=queries,
        database=[s.value for s in dbs],
        model=model,
        k=k,
        query_count=nq,
        database_rows=rows,
        dim=dim,
        disk_bytes=nq * k * GROUND_TRUTH_BYTES_PER_ROW + parts * GROUND_TRUTH_PART_BYTES + GROUND_TRUTH_FIXED_BYTES,
        database_bytes=db_bytes,
        parts=parts,
        passes=parts * PASSES_PER_PART,
        read_bytes=parts * PASSES_PER_PART * db_bytes,
        multiply_adds=macs,
        cpu_core_seconds=macs / KNN_MULTIPLY_ADDS_PER_CPU_S,
        gpu_seconds=macs / KNN_GPU_MULTIPLY_ADDS_PER_S,
        memory_gb=memory_gb,
        counts_basis=[c[2] for c in counted.values()],
        rate_basis=(
            f"CPU at {KNN_MULTIPLY_ADDS_PER_CPU_S:.1e} multiply-adds per core-second (benchmarks/RESULTS.md, "
            f"Exact kNN); GPU at {KNN_GPU_MULTIPLY_ADDS_PER_S:.0e}/s, on paper (docs/similarity.md)"
        ),
    )
