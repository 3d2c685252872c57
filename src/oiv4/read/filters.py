"""Views of a set as a chain of filters over its stored images, webdataset-style: each filter is a small object
that drops images and says why, and a view is the set plus the filters applied in turn.

`SetReader.filtered(f)` returns a new view with `f` appended, so filters compose
(`ds["train"].without_duplicates_of("targets").without_duplicates_of("validation")` leaves out both), and no
filter needs to know how the reader loads, indexes or joins the manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc


class ImageFilter(Protocol):
    """Drops some of a set's stored images and says why."""

    #: One row per image left out (at least an `image_id` column), for `.excluded`.
    excluded: pa.Table

    def describe(self) -> str:
        """What the filter leaves out, for the view's repr (e.g. "without duplicates of targets")."""
        ...

    def why_dropped(self, image_id: str) -> str | None:
        """Why `image_id` is left out ("dropped: ..."), or None if this filter keeps it."""
        ...


def dropped_ids(filters: Sequence[ImageFilter]) -> set[str]:
    """Every ImageID that one of `filters` leaves out."""
    return {i for f in filters for i in f.excluded["image_id"].to_pylist()}


def keep(table: pa.Table, filters: Sequence[ImageFilter]) -> pa.Table:
    """The rows of `table` (an `image_id` column) that every filter keeps, in their order."""
    if not filters:
        return table
    drop = pa.array(sorted(dropped_ids(filters)), pa.string())
    return table.filter(pc.invert(pc.is_in(table["image_id"], value_set=drop)))


def why_dropped(image_id: str, filters: Sequence[ImageFilter]) -> str | None:
    """The first filter's reason for leaving `image_id` out, or None when all keep it."""
    for f in filters:
        reason = f.why_dropped(image_id)
        if reason is not None:
            return reason
    return None


def id_column(columns: list[str]) -> str:
    """The plan's `ImageID`, or the ledger's `image_id` for a set without a plan."""
    return "ImageID" if "ImageID" in columns else "image_id"


def reasons(key: str, filters: Sequence[ImageFilter]) -> pa.Table:
    """(`key`, `dropped`): one row per left-out image with the first filter's reason (the manifest's column)."""
    ids = sorted(dropped_ids(filters))
    return pa.table({key: pa.array(ids, pa.string()), "dropped": pa.array([why_dropped(i, filters) for i in ids])})


def excluded(filters: Sequence[ImageFilter]) -> pa.Table:
    """Every filter's `excluded` rows, in filter order."""
    if not filters:
        return pa.table({"image_id": pa.array([], pa.string())})
    return pa.concat_tables([f.excluded for f in filters], promote_options="permissive")
