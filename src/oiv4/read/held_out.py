"""A set as read without the images that duplicate another set's: `ds["train"].without_duplicates_of("targets")`.

Held out means held out: a model trained on `train` and scored on `targets` / `validation` must never see a copy of
a scored image. The view drops every image `oiv4 dedup` paired with an image of the named sets (exact or within the
threshold the dedup ran at), so `len()`, `ids()`, iteration, `[id]` and the PyTorch adapter never yield one, and
`[id]` of a dropped image says which image it duplicates. `.excluded` lists the drops; `.manifest` gains a
`dropped` column with the same reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from oiv4.contracts.errors import SettingError
from oiv4.contracts.schema import ImageSet
from oiv4.read.set_reader import SetReader
from oiv4.stages.dedup import exclusions, read_pairs

if TYPE_CHECKING:
    import duckdb


def drop_reason(row: dict[str, Any]) -> str:
    """`dropped: duplicate of <id> in <set> (distance <d>, <kind>)` for one `excluded` row."""
    return f"dropped: duplicate of {row['duplicate_of']} in {row['duplicate_set']} ({_how(row)})"


def _how(row: dict[str, Any]) -> str:
    return f"distance {row['distance']}, {row['kind']}"


class WithoutDuplicates(SetReader):
    """`base`'s images minus those duplicating an image of `against` (see the module docstring)."""

    def __init__(self, base: SetReader, against: tuple[str, ...]) -> None:
        super().__init__(base.storage, base.image_set, base.blobs, eager_manifest_rows=base.eager_manifest_rows)
        names = []
        for name in against:
            try:
                names.append(ImageSet(name).value)
            except ValueError:
                known = ", ".join(s.value for s in ImageSet)
                raise SettingError(f"no set {name!r} to leave out duplicates of (sets: {known})") from None
        if not names or self.name in names:
            raise SettingError(f"name the held-out sets {self.name} must not duplicate, other than {self.name} itself")
        self.against = tuple(dict.fromkeys(names))
        try:
            pairs = read_pairs(self.storage)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no duplicate pairs under {self.storage.root} (dedup/pairs.parquet): "
                f"run `oiv4 dedup --root {self.storage.root}` first"
            ) from None
        #: One row per (dropped image, image it duplicates), closest first: image_id, duplicate_of, duplicate_set,
        #: distance, kind.
        self.excluded: pa.Table = exclusions(pairs, self.name, self.against)
        # Closest duplicate per dropped image (the table is sorted by image_id, then distance).
        self._dropped: dict[str, dict[str, Any]] = {}
        for row in self.excluded.to_pylist():
            self._dropped.setdefault(row["image_id"], row)

    def __repr__(self) -> str:
        return (
            f"<oiv4 set {self.name!r} without duplicates of {', '.join(self.against)}: "
            f"{len(self)} images ({len(self._dropped)} dropped)>"
        )

    @property
    def dropped_ids(self) -> list[str]:
        """ImageIDs left out, sorted."""
        return sorted(self._dropped)

    def _load(self) -> pa.Table:
        if self._ok is None:
            full = super()._load()
            drop = pa.array(list(self._dropped), pa.string())
            self._ok = full.filter(pc.invert(pc.is_in(full["image_id"], value_set=drop)))
        return self._ok

    def _why_missing(self, image_id: str) -> str:
        row = self._dropped.get(image_id)
        if row is not None:
            return f"{image_id} is left out of {self.name}: {drop_reason(row)}"
        return super()._why_missing(image_id)

    def _reasons(self, key: str) -> pa.Table:
        ids = list(self._dropped)
        return pa.table(
            {key: pa.array(ids, pa.string()), "dropped": pa.array([drop_reason(self._dropped[i]) for i in ids])}
        )

    @property
    def manifest(self) -> pa.Table | duckdb.DuckDBPyRelation:
        """The set's manifest plus `dropped`: the reason a stored row is left out of this view, null otherwise."""
        base = super().manifest
        if isinstance(base, pa.Table):
            key = _id_column(base.column_names)
            joined = base.join(self._reasons(key), key, join_type="left outer")
            return joined.sort_by("row") if "row" in joined.column_names else joined
        return self.manifest_relation()

    def manifest_relation(self, con: duckdb.DuckDBPyConnection | None = None) -> duckdb.DuckDBPyRelation:
        import duckdb

        con = con if con is not None else duckdb.default_connection()
        base = super().manifest_relation(con)
        key = _id_column(base.columns)
        reasons = con.from_arrow(self._reasons(key))
        return base.join(reasons, key, how="left").order('"row"')


def _id_column(columns: list[str]) -> str:
    """The plan's `ImageID`, or the ledger's `image_id` for a set without a plan."""
    return "ImageID" if "ImageID" in columns else "image_id"
