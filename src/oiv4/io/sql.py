"""A DuckDB connection over a built root: `plan_<set>` and `ledger_<set>` views, right mid-run and after requeue.

    con = oiv4.io.sql.connect(Storage("/data/open_images"))
    con.sql("SELECT outcome, count(*) FROM ledger_train GROUP BY 1").show()

`ledger_<set>` is the resolved ledger (latest row per (set, row)): compacted shard files are scanned in
place, rows still in `.parts/` (a running fetch, `verify --requeue`) are resolved by `oiv4.io.ledger`.
Querying `R/ledger/train/*.parquet` directly misses the parts and would count a requeued image twice.
The views are a snapshot of the ledger files at `connect` time; connect again to see newer rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import LEDGER_SCHEMA, ImageSet
from oiv4.io.damage import damaged, describe, is_read_error, parquet_problem
from oiv4.io.ledger import (
    LedgerFiles,
    iter_ledger,
    ledger_files_relation,
    ledger_started,
    list_ledger,
)
from oiv4.io.ledger_folder import folder_files, read_folder_files
from oiv4.io.storage import Storage

if TYPE_CHECKING:
    import duckdb


def attach_filesystem(con: duckdb.DuckDBPyConnection, storage: Storage) -> None:
    """Let DuckDB read `storage`'s object-store paths through its fsspec filesystem (local roots need nothing)."""
    storage.attach_to(con)


def connect(storage: Storage | str, sets: list[ImageSet | str] | None = None) -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB connection with views `plan_<set>` and `ledger_<set>` for every set present, and
    `features_<model>_<set>` (dashes as underscores) for every features ledger."""
    import duckdb

    storage = storage if isinstance(storage, Storage) else Storage(storage)
    con = duckdb.connect()
    attach_filesystem(con, storage)
    for s in sets or list(ImageSet):
        s = ImageSet(s)
        if storage.exists(LAYOUT.plan(s)):
            plan_relation(con, storage, s).create_view(f"plan_{s.value}")
        if ledger_started(storage, s):
            ledger_relation(con, storage, s).create_view(f"ledger_{s.value}")
        for model, rels in features_ledger_files(storage, s).items():
            features_relation(con, storage, rels).create_view(f"features_{model.replace('-', '_')}_{s.value}")
    return con


def plan_relation(
    con: duckdb.DuckDBPyConnection, storage: Storage, image_set: ImageSet | str
) -> duckdb.DuckDBPyRelation:
    """The set's plan manifest as a lazy DuckDB relation on `con`; a damaged plan file is named here."""
    rel = LAYOUT.plan(image_set)
    path = storage.path(rel).replace("'", "''")
    try:  # binding reads the footer: a damaged plan fails here, not in the caller's query
        return con.sql(f"SELECT * FROM read_parquet('{path}')")
    except Exception as exc:
        if not is_read_error(exc):
            raise
        raise damaged(storage, rel, parquet_problem(storage, rel) or describe(exc)) from exc


def features_ledger_files(storage: Storage, image_set: ImageSet | str) -> dict[str, list[str]]:
    """The features ledger files of a set (compacted shards and parts of running ones), by model."""
    found: dict[str, list[str]] = {}
    for ledger_dir in storage.glob(LAYOUT.features_ledger_dirs_glob(image_set)):
        if rels := folder_files(storage, ledger_dir):
            found[LAYOUT.features_model(ledger_dir)] = rels
    return found


def features_relation(con: duckdb.DuckDBPyConnection, storage: Storage, rels: Sequence[str]) -> duckdb.DuckDBPyRelation:
    """A features ledger (`oiv4 features`: one row per stored image, `ok` = has a vector) as a DuckDB relation,
    resolved by the ledger's one rule (`latest_per_row`: a part and its shard's compacted file may overlap while
    a shard finishes). Read in Arrow: one row per image per model, so a set's is at most a few hundred MB."""
    table = read_folder_files(storage, rels)
    if table is None:
        raise FileNotFoundError(f"no features ledger file left of {', '.join(rels)}")
    return con.from_arrow(table)


def ledger_relation(
    con: duckdb.DuckDBPyConnection,
    storage: Storage,
    image_set: ImageSet | str,
    columns: Sequence[str] | None = None,
    *,
    files: LedgerFiles | None = None,
) -> duckdb.DuckDBPyRelation:
    """The set's resolved ledger as a lazy DuckDB relation on `con`.

    Shards without parts are scanned straight from their compacted files (one row per (set, row) already);
    only shards with parts are resolved here, in Arrow, and joined in as a small table. Register the
    storage's filesystem on `con` first for object stores (`oiv4.io.sql.connect` does). `files`: a listing
    to use instead of listing the set now (e.g. only some of its shards, see `only_shards`).
    """
    cols = list(columns or LEDGER_SCHEMA.names)
    files = files if files is not None else list_ledger(storage, image_set)
    clean = [files.compacted[s] for s in files.shards if s not in files.parts and s in files.compacted]
    resolving = [s for s in files.shards if s in files.parts]
    pending = (
        list(iter_ledger(storage, image_set, cols, shards=resolving, files=only_shards(files, resolving)))
        if resolving
        else []
    )
    names = ", ".join(f'"{c}"' for c in cols)
    rels = []
    if clean:
        rels.append(ledger_files_relation(con, storage, clean, cols))
    if pending or not rels:
        table = pa.concat_tables(pending) if pending else LEDGER_SCHEMA.empty_table().select(cols)
        rels.append(con.from_arrow(table).select(names))
    out = rels[0]
    for r in rels[1:]:
        out = out.union(r)
    return out


def only_shards(files: LedgerFiles, shards: Sequence[int]) -> LedgerFiles:
    """The part of a ledger listing that belongs to `shards`."""
    keep = set(shards)
    return LedgerFiles(
        files.image_set,
        {s: r for s, r in files.compacted.items() if s in keep},
        {s: r for s, r in files.parts.items() if s in keep},
    )


def arrow_batches(result: Any, rows: int) -> Any:
    """A relation as a stream of Arrow record batches of about `rows` rows, on every supported duckdb: 1.2 (our
    lower bound) only has `fetch_arrow_reader`, which later versions deprecate for `to_arrow_reader`."""
    return result.to_arrow_reader(rows) if hasattr(result, "to_arrow_reader") else result.fetch_arrow_reader(rows)
