"""The ledger: one Parquet row per input image recording how it ended, per shard. One reader (here) and one
writer (`oiv4.io.ledger_write`).

A shard appends small *part* files while it runs (each made durable after the images it describes),
and compacts them into `shard-NNNNN.parquet` when it finishes. Compaction applies the one de-dup rule
(`latest_per_row`), so a compacted file holds exactly one row per (set, row). Later appends (a retry,
`verify --requeue`) land in new parts. Every reader therefore only resolves the rows still in `.parts/`
against the shard they belong to; no read ever de-duplicates a whole set again.

A (set, row) belongs to exactly one shard (rows are split by shard in the plan; archive members that are
not planned get negative rows that encode their shard), so resolution is per shard and streams.

Parquet + DuckDB rather than SQLite: shards on different machines write their own files with no
shared lock, and a whole set's ledger (millions of rows) is queried in well under a second.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from oiv4.contracts.errors import LedgerChangingError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import LEDGER_SCHEMA, ImageSet
from oiv4.io.damage import damaged_among, reading
from oiv4.io.storage import Storage

#: Threads reading ledger files: Parquet decoding and object-store round trips release the GIL.
READ_THREADS = 8
#: Shards resolved and yielded together by `iter_ledger` (~640,000 rows of URL sets per batch).
BATCH_SHARDS = 64
#: From this many part files in a batch on, DuckDB reads them (per-file Python overhead dominates).
MANY_PARTS = 64
#: DuckDB threads for them: opening small files waits on the file system more than on the CPU.
PART_THREADS = 8


# --------------------------------------------------------------------------------------------------
# the one de-dup rule


def latest_per_row(table: pa.Table) -> pa.Table:
    """One row per `row`, sorted by `row`: the latest `started_at` wins (nulls oldest), ties go to the later row.

    A retried failure supersedes the failure it retried; a `verify_failed` row (timestamped after the `ok`
    it contradicts) supersedes that `ok`. Rows later in `table` win ties, so list parts after their shard file.
    """
    if table.num_rows == 0:
        return table
    rows = _int64s(table["row"])
    if "started_at" in table.column_names:
        ts = table["started_at"].combine_chunks()
        stamps = ts.cast(pa.int64()).fill_null(np.iinfo(np.int64).min).to_numpy(zero_copy_only=False)
    else:
        stamps = np.zeros(len(rows), dtype=np.int64)
    order = np.lexsort((np.arange(len(rows)), stamps, rows))  # by row, then time, then position
    sorted_rows = rows[order]
    last = np.ones(len(rows), dtype=bool)
    last[:-1] = sorted_rows[1:] != sorted_rows[:-1]
    return table.take(pa.array(order[last]))


def _int64s(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A non-null int64 column as numpy, straight from its buffers (`to_numpy` imports pandas: +0.3 s)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if arr.null_count:
        raise ValueError("ledger column `row` has nulls")
    if len(arr) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + len(arr)]


def _strictly_increasing(rows: np.ndarray) -> bool:
    return len(rows) < 2 or bool((rows[1:] > rows[:-1]).all())


# --------------------------------------------------------------------------------------------------
# reading


@dataclass(frozen=True)
class LedgerFiles:
    """A snapshot listing of one set's ledger files, by shard: its compacted file and its parts (in time order)."""

    image_set: ImageSet
    compacted: dict[int, str] = field(default_factory=dict)
    parts: dict[int, list[str]] = field(default_factory=dict)

    @property
    def shards(self) -> list[int]:
        return sorted(set(self.compacted) | set(self.parts))

    @property
    def empty(self) -> bool:
        return not self.compacted and not self.parts


def list_ledger(
    storage: Storage, image_set: ImageSet | str, shards: Sequence[int] | None = None, *, ledger_dir: str | None = None
) -> LedgerFiles:
    """List a set's ledger files (or those of another ledger folder of the set's, such as a features ledger's).
    Parts are listed *before* shard files: a shard compacting meanwhile writes its shard file before removing
    its parts, so every row is in something this listing names."""
    image_set = ImageSet(image_set)
    d = ledger_dir or LAYOUT.ledger_dir(image_set)
    if shards is not None and len(shards) == 1:
        parts = storage.glob(LAYOUT.shard_parts_glob(LAYOUT.folder_shard_parts_dir(d, shards[0])))
        one = LAYOUT.folder_shard_file(d, shards[0])
        compacted = [one] if storage.exists(one) else []
    else:
        parts = storage.glob(LAYOUT.part_files_glob(d))
        compacted = storage.glob(LAYOUT.shard_files_glob(d))
    files = LedgerFiles(image_set)
    wanted = None if shards is None else set(shards)
    for rel in compacted:
        s = LAYOUT.shard_of(rel)
        if wanted is None or s in wanted:
            files.compacted[s] = rel
    for rel in parts:  # sorted: part names start with their UTC time, so this is time order
        s = LAYOUT.shard_of(rel)
        if wanted is None or s in wanted:
            files.parts.setdefault(s, []).append(rel)
    return files


def has_ledger(storage: Storage, image_set: ImageSet | str) -> bool:
    """Whether the set has recorded a ledger row: a compacted shard file, or a part of a shard that has not
    compacted yet (a set whose shards all run, or were all killed, has only parts)."""
    d = LAYOUT.ledger_dir(ImageSet(image_set))
    return bool(storage.glob(LAYOUT.shard_files_glob(d)) or storage.glob(LAYOUT.part_files_glob(d)))


def sets_with_ledger(storage: Storage, sets: Sequence[ImageSet | str] | None = None) -> list[ImageSet]:
    """The sets among `sets` (default: all four) that have a ledger (`has_ledger`), in `ImageSet` order."""
    wanted = [ImageSet(s) for s in sets] if sets is not None else list(ImageSet)
    return [s for s in ImageSet if s in wanted and has_ledger(storage, s)]


def ledger_started(storage: Storage, image_set: ImageSet | str) -> bool:
    """Whether any shard of the set has started: a ledger file, a part or a shard's recorded settings."""
    return bool(storage.glob(LAYOUT.anything_glob(LAYOUT.ledger_dir(ImageSet(image_set)))))


def shard_has_parts(storage: Storage, image_set: ImageSet | str, shard: int) -> bool:
    """Whether rows of the shard wait in parts (it runs, was killed, or was appended to since it compacted)."""
    return bool(storage.glob(LAYOUT.shard_parts_glob(LAYOUT.ledger_parts_dir(ImageSet(image_set), shard))))


def _columns(columns: Sequence[str] | None, *, resolving: bool) -> list[str]:
    cols = list(columns or LEDGER_SCHEMA.names)
    for need in ("row", "started_at") if resolving else ("row",):
        if need not in cols:
            cols.append(need)
    return cols


def _read_file(storage: Storage, rel: str, columns: list[str]) -> pa.Table | None:
    """One ledger file (None when it vanished), cast to the ledger schema's types for `columns`."""
    try:
        with reading(storage, rel), storage.open(rel) as fh:
            table = conform(pq.ParquetFile(fh).read(columns=columns), columns)
    except FileNotFoundError:
        return None
    return table.cast(pa.schema([LEDGER_SCHEMA.field(c) for c in columns]))


def read_ledger_file(storage: Storage, rel: str, columns: Sequence[str]) -> pa.Table | None:
    """`columns` of one file `list_ledger` named, unresolved (None when it vanished: its shard compacted meanwhile).

    For counting what one file holds (live progress caches counts per file); rows of a set are read with
    `iter_ledger` / `read_ledger`, which apply the de-dup rule."""
    return _read_file(storage, rel, list(columns))


def _resolve(compacted: pa.Table | None, pending: pa.Table | None) -> pa.Table | None:
    """Latest row per (set, row) of some shards: their compacted rows (unique per row) and their parts (in time order)."""
    if pending is None or pending.num_rows == 0:
        if compacted is None or _strictly_increasing(_int64s(compacted["row"])):
            return compacted
        return latest_per_row(compacted)  # several shards out of order, or an older compaction: same rule
    if compacted is None or compacted.num_rows == 0:
        return latest_per_row(pending)
    superseded = np.isin(_int64s(compacted["row"]), _int64s(pending["row"]))
    if not superseded.any():
        return pa.concat_tables([compacted, latest_per_row(pending)])
    kept = compacted.filter(pa.array(~superseded))
    return pa.concat_tables([kept, latest_per_row(pa.concat_tables([compacted.filter(pa.array(superseded)), pending]))])


def _read_all(storage: Storage, rels: list[str], columns: list[str]) -> list[pa.Table | None]:
    if len(rels) <= 1:
        return [_read_file(storage, rel, columns) for rel in rels]
    with ThreadPoolExecutor(min(READ_THREADS, len(rels))) as pool:
        return list(pool.map(lambda rel: _read_file(storage, rel, columns), rels))


def _read_parts(storage: Storage, rels: list[str], columns: list[str]) -> pa.Table | None:
    """Parts in the order given; None when one vanished (its shard compacted meanwhile: list again)."""
    if len(rels) < MANY_PARTS:
        tables = _read_all(storage, rels, columns)
        return None if any(t is None for t in tables) else pa.concat_tables(tables)
    # Thousands of 50-row files: DuckDB's C++ reader opens them on all cores, ~10x the Python loop.
    import duckdb

    con = duckdb.connect(config={"threads": PART_THREADS})
    con.execute("SET enable_progress_bar = false")
    storage.attach_to(con)
    try:
        table = ledger_files_relation(con, storage, rels, columns).to_arrow_table()
    except duckdb.Error as exc:
        bad = damaged_among(storage, rels, exc)
        if bad is not None:
            raise bad from exc
        if isinstance(exc, duckdb.IOException):
            return None
        raise
    finally:
        con.close()
    return table.cast(pa.schema([LEDGER_SCHEMA.field(c) for c in columns]))


#: DuckDB's name for each ledger column type: a column absent from every file read is typed NULL.
_DUCK_TYPES = {pa.string(): "VARCHAR", pa.int16(): "SMALLINT", pa.int32(): "INTEGER", pa.int64(): "BIGINT",
               pa.uint64(): "UBIGINT", pa.float64(): "DOUBLE", pa.timestamp("ms", tz="UTC"): "TIMESTAMPTZ"}  # fmt: skip


def ledger_files_relation(con: Any, storage: Storage, rels: Sequence[str], columns: Sequence[str]) -> Any:
    """`columns` of the ledger files `rels` as one DuckDB relation on `con`, matched by name: files written before
    a column was added to LEDGER_SCHEMA (checksum, phash) read it as NULL, even when no file has it yet."""
    paths = ", ".join("'" + storage.path(r).replace("'", "''") + "'" for r in rels)
    scan = f"read_parquet([{paths}], union_by_name = true)"
    try:  # binding reads every file's footer: a damaged file fails here, not in the caller's query
        present = set(con.sql(f"SELECT * FROM {scan} LIMIT 0").columns)
    except Exception as exc:
        bad = damaged_among(storage, rels, exc)
        if bad is not None:
            raise bad from exc
        raise
    names = ", ".join(
        f'"{c}"' if c in present else f'CAST(NULL AS {_DUCK_TYPES[LEDGER_SCHEMA.field(c).type]}) AS "{c}"'
        for c in columns
    )
    return con.sql(f"SELECT {names} FROM {scan}")


def iter_ledger(
    storage: Storage,
    image_set: ImageSet | str,
    columns: Sequence[str] | None = None,
    *,
    shards: Sequence[int] | None = None,
    batch_shards: int = BATCH_SHARDS,
    files: LedgerFiles | None = None,
) -> Iterator[pa.Table]:
    """The set's ledger, resolved (latest row per (set, row)), as tables of `batch_shards` shards each, in
    shard order. Reads only `columns` (plus `row`), files in parallel. Memory: one batch at a time."""
    files = files or list_ledger(storage, image_set, shards)
    for i in range(0, len(files.shards), batch_shards):
        batch = files.shards[i : i + batch_shards]
        for _attempt in range(10):
            resolving = any(s in files.parts for s in batch)
            cols = _columns(columns, resolving=resolving)
            rels = [files.compacted[s] for s in batch if s in files.compacted]
            read = _read_all(storage, rels, cols)
            compacted = pa.concat_tables([t for t in read if t is not None]) if rels else None
            part_rels = [p for s in batch for p in files.parts.get(s, [])]
            pending = _read_parts(storage, part_rels, cols) if part_rels else None
            if part_rels and pending is None:
                # A shard compacted after we listed it: it wrote its shard file before removing its parts.
                files = _replace(files, list_ledger(storage, image_set, batch))
                continue
            break
        else:
            raise LedgerChangingError(
                f"ledger of {ImageSet(image_set).value} keeps changing under the reader; try again"
            )
        table = _resolve(compacted, pending)
        if table is not None and table.num_rows:
            yield table.select(list(columns or LEDGER_SCHEMA.names))


def _replace(files: LedgerFiles, fresh: LedgerFiles) -> LedgerFiles:
    keep = set(fresh.shards)
    compacted = {s: r for s, r in files.compacted.items() if s not in keep} | fresh.compacted
    parts = {s: r for s, r in files.parts.items() if s not in keep} | fresh.parts
    return LedgerFiles(files.image_set, compacted, parts)


def read_ledger(
    storage: Storage,
    image_set: ImageSet | str,
    columns: Sequence[str] | None = None,
    *,
    shards: Sequence[int] | None = None,
) -> pa.Table:
    """The set's ledger as one table, latest row per (set, row), sorted by `row`; only `columns` are read."""
    cols = list(columns or LEDGER_SCHEMA.names)
    with_row = cols if "row" in cols else [*cols, "row"]
    tables = list(iter_ledger(storage, image_set, with_row, shards=shards))
    if not tables:
        return LEDGER_SCHEMA.empty_table().select(cols)
    table = pa.concat_tables(tables)
    rows = _int64s(table["row"])
    if not _strictly_increasing(rows):  # archive sets: negative rows of refused members, shards out of order
        table = table.take(pa.array(np.argsort(rows, kind="stable")))
    return table.select(cols)


def read_failed_rows(storage: Storage, image_set: ImageSet, shard: int, columns: Sequence[str]) -> pa.Table | None:
    """`columns` of the not-ok rows of one shard's compacted file (None: no file). Callers check it has no parts."""
    cols = list(columns)
    try:
        with storage.open(LAYOUT.ledger_shard(ImageSet(image_set), shard)) as fh:
            table = pq.read_table(fh, columns=cols, filters=pc.field("outcome") != "ok")
    except FileNotFoundError:
        return None
    return conform(table, cols).cast(pa.schema([LEDGER_SCHEMA.field(c) for c in cols]))


def read_shard(storage: Storage, image_set: ImageSet | str, shard: int) -> pa.Table:
    """One shard's ledger (compacted file plus parts written since, resolved), all columns, by `row`."""
    return read_ledger(storage, image_set, shards=[shard])


def read_set(storage: Storage, image_set: ImageSet | str) -> pa.Table:
    """Every ledger row of a set (all columns), latest row per image, sorted by `row`."""
    return read_ledger(storage, image_set)


def load_ledger(
    storage: Storage,
    image_set: ImageSet | str,
    columns: tuple[str, ...] | None = None,
    *,
    row_filter: int | None = None,
) -> pa.Table:
    """`read_ledger` with a column tuple; `row_filter` keeps one manifest row's latest ledger row only."""
    table = read_ledger(storage, image_set, columns if row_filter is None else None)
    if row_filter is not None:
        table = table.filter(pc.equal(table["row"], row_filter)).select(list(columns or LEDGER_SCHEMA.names))
    return table


def conform(table: pa.Table, columns: list[str]) -> pa.Table:
    """`table` with every one of `columns` present: ledger files written before a column was added to
    LEDGER_SCHEMA (checksum, phash) lack it, and ParquetFile.read silently drops missing columns; they are
    null there, as `pq.read_table(schema=LEDGER_SCHEMA)` (used by `_read_one`) fills them."""
    missing = [c for c in columns if c not in table.column_names]
    for name in missing:
        table = table.append_column(LEDGER_SCHEMA.field(name), pa.nulls(table.num_rows, LEDGER_SCHEMA.field(name).type))
    return table.select(columns) if missing else table
