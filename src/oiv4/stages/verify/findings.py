"""What verify finds: problems, per-set checks (counts, broken rows, bounded examples)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: Problem kinds that mean an `ok` image is not actually usable; they make verify fail.
BROKEN_KINDS: tuple[str, ...] = (
    "missing",
    "size_mismatch",
    "bad_archive",
    "damaged",
    "checksum_mismatch",
    "corrupt_jpeg",
    "undecodable",
    "bad_location",
)
#: Problem kinds that are reported but do not make the data wrong (`unverifiable`: no checksum to compare).
WARNING_KINDS: tuple[str, ...] = ("orphan", "stray_temp", "staged", "unverifiable")
#: Row findings kept as `Problem` examples per set and kind (all are counted; broken rows all kept for requeue).
EXAMPLES_PER_KIND = 1000
#: Ledger columns verify reads.
VERIFY_COLUMNS = ("image_id", "row", "shard", "outcome", "location", "stored_bytes", "checksum")
#: Kind and detail are dictionary-encoded: millions of broken rows share a handful of sentences.
_TEXT = pa.dictionary(pa.int32(), pa.string())
_BROKEN_SCHEMA = pa.schema([("row", pa.int64()), ("shard", pa.int32()), ("kind", _TEXT), ("detail", _TEXT)])


def _repeat(text: str, n: int) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array([text], pa.string()))


@dataclass(frozen=True)
class Problem:
    """One finding. Row-level findings carry the ledger row they contradict (for requeue)."""

    image_set: str
    kind: str
    location: str
    detail: str
    image_id: str | None = None
    row: int | None = None
    shard: int | None = None

    @property
    def broken(self) -> bool:
        return self.kind in BROKEN_KINDS


@dataclass
class SetCheck:
    """What verify found for one set: every finding counted, broken rows kept, examples listed."""

    image_set: str
    planned: int | None  # plan rows (None: no plan)
    ledger_rows: int
    ok_rows: int
    intact: int = 0  # ok rows that passed every check run
    containers: int = 0
    files: int = 0  # loose image files on disk
    #: Examples: every archive-level finding, and up to EXAMPLES_PER_KIND row findings per kind.
    problems: list[Problem] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)  # every finding, by kind
    broken_rows: list[pa.Table] = field(default_factory=list)  # (row, shard, kind, detail) per broken row finding
    requeued: int = 0

    def count(self, kind: str) -> int:
        return self.counts.get(kind, 0)

    @property
    def broken(self) -> list[Problem]:
        """Examples of broken findings (row-level and archive-level); `count` has the totals."""
        return [p for p in self.problems if p.broken]

    @property
    def broken_images(self) -> int:
        rows = self.broken_table()["row"]
        return len(pc.unique(rows)) if len(rows) else 0

    def broken_table(self) -> pa.Table:
        return pa.concat_tables(self.broken_rows) if self.broken_rows else _BROKEN_SCHEMA.empty_table()

    @property
    def pending(self) -> int:
        return max(0, (self.planned or 0) - self.ledger_rows)

    def add(self, kind: str, rows: pa.Table | None, detail: pa.Array | str, location: pa.Array | None = None) -> None:
        """Record `kind` for every row of `rows` (VERIFY_COLUMNS) with its detail; None rows: one set-level finding."""
        if rows is None:
            self.counts[kind] += 1
            self.problems.append(Problem(self.image_set, kind, str(location or ""), str(detail)))
            return
        n = rows.num_rows
        if n == 0:
            return
        self.counts[kind] += n
        details = _repeat(detail, n) if isinstance(detail, str) else pc.dictionary_encode(detail)
        locs = rows["location"] if location is None else location
        if kind in BROKEN_KINDS:
            self.broken_rows.append(
                pa.table([rows["row"], rows["shard"], _repeat(kind, n), details], schema=_BROKEN_SCHEMA)
            )
        room = EXAMPLES_PER_KIND - sum(1 for p in self.problems if p.kind == kind and p.row is not None)
        for i in range(min(n, max(0, room))):
            self.problems.append(
                Problem(
                    self.image_set,
                    kind,
                    locs[i].as_py() or "",
                    details[i].as_py(),
                    rows["image_id"][i].as_py(),
                    rows["row"][i].as_py(),
                    rows["shard"][i].as_py(),
                )
            )
