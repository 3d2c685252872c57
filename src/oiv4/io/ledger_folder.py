"""A ledger of its own schema in its own folder (the features ledger: one row per stored image per model), kept
by the set ledger's rules: a running shard writes durable parts, finishing compacts them into
`shard-NNNNN.parquet` (written before the parts go), and every read resolves by `io.ledger.latest_per_row`.

The set's own ledger (`io.ledger`, `io.ledger_write`) adds footer summaries and reason kinds on top of the same
layout; a folder ledger is small (one row per image of a model) and needs neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from oiv4.contracts.layout import LAYOUT
from oiv4.io.damage import reading
from oiv4.io.ledger import latest_per_row
from oiv4.io.storage import Storage


def folder_files(storage: Storage, ledger_dir: str, shard: int | None = None, *, parts_only: bool = False) -> list[str]:
    """A ledger folder's files (of one shard, or all): parts listed first, then compacted files (a shard
    compacting meanwhile writes its file before removing its parts, so every row is in something listed)."""
    if shard is None:
        parts, compacted = LAYOUT.part_files_glob(ledger_dir), LAYOUT.shard_files_glob(ledger_dir)
    else:
        parts = LAYOUT.shard_parts_glob(LAYOUT.folder_shard_parts_dir(ledger_dir, shard))
        compacted = LAYOUT.folder_shard_file(ledger_dir, shard)
    listed = storage.glob(parts)
    return listed if parts_only else [*listed, *storage.glob(compacted)]


def read_folder_files(storage: Storage, rels: Sequence[str], schema: pa.Schema | None = None) -> pa.Table | None:
    """Files of a ledger folder resolved by the one de-dup rule (None: no rows). A shard's compacted file and its
    parts may overlap while it finishes; a file gone meanwhile is skipped (its rows are in the compacted file
    listed after it). A damaged file is a `DamagedFileError` naming it."""
    tables = []
    for rel in rels:
        try:
            with reading(storage, rel):
                tables.append(pq.read_table(pa.BufferReader(storage.read_bytes(rel)), schema=schema))
        except FileNotFoundError:
            continue
    if not tables:
        return None
    return latest_per_row(pa.concat_tables(tables, promote_options="default"))


def _parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


@dataclass(frozen=True)
class LedgerFolder:
    """One folder ledger: where it lives and its schema (rows need `row` and `started_at`, as the set ledger's)."""

    storage: Storage
    directory: str
    schema: pa.Schema

    def write_part(self, shard: int, name: str, table: pa.Table) -> None:
        """`table` as one durable part of `shard`; `name` orders the shard's parts. What the rows describe must
        already be durable."""
        self.storage.sync()
        rel = LAYOUT.folder_part(self.directory, shard, name)
        self.storage.write_bytes(rel, _parquet(table.cast(self.schema)), fsync=True)

    def _read(self, rels: list[str]) -> pa.Table:
        table = read_folder_files(self.storage, rels, self.schema)
        return self.schema.empty_table() if table is None else table

    def read_parts(self, shard: int) -> pa.Table:
        """The rows a running (or killed) shard has recorded in parts, one per `row`, sorted by `row`."""
        return self._read(folder_files(self.storage, self.directory, shard, parts_only=True))

    def read_shard(self, shard: int) -> pa.Table:
        """A shard's rows: its compacted file and any parts beside it, latest row per `row`."""
        return self._read(folder_files(self.storage, self.directory, shard))

    def compact(self, shard: int) -> pa.Table:
        """Fold the shard's parts into its shard file (written before the parts go), and return it."""
        table = self.read_parts(shard)
        self.storage.write_bytes(LAYOUT.folder_shard_file(self.directory, shard), _parquet(table), fsync=True)
        self.storage.remove(LAYOUT.folder_shard_parts_dir(self.directory, shard))
        return table
