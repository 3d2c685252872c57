"""The build's remaining work: transfer, disk and CPU time of the rows and archives still to do.

Only rows still to do count: plan rows of a URL set (train, extended_targets) without a ledger row, and CVDF
archives of targets/validation not yet converted. For each set:

- transfer: the plan's `OriginalSize` of every remaining URL row (the mean of the known sizes where a row
  has none); for archives, the published size of each remaining `.tar.gz` (`oiv4/data/archives.json`).
- disk: URL rows store a shrunk JPEG, so remaining transfer x the stored/original ratio of this root's
  `ok` rows when at least `MIN_MEASURED_ROWS` exist, else `DEFAULT_STORED_RATIO`. An archive's zip holds
  its JPEGs STORED, so it weighs what the `.tar.gz` does (gzip gains ~1 % on JPEGs); `keep_tar` doubles it.
- time: CPU core-seconds from the throughput of this root's finished shards (rows per second of shard
  wall time, i.e. per worker process) when there are enough, else `DEFAULT_IMAGES_PER_CORE_S` scaled by
  the originals' mean size; archives at `ARCHIVE_CORE_S_PER_GB`.

The defaults are measured (benchmarks/RESULTS.md); the figures say which basis they used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING

from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.io.ledger import ledger_started, shard_has_parts
from oiv4.io.sql import ledger_relation
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


def published_archive_bytes() -> dict[str, int]:
    """The CVDF archives' published sizes, `train_0` -> bytes (the table archives verify against)."""
    raw = json.loads(resources.files("oiv4").joinpath("data/archives.json").read_text())
    return {name.removesuffix(".tar.gz"): int(v["bytes"]) for name, v in raw["archives"].items()}


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


def build_estimates(
    con: duckdb.DuckDBPyConnection, storage: Storage, planned: list[ImageSet], keep_tar: bool
) -> list[SetEstimate]:
    """One estimate per planned set, in `planned` order (URL sets share their measured sizes and rates)."""
    measured = {s: _measured(con, storage, s) for s in URL_SETS if s in planned}
    return [
        _url_set(con, storage, s, measured) if s in URL_SETS else _archive_set(con, storage, s, keep_tar)
        for s in planned
    ]
