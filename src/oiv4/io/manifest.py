"""Reading a set's plan manifest (`plan/<set>.parquet`)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.io.damage import read_json_object, reading
from oiv4.io.storage import Storage


def read_plan(storage: Storage, image_set: ImageSet | str) -> pa.Table | None:
    """The set's plan manifest (12 metadata columns + `row`), or None when it was never planned."""
    rel = LAYOUT.plan(image_set)
    if not storage.exists(rel):
        return None
    with reading(storage, rel), storage.open(rel) as fh:
        return pq.read_table(fh)


def plan_rows(storage: Storage, image_set: ImageSet | str) -> int | None:
    """How many rows the set's plan has, from the Parquet footer (no data read); None when never planned."""
    rel = LAYOUT.plan(image_set)
    if not storage.exists(rel):
        return None
    with reading(storage, rel), storage.open(rel) as fh:
        return pq.ParquetFile(fh).metadata.num_rows


def read_manifest(storage: Storage, image_set: ImageSet | str, columns: list[str] | None = None) -> pa.Table:
    """A set's manifest (all rows, file order)."""
    rel = LAYOUT.plan(image_set)
    with reading(storage, rel), storage.open(rel) as fh:
        return pq.read_table(fh, columns=columns)


def read_plan_summary(storage: Storage) -> dict[str, Any] | None:
    """`plan/summary.json` as written by `oiv4 plan`, or None when there is no plan yet."""
    rel = LAYOUT.plan_summary()
    if not storage.exists(rel):
        return None
    return read_json_object(storage, rel)
