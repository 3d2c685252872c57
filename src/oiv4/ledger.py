"""The ledger: one Parquet row per input image recording how it ended, per shard.

A shard appends small *part* files while it runs (each made durable before it is written, after the
images it describes), and compacts them into `shard-NNNNN.parquet` when it finishes. Resume reads
both, so a kill at any moment loses at most the rows of the part being assembled, and those are
recovered from the files already at their final paths (see the fetch stage).

Parquet + DuckDB rather than SQLite: shards on different machines write their own files with no
shared lock, and a whole set's ledger (millions of rows) is queried in well under a second.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .layout import LAYOUT
from .schema import LEDGER_SCHEMA, ImageSet
from .storage import Storage


def now_utc() -> datetime:
    return datetime.now(UTC)


def _to_table(rows: list[Mapping[str, Any]]) -> pa.Table:
    cols = {f.name: [r.get(f.name) for r in rows] for f in LEDGER_SCHEMA}
    return pa.Table.from_pydict(cols, schema=LEDGER_SCHEMA)


def _table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


@dataclass
class ShardLedger:
    """Ledger writer for one shard of one set. Not shared between processes: one shard, one writer."""

    storage: Storage
    image_set: ImageSet
    shard: int
    flush_rows: int = 500
    _pending: list[dict[str, Any]] = field(default_factory=list)

    def record(self, **row: Any) -> None:
        row.setdefault("set", self.image_set.value)
        row.setdefault("shard", self.shard)
        self._pending.append(row)
        if len(self._pending) >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        """Write pending rows as a new durable part. Images they describe must already be durable."""
        if not self._pending:
            return
        self.storage.sync()
        table = _to_table(self._pending)
        rel = f"{LAYOUT.ledger_parts_dir(self.image_set, self.shard)}/part-{now_utc():%Y%m%dT%H%M%S%f}-{secrets.token_hex(3)}.parquet"
        self.storage.write_bytes(rel, _table_bytes(table), fsync=True)
        self._pending.clear()

    def close(self) -> pa.Table:
        """Flush, then compact all parts into the shard file; returns the shard's whole ledger."""
        self.flush()
        table = read_shard(self.storage, self.image_set, self.shard)
        self.storage.write_bytes(LAYOUT.ledger_shard(self.image_set, self.shard), _table_bytes(table), fsync=True)
        self.storage.remove(LAYOUT.ledger_parts_dir(self.image_set, self.shard))
        return table


def _read_one(storage: Storage, rel: str) -> pa.Table:
    with storage.open(rel) as fh:
        return pq.read_table(fh, schema=LEDGER_SCHEMA)


def _read_part_or_its_shard(storage: Storage, rel: str) -> pa.Table:
    """Read a ledger file; a part that vanished was compacted into its shard file, so read that instead.

    This is what lets `read_set` run while shards finish (e.g. `oiv4 status` during a cluster run): a
    shard writes its compacted file *before* removing its parts, and listers name parts first.
    """
    try:
        return _read_one(storage, rel)
    except FileNotFoundError:
        if ".parts/" not in rel:
            raise
        return _read_one(storage, rel.rsplit(".parts/", 1)[0] + ".parquet")


def _read_files(storage: Storage, rels: Iterable[str]) -> pa.Table:
    rels = list(rels)
    if storage.local or len(rels) < 2:
        tables = [_read_part_or_its_shard(storage, rel) for rel in rels]
    else:
        from concurrent.futures import ThreadPoolExecutor

        # Object stores: each read is a round trip, and a set has hundreds of shard files.
        with ThreadPoolExecutor(max_workers=16) as pool:
            tables = list(pool.map(lambda rel: _read_part_or_its_shard(storage, rel), rels))
    if not tables:
        return LEDGER_SCHEMA.empty_table()
    return pa.concat_tables(tables)


def _dedupe_latest(table: pa.Table) -> pa.Table:
    """Keep the last row per (set, row): a retried failure supersedes the failure it retried."""
    if table.num_rows == 0:
        return table
    import duckdb

    con = duckdb.connect()
    con.register("t", table)
    out = con.sql(
        """
        SELECT * EXCLUDE (rn) FROM (
          SELECT *, row_number() OVER (PARTITION BY "set", "row" ORDER BY started_at DESC NULLS LAST) AS rn
          FROM t) WHERE rn = 1 ORDER BY "row"
        """
    ).to_arrow_table()  # duckdb 2.x: the connection has no `.arrow()` any more
    return out.cast(LEDGER_SCHEMA)


def read_shard(storage: Storage, image_set: ImageSet | str, shard: int) -> pa.Table:
    """The shard's ledger: its compacted file (if any) plus any parts written since, latest row wins."""
    image_set = ImageSet(image_set)
    parts = storage.glob(f"{LAYOUT.ledger_parts_dir(image_set, shard)}/part-*.parquet")  # parts first: see _read_part_or_its_shard
    rels = [r for r in [LAYOUT.ledger_shard(image_set, shard)] if storage.exists(r)]
    return _dedupe_latest(_read_files(storage, rels + parts))


def read_set(storage: Storage, image_set: ImageSet | str) -> pa.Table:
    """Every ledger row of a set (all shards, compacted and in-progress parts), latest row per image."""
    image_set = ImageSet(image_set)
    d = LAYOUT.ledger_dir(image_set)
    parts = storage.glob(f"{d}/shard-*.parts/part-*.parquet")  # parts first: see _read_part_or_its_shard
    return _dedupe_latest(_read_files(storage, storage.glob(f"{d}/shard-*.parquet") + parts))


def append_rows(storage: Storage, image_set: ImageSet, shard: int, rows: list[Mapping[str, Any]]) -> None:
    """Record rows for a shard in one durable part (used by stages that finish whole batches at once)."""
    led = ShardLedger(storage, image_set, shard, flush_rows=max(1, len(rows) + 1))
    for r in rows:
        led.record(**r)
    led.flush()
