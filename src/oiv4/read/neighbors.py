"""Ground truth written by `oiv4 neighbors`, as Arrow or DuckDB."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from oiv4.contracts.errors import InputError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.vectors import DEFAULT_MODEL
from oiv4.io.storage import Storage

if TYPE_CHECKING:
    import duckdb


def neighbor_files(storage: Storage, model: str) -> list[str]:
    """Finished ground-truth files of `model` (relative paths), sorted."""
    return sorted(storage.glob(LAYOUT.neighbors_files_glob(model)))


def read_neighbors(storage: Storage, model: str = DEFAULT_MODEL, name: str | None = None) -> pa.Table:
    """One ground-truth table (`name` as in the file name, e.g. "validation-targets"); the only one if None."""
    files = neighbor_files(storage, model)
    if name is not None:
        files = [f for f in files if f.rsplit("/", 1)[-1] == f"{name}.parquet"]
    if len(files) != 1:
        have = ", ".join(f.rsplit("/", 1)[-1].removesuffix(".parquet") for f in neighbor_files(storage, model))
        raise InputError(
            f"no single {model} ground truth{f' named {name!r}' if name else ''} under {storage.root} "
            f"(present: {have or 'none'}); run `oiv4 neighbors --root {storage.root} ...`"
        )
    with storage.open(files[0]) as fh:
        return pq.read_table(fh)


def neighbors_relation(
    storage: Storage, model: str = DEFAULT_MODEL, name: str | None = None
) -> duckdb.DuckDBPyRelation:
    """The same table as a DuckDB relation."""
    import duckdb

    table = read_neighbors(storage, model, name)
    return duckdb.arrow(table)
