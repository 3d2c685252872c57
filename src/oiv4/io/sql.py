"""A DuckDB connection over a built root: `plan_<set>` and `ledger_<set>` views, right mid-run and after requeue.

    con = oiv4.io.sql.connect(Storage("/data/open_images"))
    con.sql("SELECT outcome, count(*) FROM ledger_train GROUP BY 1").show()

`ledger_<set>` is the resolved ledger (latest row per (set, row)): compacted shard files are scanned in
place, rows still in `.parts/` (a running fetch, `verify --requeue`) are resolved by `oiv4.io.ledger`.
Querying `R/ledger/train/*.parquet` directly misses the parts and would count a requeued image twice.
The views are a snapshot of the ledger files at `connect` time; connect again to see newer rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.io.ledger import ledger_relation
from oiv4.io.storage import Storage

if TYPE_CHECKING:
    import duckdb


def attach_filesystem(con: duckdb.DuckDBPyConnection, storage: Storage) -> None:
    """Let DuckDB read `storage`'s object-store paths through its fsspec filesystem (local roots need nothing)."""
    if not storage.local:
        con.register_filesystem(storage.fs)


def connect(storage: Storage | str, sets: list[ImageSet | str] | None = None) -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB connection with views `plan_<set>` and `ledger_<set>` for every set present."""
    import duckdb

    storage = storage if isinstance(storage, Storage) else Storage(storage)
    con = duckdb.connect()
    attach_filesystem(con, storage)
    for s in sets or list(ImageSet):
        s = ImageSet(s)
        if storage.exists(LAYOUT.plan(s)):
            path = storage.path(LAYOUT.plan(s)).replace("'", "''")
            con.execute(f"CREATE VIEW plan_{s.value} AS SELECT * FROM read_parquet('{path}')")
        if storage.glob(f"{LAYOUT.ledger_dir(s)}/shard-*"):
            ledger_relation(con, storage, s).create_view(f"ledger_{s.value}")
    return con
