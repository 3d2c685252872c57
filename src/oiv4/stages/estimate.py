"""`oiv4 estimate`: what the work still to do will cost in transfer, disk and wall time, before committing to it.

Only rows still to do count: plan rows of a URL set (train, extended_targets) without a ledger row, and CVDF
archives of targets/validation not yet converted. For each set:

- transfer: the plan's `OriginalSize` of every remaining URL row (the mean of the known sizes where a row
  has none); for archives, the published size of each remaining `.tar.gz` (`oiv4/data/archives.json`).
- disk: URL rows store a shrunk JPEG, so remaining transfer x the stored/original ratio of this root's
  `ok` rows when at least `MIN_MEASURED_ROWS` exist, else `DEFAULT_STORED_RATIO`. An archive's zip holds
  its JPEGs STORED, so it weighs what the `.tar.gz` does (gzip gains ~1 % on JPEGs); `keep_tar` doubles it.
- time: CPU core-seconds from the throughput of this root's finished shards (rows per second of shard
  wall time, i.e. per worker process) when there are enough, else `DEFAULT_IMAGES_PER_CORE_S` scaled by
  the originals' mean size; archives at `ARCHIVE_CORE_S_PER_GB`. Wall time is the larger of the CPU time
  spread over the workers and the transfer over the link speed the user gives (unknown without one).

The defaults are measured (benchmarks/RESULTS.md); the figures say which basis they used. `oiv4 features`
(vectors of the default model) is estimated beside: the images without a features-ledger row, their vectors'
disk, CPU time from this root's own vgg16-fc2 shards when enough rows were measured (rows per second of a
shard's span, per shard process using every core) else `VGG16_CPU_IMAGES_PER_CORE_S`, and GPU time at
`VGG16_GPU_IMAGES_PER_S`, a figure on paper (docs/similarity.md).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import TYPE_CHECKING

from oiv4.contracts.errors import UsageError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.limits import above, at_least
from oiv4.contracts.schema import ImageSet
from oiv4.contracts.setting import setting
from oiv4.io.ledger import ledger_started, shard_has_parts
from oiv4.io.sql import attach_filesystem, features_ledger_files, features_relation, ledger_relation
from oiv4.io.storage import Storage

if TYPE_CHECKING:
    import duckdb

#: RESULTS.md "Scaling": the whole fetch job costs 14-19 images per CPU-second on 2.1 MB originals;
#: docs/cluster.md sizes with 16. The CPU cost of an image grows with its bytes (MD5, JPEG decoding).
DEFAULT_IMAGES_PER_CORE_S = 16.0
DEFAULT_ORIGINAL_BYTES = 2.1e6
#: RESULTS.md "Scaling": 132 KB stored per image from 2.1 MB originals (1024 px, quality 90).
DEFAULT_STORED_RATIO = 132e3 / 2.1e6
#: RESULTS.md "Archive sets": the whole conversion costs 3.2 CPU-seconds per GB of archive.
ARCHIVE_CORE_S_PER_GB = 3.2
#: Fewer finished rows than this say more about start-up than about throughput: use the defaults.
MIN_MEASURED_ROWS = 50
URL_SETS = (ImageSet.train, ImageSet.extended_targets)
HEX_DIGITS = "0123456789abcdef"


@dataclass(frozen=True)
class EstimateSettings:
    """What the machine that will do the work looks like."""

    link_mbps: float | None = setting(
        None,
        help="Your download link in Mbit/s; wall time then includes the transfer.",
        flag="--link-mbps",
        default_text="not given",
    )
    workers: int | None = setting(
        None,
        help="Worker processes (one core each) that will do the work.",
        flag="--workers",
        default_text="one per core",
    )
    keep_tar: bool = setting(
        False,
        help="The archives will be kept beside their zips (archives --keep-tar).",
        flag="--keep-tar/--no-keep-tar",
    )

    def __post_init__(self) -> None:
        above(self, 0, "link_mbps")
        at_least(self, 1, "workers")


@dataclass
class SetEstimate:
    """The remaining work of one set and what it will cost."""

    image_set: str
    planned: int
    remaining_rows: int
    transfer_bytes: int
    disk_bytes: int
    core_seconds: float
    remaining_archives: list[str] = field(default_factory=list)  # archive sets only
    disk_basis: str = ""
    rate_basis: str = ""


@dataclass
class Estimate:
    """Every planned set's estimate, and the totals for `workers` processes and the given link."""

    sets: list[SetEstimate]
    workers: int
    link_mbps: float | None
    #: `oiv4 features` for the default model (vgg16-fc2, float16), per set: not part of the totals above.
    features: list[FeaturesEstimate] = field(default_factory=list)

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
        }
        return json.dumps(out, indent=1)


def published_archive_bytes() -> dict[str, int]:
    """The CVDF archives' published sizes, `train_0` -> bytes (the table archives verify against)."""
    raw = json.loads(resources.files("oiv4").joinpath("data/archives.json").read_text())
    return {name.removesuffix(".tar.gz"): int(v["bytes"]) for name, v in raw["archives"].items()}


def estimate(storage: Storage, settings: EstimateSettings | None = None) -> Estimate:
    """The estimate for every set that has a plan under `storage` (a `UsageError` when there is none)."""
    import duckdb

    settings = settings or EstimateSettings()
    con = duckdb.connect()
    attach_filesystem(con, storage)
    planned = [s for s in ImageSet if storage.exists(LAYOUT.plan(s))]
    if not planned:
        raise UsageError(
            f"nothing to estimate: no plan under {storage.root}: run `oiv4 plan --root {storage.root}` first"
        )
    measured = {s: _measured(con, storage, s) for s in URL_SETS if s in planned}
    sets = []
    for s in planned:
        if s in URL_SETS:
            sets.append(_url_set(con, storage, s, measured))
        else:
            sets.append(_archive_set(con, storage, s, settings.keep_tar))
    features = features_estimates(con, storage, planned)
    return Estimate(sets, settings.workers or os.cpu_count() or 1, settings.link_mbps, features)


@dataclass
class _Measured:
    rows: int = 0  # ok rows with both sizes known
    downloaded: int = 0
    stored: int = 0
    shard_rows: int = 0  # rows of the shards whose wall time is known
    shard_seconds: float = 0.0


def _one(con: duckdb.DuckDBPyConnection, query: str) -> tuple:
    """The first row of `query`, with the result drained so the connection is free again."""
    return con.execute(query).fetchall()[0]


def _plan_sql(storage: Storage, image_set: ImageSet) -> str:
    return "read_parquet('" + storage.path(LAYOUT.plan(image_set)).replace("'", "''") + "')"


def _has_ledger(storage: Storage, image_set: ImageSet) -> bool:
    return ledger_started(storage, image_set)


def _measured(con: duckdb.DuckDBPyConnection, storage: Storage, image_set: ImageSet) -> _Measured:
    """Sizes of this root's stored images and the throughput of its shards, from the ledger."""
    if not _has_ledger(storage, image_set):
        return _Measured()
    cols = ["shard", "row", "outcome", "source", "bytes_downloaded", "stored_bytes", "started_at", "elapsed_s"]
    ledger_relation(con, storage, image_set, cols).create_view("l", replace=True)
    rows, downloaded, stored = _one(
        con,
        "SELECT count(*), coalesce(sum(bytes_downloaded), 0), coalesce(sum(stored_bytes), 0) FROM l "
        "WHERE outcome = 'ok' AND source = 'original' AND bytes_downloaded > 0 AND stored_bytes > 0",
    )
    # A shard runs in one worker process from its first row's start to its last row's end; rows recovered
    # after a kill took no download, so they would flatter the rate.
    shard_rows, seconds = _one(
        con,
        "SELECT coalesce(sum(n), 0), coalesce(sum(span), 0) FROM ("
        " SELECT count(*) AS n, max(epoch_ms(started_at) / 1000.0 + elapsed_s) - min(epoch_ms(started_at) / 1000.0)"
        " AS span FROM l WHERE started_at IS NOT NULL AND elapsed_s IS NOT NULL AND coalesce(source, '') <> 'recovered'"
        " GROUP BY shard) WHERE span > 0",
    )
    return _Measured(rows, downloaded, stored, shard_rows, seconds)


def _url_set(
    con: duckdb.DuckDBPyConnection, storage: Storage, image_set: ImageSet, measured: dict[ImageSet, _Measured]
) -> SetEstimate:
    plan = _plan_sql(storage, image_set)
    done = "SELECT DISTINCT row FROM l WHERE row >= 0"
    if _has_ledger(storage, image_set):
        ledger_relation(con, storage, image_set, ["row"]).create_view("l", replace=True)
    else:
        con.execute("CREATE OR REPLACE TEMP TABLE l AS SELECT CAST(NULL AS BIGINT) AS row LIMIT 0")
    planned, remaining, known, mean_size = _one(
        con,
        f"SELECT (SELECT count(*) FROM {plan}), count(*), coalesce(sum(OriginalSize), 0), avg(OriginalSize) "
        f"FROM {plan} WHERE row NOT IN ({done})",
    )
    missing_sizes = _one(con, f"SELECT count(*) FROM {plan} WHERE OriginalSize IS NULL AND row NOT IN ({done})")[0]
    transfer = int(known + missing_sizes * (mean_size or DEFAULT_ORIGINAL_BYTES))
    mean = transfer / remaining if remaining else DEFAULT_ORIGINAL_BYTES

    own = measured.get(image_set, _Measured())
    pooled = _Measured(
        *(sum(getattr(m, f) for m in measured.values()) for f in ("rows", "downloaded", "stored", "shard_rows"))
    )
    pooled.shard_seconds = sum(m.shard_seconds for m in measured.values())
    sizes = own if own.rows >= MIN_MEASURED_ROWS else pooled
    if sizes.rows >= MIN_MEASURED_ROWS:
        ratio = sizes.stored / sizes.downloaded
        disk_basis = f"stored/original {ratio:.3f} measured over {sizes.rows:,} ok rows of this root"
    else:
        ratio = DEFAULT_STORED_RATIO
        disk_basis = f"stored/original {ratio:.3f}: default (benchmarks/RESULTS.md, Scaling)"
    speed = own if own.shard_rows >= MIN_MEASURED_ROWS else pooled
    if speed.shard_rows >= MIN_MEASURED_ROWS:
        rate = speed.shard_rows / speed.shard_seconds
        rate_basis = f"{rate:.1f} images/s per worker, measured over {speed.shard_rows:,} rows of this root's shards"
    else:
        rate = DEFAULT_IMAGES_PER_CORE_S * DEFAULT_ORIGINAL_BYTES / mean
        rate_basis = (
            f"{rate:.1f} images/s per core: default {DEFAULT_IMAGES_PER_CORE_S:g} at 2.1 MB originals, "
            f"scaled to {mean / 1e6:.2f} MB (benchmarks/RESULTS.md, Scaling)"
        )
    return SetEstimate(
        image_set.value,
        int(planned),
        int(remaining),
        transfer,
        int(transfer * ratio),
        remaining / rate if remaining else 0.0,
        disk_basis=disk_basis,
        rate_basis=rate_basis,
    )


def _archive_done(storage: Storage, image_set: ImageSet, stem: str) -> bool:
    """Converted: the zip and its compacted ledger shard exist and no parts are pending (the archive stage's
    own check also counts the zip's entries; a half-finished zip never reaches its final name, so this is close)."""
    shard = 0 if stem == "validation" else int(stem[-1], 16)
    return (
        storage.exists(LAYOUT.archive_zip(image_set, stem))
        and storage.exists(LAYOUT.ledger_shard(image_set, shard))
        and not shard_has_parts(storage, image_set, shard)
    )


def _archive_set(con: duckdb.DuckDBPyConnection, storage: Storage, image_set: ImageSet, keep_tar: bool) -> SetEstimate:
    plan = _plan_sql(storage, image_set)
    planned = _one(con, f"SELECT count(*) FROM {plan}")[0]
    if image_set == ImageSet.validation:
        stems = ["validation"] if planned else []
    else:  # the image `abc...` is in train_a: only archives whose digit starts a planned ID are needed
        firsts = {r[0] for r in con.execute(f"SELECT DISTINCT lower(substr(ImageID, 1, 1)) FROM {plan}").fetchall()}
        stems = [f"train_{x}" for x in HEX_DIGITS if x in firsts]
    sizes = published_archive_bytes()
    todo = [s for s in stems if not _archive_done(storage, image_set, s)]
    transfer = sum(sizes.get(s, 0) for s in todo)
    rows = 0
    if todo:
        digits = ", ".join(f"'{s[-1]}'" for s in todo)
        where = "" if image_set == ImageSet.validation else f" WHERE lower(substr(ImageID, 1, 1)) IN ({digits})"
        rows = _one(con, f"SELECT count(*) FROM {plan}{where}")[0]
    return SetEstimate(
        image_set.value,
        int(planned),
        int(rows),
        transfer,
        transfer * (2 if keep_tar else 1),
        transfer / 1e9 * ARCHIVE_CORE_S_PER_GB,
        remaining_archives=[f"{s}.tar.gz" for s in todo],
        disk_basis="zip of STORED JPEGs ~ the published .tar.gz size" + (", plus the kept .tar.gz" if keep_tar else ""),
        rate_basis=f"{ARCHIVE_CORE_S_PER_GB:g} CPU-s per GB converted (benchmarks/RESULTS.md, Archive sets)",
    )


# --------------------------------------------------------------------------------------------------
# oiv4 features

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
        if ledger_started(storage, s):
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
