"""One ledger row as a typed, frozen record: the only way a stage writes a row.

Its fields are `LEDGER_SCHEMA`'s columns, in order, with the Python type of each column (`X | None` where the
column is nullable); `tests/contracts/test_ledger_row.py` holds the two to each other. A misspelled or unknown field is a
`TypeError` where the row is built, instead of a silently null column in the ledger.

A stage that re-records an existing row (hash, verify --requeue) goes through `rewritten`, which changes only the
columns `REWRITE_OWNERS` gives that stage and copies the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

from oiv4.contracts.schema import REWRITE_OWNERS


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One image's outcome in one set: `LEDGER_SCHEMA`'s columns, typed. See `contracts.schema` for each one."""

    image_id: str
    set: str
    shard: int
    row: int
    outcome: str
    reason: str | None = None
    attempts: int | None = None
    source: str | None = None
    url: str | None = None
    bytes_downloaded: int | None = None
    original_width: int | None = None
    original_height: int | None = None
    stored_width: int | None = None
    stored_height: int | None = None
    stored_bytes: int | None = None
    location: str | None = None
    started_at: datetime | None = None
    elapsed_s: float | None = None
    checksum: str | None = None
    phash: int | None = None
    hashed_at: datetime | None = None
    hash_s: float | None = None
    reason_kind: str | None = None

    def __post_init__(self) -> None:
        # The ledger and every count keyed by outcome hold plain strings, never `Outcome` members.
        if isinstance(self.outcome, str) and type(self.outcome) is not str:
            object.__setattr__(self, "outcome", str(self.outcome))

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> LedgerRow:
        """The row a mapping of column -> value describes (e.g. one of a ledger table's `to_pylist()`).

        Raises TypeError naming any key that is not a ledger column, or a required column that is missing.
        """
        unknown = sorted(set(row) - _NAMES)
        if unknown:
            raise TypeError(f"not ledger columns: {', '.join(unknown)}")
        return cls(**row)

    def rewritten(self, stage: str, **changes: Any) -> LedgerRow:
        """This row re-recorded by `stage` (a key of `REWRITE_OWNERS`): `changes` may name only its columns."""
        foreign = sorted(set(changes) - REWRITE_OWNERS[stage])
        if foreign:
            raise TypeError(f"{stage} may not rewrite ledger columns {', '.join(foreign)}")
        return replace(self, **changes)


#: The column names, in `LEDGER_SCHEMA` order.
LEDGER_ROW_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(LedgerRow))
_NAMES = frozenset(LEDGER_ROW_FIELDS)
