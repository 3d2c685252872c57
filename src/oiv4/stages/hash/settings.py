"""`HashSettings`: how `oiv4 hash` works through a set. Hashing stores no image bytes, so these settings are
not `OutputSettings` and nothing is recorded per shard for them."""

from __future__ import annotations

from dataclasses import dataclass

from oiv4.contracts.limits import at_least
from oiv4.contracts.setting import setting


@dataclass(frozen=True)
class HashSettings:
    """How `oiv4 hash` works through a set."""

    threads: int = setting(2, help="Decode threads per worker (Pillow releases the GIL).", flag="--threads")
    batch_rows: int = setting(
        2000, help="Hashed rows per ledger part: a kill loses at most this many.", flag="--batch-rows"
    )

    def __post_init__(self) -> None:
        at_least(self, 1, "threads", "batch_rows")
