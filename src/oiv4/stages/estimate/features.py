"""`oiv4 features` in the estimate: the vectors of one model still to write, their disk, CPU and GPU time.

Per planned set: the stored images (`ok` ledger rows, or the plan's rows before the build) without a row in
the model's features ledger. Disk is d x the dtype's bytes per vector plus its metadata row. CPU time comes
from this root's own shards of the model when enough rows were measured (rows per second of a shard's span:
one shard process uses every core), else from the benchmark's rate for the model (`CPU_IMAGES_PER_CORE_S`);
a model with neither has no CPU figure. GPU time is on paper (`GPU_IMAGES_PER_S`, docs/similarity.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from oiv4.contracts.errors import UsageError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.contracts.vectors import DEFAULT_DTYPE, DEFAULT_MODEL, VECTOR_DTYPES
from oiv4.io.ledger import ledger_started
from oiv4.io.sql import features_ledger_files, features_relation, ledger_relation
from oiv4.io.storage import Storage
from oiv4.io.vector_shards import stored_dim

if TYPE_CHECKING:
    import duckdb

#: The default model and its dimension (what `estimate` assumes when the caller gives no registry).
MODEL, DIM = DEFAULT_MODEL, 4096
#: Metadata Parquet per row (image_id + row, zstd) and the npy header, measured on the demo: ~24 B a row.
METADATA_BYTES_PER_ROW = 24
#: benchmarks/RESULTS.md "Features": fp32 on this 2-core CPU, batch 8, process time, images per CPU-second.
CPU_IMAGES_PER_CORE_S = {"vgg16-fc2": 2.5, "resnet50": 3.2}
#: On paper (docs/similarity.md), one T4/V100-class GPU under fp16 autocast: VGG16 ~15.5 GMAC per image;
#: ResNet-50 ~4.1 GMAC, a quarter of it; ViT-B/32 clip-retrieval's published ~1,500 images/s on an RTX 3080.
GPU_IMAGES_PER_S = {"vgg16-fc2": 1000.0, "resnet50": 3000.0, "clip-vit-b-32": 1500.0}
VGG16_CPU_IMAGES_PER_CORE_S = CPU_IMAGES_PER_CORE_S[MODEL]
VGG16_GPU_IMAGES_PER_S = GPU_IMAGES_PER_S[MODEL]
MIN_MEASURED_ROWS = 50


@dataclass
class FeaturesEstimate:
    """The vectors of one set still to write for one model, and what they cost (None: no rate known)."""

    image_set: str
    images: int
    remaining: int
    disk_bytes: int
    cpu_core_seconds: float | None
    gpu_seconds: float | None
    rate_basis: str
    model: str = MODEL
    dim: int = DIM
    dtype: str = DEFAULT_DTYPE


def _count(con: duckdb.DuckDBPyConnection, query: str) -> int:
    return int(con.execute(query).fetchall()[0][0] or 0)


def model_dim(storage: Storage, model: str, dims: dict[str, int] | None = None) -> int:
    """d of `model`: from the registry the caller passes, else its stored vectors, else the default model's."""
    if dims and model in dims:
        return dims[model]
    for s in ImageSet:
        found = stored_dim(storage, model, s)
        if found:
            return found[1]
    if model == MODEL:
        return DIM
    raise UsageError(f"unknown model {model!r}: choose one of {', '.join(sorted(dims or {MODEL: DIM}))}")


def stored_images(con: duckdb.DuckDBPyConnection, storage: Storage, image_set: ImageSet) -> int:
    """Images a set will have to describe: its `ok` ledger rows once the build started, else its plan rows."""
    if ledger_started(storage, image_set):
        ledger_relation(con, storage, image_set, ["row", "outcome"]).create_view("features_stored", replace=True)
        return _count(con, "SELECT count(*) FROM features_stored WHERE outcome = 'ok' AND row >= 0")
    path = storage.path(LAYOUT.plan(image_set)).replace("'", "''")
    return _count(con, f"SELECT count(*) FROM read_parquet('{path}')")


def features_estimates(
    con: duckdb.DuckDBPyConnection,
    storage: Storage,
    planned: list[ImageSet],
    model: str = MODEL,
    dim: int = DIM,
    dtype: str = DEFAULT_DTYPE,
) -> list[FeaturesEstimate]:
    """One estimate per planned set, for `model` (`dim`-d) stored as `dtype`."""
    if dtype not in VECTOR_DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(VECTOR_DTYPES)}, got {dtype!r}")
    out = []
    measured_rows, measured_s = 0, 0.0
    for s in planned:
        files = features_ledger_files(storage, s).get(model, [])
        done = 0
        if files:
            features_relation(con, storage, files).create_view("features_done", replace=True)
            done = _count(con, "SELECT count(*) FROM features_done")
            rows, span = con.execute(
                "SELECT coalesce(sum(n), 0), coalesce(sum(span), 0) FROM (SELECT count(*) AS n, "
                "epoch_ms(max(started_at)) / 1000.0 - epoch_ms(min(started_at)) / 1000.0 AS span "
                "FROM features_done GROUP BY shard) WHERE span > 0"
            ).fetchall()[0]
            measured_rows, measured_s = measured_rows + int(rows), measured_s + float(span)
        images = stored_images(con, storage, s)
        remaining = max(0, images - done)
        disk = remaining * (dim * VECTOR_DTYPES[dtype] + METADATA_BYTES_PER_ROW)
        out.append(FeaturesEstimate(s.value, images, remaining, disk, None, None, "", model, dim, dtype))
    rate: float | None
    if measured_rows >= MIN_MEASURED_ROWS:
        rate = measured_rows / measured_s
        basis = f"CPU at {rate:.2f} images/s per shard process, measured over {measured_rows:,} rows of this root"
    elif model in CPU_IMAGES_PER_CORE_S:
        rate = CPU_IMAGES_PER_CORE_S[model]
        basis = f"CPU at {rate:g} images per core-second (benchmarks/RESULTS.md, Features)"
    else:
        rate = None
        basis = f"CPU time unknown: no rate measured for {model} (run a shard of it, then estimate again)"
    gpu = GPU_IMAGES_PER_S.get(model)
    for e in out:
        e.cpu_core_seconds = None if rate is None else e.remaining / rate
        e.gpu_seconds = None if gpu is None else e.remaining / gpu
        on_paper = f"GPU at {gpu:g} images/s, on paper (docs/similarity.md)" if gpu else "GPU time unknown"
        e.rate_basis = f"{basis}; {on_paper}"
    return out
