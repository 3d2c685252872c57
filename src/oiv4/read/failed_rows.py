"""Why an ImageID of a set is not stored, read from as little of the ledger as possible.

At the real mix a set has millions of failed rows whose reasons are mostly unique: loading them (or the set's ok
rows) to explain one failure cost seconds and gigabytes. A finished shard's footer lists its failed ImageIDs, so a
lookup reads the footers once, then only the failed rows of the one shard that lists the ID.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from oiv4.contracts.schema import ImageSet, Outcome, is_valid_image_id
from oiv4.io.ledger import list_ledger, read_failed_rows, read_ledger
from oiv4.io.ledger_summary import read_failed_ids
from oiv4.io.storage import Storage
from oiv4.read.id_index import IdIndex, ShardOfId

#: What explains a failure: the columns read from that shard's failed rows.
EXPLAIN_COLUMNS = ("image_id", "row", "outcome", "reason")


class FailedRows:
    """The failed rows of one set, read shard by shard on demand and kept (not picklable state: rebuild it)."""

    def __init__(self, storage: Storage, image_set: ImageSet) -> None:
        self.storage = storage
        self.image_set = image_set
        self._shard_of: ShardOfId | None = None
        self._rows: dict[int, tuple[pa.Table, IdIndex]] = {}
        self._reasons: dict[int, tuple[np.ndarray, pa.ChunkedArray]] = {}

    def from_footers(self, image_id: str) -> tuple[str, str | None] | None:
        """(outcome, reason) of `image_id` when a finished shard's footer lists it as failed: reads that one
        shard's failed rows only (None when no footer lists it: ask the loaded set)."""
        if not is_valid_image_id(image_id):
            return None
        if self._shard_of is None:
            files = list_ledger(self.storage, self.image_set)
            keys: dict[int, Any] = {}
            for shard, rel in files.compacted.items():
                if shard in files.parts:  # rows written since compaction may supersede the file's: not proof
                    continue
                try:
                    listed = read_failed_ids(self.storage, rel)
                except FileNotFoundError:
                    continue
                if listed is not None:
                    keys[shard] = listed
            self._shard_of = ShardOfId(keys)
        shard = self._shard_of.find(image_id)
        if shard is None:
            return None
        if shard not in self._rows:
            rows = read_failed_rows(self.storage, self.image_set, shard, EXPLAIN_COLUMNS)
            if rows is None:
                return None
            self._rows[shard] = (rows, IdIndex(rows["image_id"]))
        rows, index = self._rows[shard]
        pos = index.find(image_id)
        if pos is None:
            return None
        return rows["outcome"][pos].as_py(), rows["reason"][pos].as_py()

    def reason_at(self, shard: int, row: int) -> str | None:
        """The reason of failed row `row`, from its shard's failed rows (read once per shard)."""
        if shard not in self._reasons:
            t = read_ledger(self.storage, self.image_set, ["row", "outcome", "reason"], shards=[shard])
            t = t.filter(pc.not_equal(t["outcome"], Outcome.ok.value))  # read_ledger sorts by row
            self._reasons[shard] = (np.asarray(t["row"].to_numpy(), dtype=np.int64), t["reason"])
        rows, reasons = self._reasons[shard]
        i = int(np.searchsorted(rows, row))
        return reasons[i].as_py() if i < len(rows) and rows[i] == row else None
