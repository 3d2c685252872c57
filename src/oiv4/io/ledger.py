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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import LEDGER_SCHEMA, ImageSet
from oiv4.io.storage import Storage


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


def load_ledger(
    storage: Storage,
    image_set: ImageSet | str,
    columns: tuple[str, ...] | None = None,
    *,
    row_filter: int | None = None,
) -> pa.Table:
    """A set's ledger, latest row per manifest row, sorted by `row`: same rows as `ledger.read_set`.

    Reads only `columns`, one thread per file, and deduplicates only when a row was recorded twice (a
    retry): opening a million-row ledger takes a fraction of a second. `row_filter` reads one row's
    history only (files are first probed by their small `row` column).
    """
    image_set = ImageSet(image_set)
    d = LAYOUT.ledger_dir(image_set)
    rels = storage.glob(f"{d}/shard-*.parquet") + storage.glob(f"{d}/shard-*.parts/part-*.parquet")
    cols = list(columns or LEDGER_SCHEMA.names)
    for need in ("row", "started_at"):
        if need not in cols:
            cols.append(need)
    schema = pa.schema([LEDGER_SCHEMA.field(c) for c in cols])
    if row_filter is not None:
        probes = _read_columns(storage, rels, ["row"])
        rels = [r for r, t in zip(rels, probes, strict=True) if pc.any(pc.equal(t["row"], row_filter)).as_py()]
    if not rels:
        return LEDGER_SCHEMA.empty_table().select(list(columns or LEDGER_SCHEMA.names))
    table = pa.concat_tables([t.cast(schema) for t in _read_columns(storage, rels, cols)])
    if row_filter is not None:
        table = table.filter(pc.equal(table["row"], row_filter))
    rows = _int64s(table["row"])
    if len(rows) > 1 and not bool((rows[1:] > rows[:-1]).all()):
        if len(np.unique(rows)) != len(rows):
            table = _latest_per_row(table)
        else:
            table = table.take(pc.sort_indices(table["row"]))  # shards listed out of row order
    return table.select(list(columns or LEDGER_SCHEMA.names))


def _int64s(col: pa.ChunkedArray) -> np.ndarray:
    """A non-null int64 column as numpy, straight from its buffers (`to_numpy` imports pandas: +0.3 s)."""
    arr = col.combine_chunks()
    if arr.null_count:
        raise ValueError("ledger column `row` has nulls")
    return np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + len(arr)]


def _read_columns(storage: Storage, rels: list[str], columns: list[str]) -> list[pa.Table]:
    # ParquetFile per file on a few threads: as fast as pyarrow.dataset here, without its import cost.
    from concurrent.futures import ThreadPoolExecutor

    def one(rel: str) -> pa.Table:
        with storage.open(rel) as fh:
            return _conform(pq.ParquetFile(fh).read(columns=columns), columns)

    if len(rels) == 1:
        return [one(rels[0])]
    with ThreadPoolExecutor(min(8, len(rels))) as pool:
        return list(pool.map(one, rels))


def _conform(table: pa.Table, columns: list[str]) -> pa.Table:
    """`table` with every one of `columns` present: ledger files written before a column was added to
    LEDGER_SCHEMA (checksum, phash) lack it, and ParquetFile.read silently drops missing columns; they are
    null there, as `pq.read_table(schema=LEDGER_SCHEMA)` (used by `_read_one`) fills them."""
    missing = [c for c in columns if c not in table.column_names]
    for name in missing:
        table = table.append_column(LEDGER_SCHEMA.field(name), pa.nulls(table.num_rows, LEDGER_SCHEMA.field(name).type))
    return table.select(columns) if missing else table


def _latest_per_row(table: pa.Table) -> pa.Table:
    # Same rule as ledger._dedupe_latest: a retried row supersedes the one it retried.
    import duckdb

    con = duckdb.connect()
    con.register("t", table)
    return con.sql(
        """SELECT * EXCLUDE (rn) FROM (
             SELECT *, row_number() OVER (PARTITION BY "row" ORDER BY started_at DESC NULLS LAST) AS rn FROM t)
           WHERE rn = 1 ORDER BY "row" """
    ).to_arrow_table()
