"""A set as read without the images that duplicate another set's: `ds["train"].without_duplicates_of("targets")`.

Held out means held out: a model trained on `train` and scored on `targets` / `validation` must never see a copy of
a scored image. The filter drops every image `oiv4 dedup` paired with an image of the named sets (exact or within
the threshold the dedup ran at), so `len()`, `ids()`, iteration, `[id]` and the PyTorch adapter never yield one, and
`[id]` of a dropped image says which image it duplicates. `.excluded` lists the drops; `.manifest` gains a
`dropped` column with the same reason. It is one filter of `oiv4.read.filters`, so it composes with others.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from oiv4.contracts.errors import SettingError
from oiv4.contracts.schema import ImageSet
from oiv4.io.storage import Storage
from oiv4.stages.dedup import exclusions, read_pairs


def drop_reason(row: dict[str, Any]) -> str:
    """`dropped: duplicate of <id> in <set> (distance <d>, <kind>)` for one `excluded` row."""
    return f"dropped: duplicate of {row['duplicate_of']} in {row['duplicate_set']} ({_how(row)})"


def _how(row: dict[str, Any]) -> str:
    return f"distance {row['distance']}, {row['kind']}"


class DuplicatesOf:
    """Drops the images of set `name` that duplicate an image of `against` (see the module docstring)."""

    def __init__(self, storage: Storage, name: str, against: tuple[str, ...]) -> None:
        names = []
        for other in against:
            try:
                names.append(ImageSet(other).value)
            except ValueError:
                known = ", ".join(s.value for s in ImageSet)
                raise SettingError(f"no set {other!r} to leave out duplicates of (sets: {known})") from None
        if not names or name in names:
            raise SettingError(f"name the held-out sets {name} must not duplicate, other than {name} itself")
        self.against = tuple(dict.fromkeys(names))
        try:
            pairs = read_pairs(storage)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no duplicate pairs under {storage.root} (dedup/pairs.parquet): "
                f"run `oiv4 dedup --root {storage.root}` first"
            ) from None
        #: One row per (dropped image, image it duplicates), closest first: image_id, duplicate_of, duplicate_set,
        #: distance, kind.
        self.excluded: pa.Table = exclusions(pairs, name, self.against)
        # Closest duplicate per dropped image (the table is sorted by image_id, then distance).
        self._dropped: dict[str, dict[str, Any]] = {}
        for row in self.excluded.to_pylist():
            self._dropped.setdefault(row["image_id"], row)

    def describe(self) -> str:
        return f"without duplicates of {', '.join(self.against)}"

    def why_dropped(self, image_id: str) -> str | None:
        row = self._dropped.get(image_id)
        return None if row is None else drop_reason(row)
