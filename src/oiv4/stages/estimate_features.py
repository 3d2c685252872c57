"""`oiv4 estimate`'s features part: the vectors still to write for the default model (vgg16-fc2, float16).

Per set: the images still without a features ledger row (the set's `ok` rows when it is stored, else its plan
rows), the disk their vectors and metadata take, and the compute:

- CPU: this root's own vgg16-fc2 shards' rate when enough rows were measured (rows per second of a shard's
  span, i.e. per shard process using every core), else `VGG16_CPU_IMAGES_PER_CORE_S` (benchmarks/RESULTS.md);
- GPU: `VGG16_GPU_IMAGES_PER_S`, a figure on paper (docs/similarity.md): no GPU was measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.io.sql import features_ledger_files, features_relation, ledger_relation
from oiv4.io.storage import Storage

if TYPE_CHECKING:
    import duckdb

#: The model the estimate is for, its dimension, and the default float16 storage.
MODEL, DIM, BYTES_PER_VALUE = "vgg16-fc2", 4096, 2
#: Metadata Parquet per row (image_id + row, zstd) and the npy header, measured on the demo: ~24 B a row.
METADATA_BYTES_PER_ROW = 24
#: benchmarks/RESULTS.md "Features": VGG16 fp32 on this 2-core CPU, process time: 2.5 images per CPU-second.
VGG16_CPU_IMAGES_PER_CORE_S = 2.5
#: On paper (docs/similarity.md): ~15.5 GFLOP per 224 px image; a T4/V100-class GPU under fp16 autocast.
VGG16_GPU_IMAGES_PER_S = 1000.0
MIN_MEASURED_ROWS = 50


@dataclass
class FeaturesEstimate:
    """The vectors of one set still to write, and what they cost."""

    image_set: str
    images: int
    remaining: int
    disk_bytes: int
    cpu_core_seconds: float
    gpu_seconds: float
    rate_basis: str


def _count(con: duckdb.DuckDBPyConnection, query: str) -> int:
    return int(con.execute(query).fetchall()[0][0] or 0)


def features_estimates(
    con: duckdb.DuckDBPyConnection, storage: Storage, planned: list[ImageSet]
) -> list[FeaturesEstimate]:
    """One estimate per planned set."""
    out = []
    measured_rows, measured_s = 0, 0.0
    for s in planned:
        files = features_ledger_files(storage, s).get(MODEL, [])
        done = 0
        if files:
            features_relation(con, storage, files).create_view("features_done", replace=True)
            done = _count(con, "SELECT count(*) FROM features_done")
            rows, span = con.execute(
                "SELECT coalesce(sum(n), 0), coalesce(sum(span), 0) FROM (SELECT count(*) AS n, "
                "epoch_ms(max(started_at)) / 1000.0 - epoch_ms(min(started_at)) / 1000.0 AS span FROM features_done GROUP BY shard) "
                "WHERE span > 0"
            ).fetchall()[0]
            measured_rows, measured_s = measured_rows + int(rows), measured_s + float(span)
        if storage.glob(f"{LAYOUT.ledger_dir(s)}/shard-*"):
            ledger_relation(con, storage, s, ["row", "outcome"]).create_view("features_stored", replace=True)
            images = _count(con, "SELECT count(*) FROM features_stored WHERE outcome = 'ok' AND row >= 0")
        else:
            path = storage.path(LAYOUT.plan(s)).replace("'", "''")
            images = _count(con, f"SELECT count(*) FROM read_parquet('{path}')")
        remaining = max(0, images - done)
        out.append(
            FeaturesEstimate(
                s.value,
                images,
                remaining,
                remaining * (DIM * BYTES_PER_VALUE + METADATA_BYTES_PER_ROW),
                remaining / VGG16_CPU_IMAGES_PER_CORE_S,
                remaining / VGG16_GPU_IMAGES_PER_S,
                "",
            )
        )
    if measured_rows >= MIN_MEASURED_ROWS:
        rate = measured_rows / measured_s
        basis = f"CPU at {rate:.2f} images/s per shard process, measured over {measured_rows:,} rows of this root"
        for e in out:
            e.cpu_core_seconds = e.remaining / rate
    else:
        basis = f"CPU at {VGG16_CPU_IMAGES_PER_CORE_S:g} images per core-second (benchmarks/RESULTS.md, Features)"
    for e in out:
        e.rate_basis = f"{basis}; GPU at {VGG16_GPU_IMAGES_PER_S:g} images/s, on paper (docs/similarity.md)"
    return out
