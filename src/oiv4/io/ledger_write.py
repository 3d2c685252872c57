"""The one ledger writer: a running shard appends durable *part* files and compacts them into
`shard-NNNNN.parquet` when it finishes (see `oiv4.io.ledger` for the reader and the de-dup rule).

Every file it writes stores each row's reason kind and a footer summary, so readers count a file from its
footer instead of its rows.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import LEDGER_SCHEMA, ImageSet
from oiv4.io.ledger import conform, read_shard
from oiv4.io.ledger_summary import summary_metadata
from oiv4.io.reason_kind import with_reason_kind
from oiv4.io.storage import Storage


def now_utc() -> datetime:
    return datetime.now(UTC)


#: `ParquetWriter.add_key_value_metadata` (pyarrow >= 16) writes key-values to the footer alone; older pyarrow,
#: which the compatible ranges admit, can only store them with the schema, which readers find the same way.
_FOOTER_ONLY_METADATA = hasattr(pq.ParquetWriter, "add_key_value_metadata")


def _part_rel(image_set: ImageSet, shard: int) -> str:
    # Time-ordered and unique without coordination: two writers of one shard never pick the same name.
    return LAYOUT.ledger_part(image_set, shard, f"{now_utc():%Y%m%dT%H%M%S%f}-{secrets.token_hex(3)}")


def _to_table(rows: list[Mapping[str, Any]]) -> pa.Table:
    cols = {f.name: [r.get(f.name) for r in rows] for f in LEDGER_SCHEMA}
    return pa.Table.from_pydict(cols, schema=LEDGER_SCHEMA)


def _table_bytes(table: pa.Table, *, part: bool = False) -> bytes:
    """Parquet bytes with every row's reason kind stored and a summary (`oiv4.io.ledger_summary`) in the footer's
    key-values (not also in the serialized Arrow schema, which every reader parses): status counts a file from it,
    and a compacted file's list of failed ImageIDs lets a lookup find its shard without loading the set."""
    table = with_reason_kind(table)  # a table read from a ledger file carries its summary: never copied
    table = table.replace_schema_metadata({k: v for k, v in (table.schema.metadata or {}).items() if b"oiv4." not in k})
    summary = summary_metadata(table, failed_ids=not part)
    sink = pa.BufferOutputStream()
    if not _FOOTER_ONLY_METADATA:  # pyarrow < 16: the summary rides in the schema's metadata (a larger footer)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **summary})
    with pq.ParquetWriter(sink, table.schema, compression="zstd") as writer:
        writer.write_table(table)
        if _FOOTER_ONLY_METADATA:
            writer.add_key_value_metadata(summary)
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
        self.storage.write_bytes(_part_rel(self.image_set, self.shard), _table_bytes(table, part=True), fsync=True)
        self._pending.clear()

    def close(self) -> pa.Table:
        """Flush, then compact all parts into the shard file (one row per (set, row)); returns it."""
        self.flush()
        table = read_shard(self.storage, self.image_set, self.shard)
        # Written before the parts are removed: a reader that finds a part gone reads this file instead.
        self.storage.write_bytes(LAYOUT.ledger_shard(self.image_set, self.shard), _table_bytes(table), fsync=True)
        self.storage.remove(LAYOUT.ledger_parts_dir(self.image_set, self.shard))
        return table


def append_rows(storage: Storage, image_set: ImageSet, shard: int, rows: list[Mapping[str, Any]]) -> None:
    """Record rows for a shard in one durable part (used by stages that finish whole batches at once)."""
    led = ShardLedger(storage, image_set, shard, flush_rows=max(1, len(rows) + 1))
    for r in rows:
        led.record(**r)
    led.flush()


def append_table(storage: Storage, image_set: ImageSet, shard: int, table: pa.Table) -> None:
    """Record a table of ledger rows (LEDGER_SCHEMA) for a shard as one durable part, without a Python row loop."""
    if table.num_rows == 0:
        return
    storage.sync()
    table = conform(table, LEDGER_SCHEMA.names)  # a caller's table may predate a column (reason_kind)
    storage.write_bytes(_part_rel(image_set, shard), _table_bytes(table.cast(LEDGER_SCHEMA), part=True), fsync=True)
