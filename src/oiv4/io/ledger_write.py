"""The one ledger writer: a running shard appends durable *part* files and compacts them into
`shard-NNNNN.parquet` when it finishes (see `oiv4.io.ledger` for the reader and the de-dup rule).

Every file it writes stores each row's reason kind and a footer summary, so readers count a file from its
footer instead of its rows.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.ledger_row import LEDGER_ROW_FIELDS, LedgerRow
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


def as_ledger_row(row: LedgerRow | Mapping[str, Any], image_set: ImageSet, shard: int) -> LedgerRow:
    """`row` as a `LedgerRow`; a mapping's `set` and `shard` default to the shard's. Raises TypeError on a key
    that is not a ledger column, so a misspelled field is an error instead of a null column."""
    if isinstance(row, LedgerRow):
        return row
    return LedgerRow.from_mapping({"set": image_set.value, "shard": shard, **row})


def _to_table(rows: Sequence[LedgerRow]) -> pa.Table:
    cols = {name: [getattr(r, name) for r in rows] for name in LEDGER_ROW_FIELDS}
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


def write_part(storage: Storage, image_set: ImageSet, shard: int, rows: Sequence[LedgerRow]) -> None:
    """Record `rows` as one new durable part of the shard's ledger. The images they describe must already be
    durable: the storage is synced first."""
    if not rows:
        return
    storage.sync()
    storage.write_bytes(_part_rel(image_set, shard), _table_bytes(_to_table(rows), part=True), fsync=True)


def compact(storage: Storage, image_set: ImageSet, shard: int) -> pa.Table:
    """Compact the shard's parts into its shard file (one row per (set, row)); returns it."""
    table = read_shard(storage, image_set, shard)
    # Written before the parts are removed: a reader that finds a part gone reads this file instead.
    storage.write_bytes(LAYOUT.ledger_shard(image_set, shard), _table_bytes(table), fsync=True)
    storage.remove(LAYOUT.ledger_parts_dir(image_set, shard))
    return table


@dataclass
class LedgerBuffer:
    """The ledger rows of one running shard not yet written, and when they are due as a part: at `flush_rows`
    rows (`add` says so) or `flush_seconds` after the last flush (`due`). Not shared between processes: one
    shard, one buffer. A caller that writes from another thread `take`s the rows on its own and `restore`s them
    if the write fails, so no row is lost or written twice."""

    storage: Storage
    image_set: ImageSet
    shard: int
    flush_rows: int = 500
    flush_seconds: float = math.inf
    _rows: list[LedgerRow] = field(default_factory=list)
    _last_flush: float = field(default_factory=time.monotonic)

    def add(self, row: LedgerRow | Mapping[str, Any]) -> bool:
        """Buffer one row; True when the buffer is full (`flush_rows`) and should be flushed."""
        self._rows.append(as_ledger_row(row, self.image_set, self.shard))
        return len(self._rows) >= self.flush_rows

    def record(self, **row: Any) -> None:
        """Buffer one row given as columns (`set` and `shard` default to the shard's), flushing when full."""
        if self.add(row):
            self.flush()

    def __len__(self) -> int:
        return len(self._rows)

    def due(self) -> bool:
        """True when `flush_seconds` have passed since the last flush."""
        return time.monotonic() - self._last_flush >= self.flush_seconds

    def take(self) -> list[LedgerRow]:
        """The buffered rows, leaving the buffer empty; restarts the `flush_seconds` clock."""
        rows, self._rows = self._rows, []
        self._last_flush = time.monotonic()
        return rows

    def restore(self, rows: list[LedgerRow]) -> None:
        """Put rows a failed write had taken back in front of those buffered since."""
        self._rows[:0] = rows

    def write(self, rows: Sequence[LedgerRow]) -> None:
        """Write taken rows as one durable part (`write_part`); safe to call from another thread."""
        write_part(self.storage, self.image_set, self.shard, rows)

    def flush(self) -> None:
        """Write the buffered rows as a new durable part. Images they describe must already be durable."""
        rows = self.take()
        try:
            self.write(rows)
        except BaseException:
            self.restore(rows)
            raise

    def close(self) -> pa.Table:
        """Flush, then compact all parts into the shard file (one row per (set, row)); returns it."""
        self.flush()
        return compact(self.storage, self.image_set, self.shard)


def append_rows(
    storage: Storage, image_set: ImageSet, shard: int, rows: Iterable[LedgerRow | Mapping[str, Any]]
) -> None:
    """Record rows for a shard in one durable part (used by stages that finish whole batches at once)."""
    write_part(storage, image_set, shard, [as_ledger_row(r, image_set, shard) for r in rows])


def append_table(storage: Storage, image_set: ImageSet, shard: int, table: pa.Table) -> None:
    """Record a table of ledger rows (LEDGER_SCHEMA) for a shard as one durable part, without a Python row loop."""
    unknown = sorted(set(table.column_names) - set(LEDGER_ROW_FIELDS))
    if unknown:
        raise TypeError(f"not ledger columns: {', '.join(unknown)}")
    if table.num_rows == 0:
        return
    storage.sync()
    table = conform(table, LEDGER_SCHEMA.names)  # a caller's table may predate a column (reason_kind)
    storage.write_bytes(_part_rel(image_set, shard), _table_bytes(table.cast(LEDGER_SCHEMA), part=True), fsync=True)
