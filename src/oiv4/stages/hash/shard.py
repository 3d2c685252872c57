"""One hash shard: the `ok` rows of one ledger shard that lack `phash` or `checksum` -> the same rows again, with
them, recorded again as a later part. The row keeps its `started_at` (the conversion's fact): at equal
`started_at` the ledger's rule lets the later-written row win. Only the columns `REWRITE_OWNERS["hash"]` names
change; `hashed_at` and `hash_s` record this stage's own timing.

Stored images are read where the ledger says they are (a file, a zip member, a webdataset member) and decoded
at reduced scale (`fingerprint.phash_stored`: DCT-domain draft to >= 128 px), on `threads` threads (Pillow
releases the GIL). Rows are recorded in parts of `batch_rows`, so a kill loses at most one batch, and a re-run
skips what is hashed. A row whose file cannot be read or decoded keeps its ledger row untouched and is
counted under `unreadable` (verify owns the verdict on a broken stored file; see the report).
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from oiv4.contracts.ledger_row import LedgerRow
from oiv4.contracts.schema import ImageSet, Outcome
from oiv4.io.checksum import checksum
from oiv4.io.containers import BlobReader
from oiv4.io.fingerprint import phash_stored
from oiv4.io.ledger import read_shard
from oiv4.io.ledger_write import LedgerBuffer, now_utc
from oiv4.io.locations import parse_location
from oiv4.stages.base import ShardResult, ShardTask
from oiv4.stages.hash.settings import HashSettings


@dataclass
class HashCounts:
    """What one hash shard did, beside the ledger outcomes (which hashing leaves as they are)."""

    hashed: int = 0
    unreadable: int = 0  # ok rows whose stored file could not be read or decoded (left for verify)
    reasons: Counter[str] = field(default_factory=Counter)  # unreadable rows by why ("cannot read", ...)


def unhashed(ledger: pa.Table) -> pa.Table:
    """The `ok` rows of a ledger lacking a phash or a checksum."""
    ok = pc.equal(ledger["outcome"], Outcome.ok.value)
    missing = pc.or_(pc.is_null(ledger["phash"]), pc.is_null(ledger["checksum"]))
    return ledger.filter(pc.and_(ok, missing))


def _hash_one(reader: BlobReader, row: LedgerRow) -> LedgerRow | str:
    """The row with its phash and checksum, or why its stored bytes cannot be hashed."""
    hashed_at, t0 = now_utc(), time.perf_counter()
    try:
        data = reader.read(parse_location(row.location))  # type: ignore[arg-type]
    except (OSError, ValueError, KeyError) as exc:
        return f"cannot read {row.location}: {type(exc).__name__}: {exc}"
    try:
        ph = int(phash_stored(data))
    except Exception as exc:  # a stored file that fails to decode is verify's to report, not ours to crash on
        return f"cannot decode {row.location}: {type(exc).__name__}: {exc}"
    # `rewritten` refuses any column REWRITE_OWNERS["hash"] does not give this stage: nothing else is touched.
    return row.rewritten(
        "hash",
        phash=ph,
        checksum=row.checksum or checksum(data),
        hashed_at=hashed_at,
        hash_s=round(time.perf_counter() - t0, 6),
    )


def run_hash_shard(task: ShardTask[HashSettings]) -> ShardResult[HashCounts]:
    """Hash every unhashed `ok` row of ledger shard `task.shard`; safe to re-run (hashed rows are skipped)."""
    settings, storage = task.settings, task.storage
    image_set = ImageSet(task.image_set)
    counts = HashCounts()
    result = ShardResult(image_set, task.shard, detail=counts)
    ledger = read_shard(storage, image_set, task.shard)
    todo = [LedgerRow.from_mapping(r) for r in unhashed(ledger).to_pylist()]
    result.skipped = ledger.num_rows - len(todo)
    reader = BlobReader(storage)
    buffer = LedgerBuffer(storage, image_set, task.shard, flush_rows=max(1, settings.batch_rows))
    try:
        with ThreadPoolExecutor(max(1, settings.threads), thread_name_prefix="oiv4-hash") as pool:
            for start in range(0, len(todo), settings.batch_rows):
                batch = list(pool.map(lambda r: _hash_one(reader, r), todo[start : start + settings.batch_rows]))
                for r in batch:
                    if isinstance(r, str):
                        counts.reasons[r.split(":", 1)[0]] += 1
                    else:
                        buffer.add(r)
                hashed = len(buffer)
                buffer.flush()  # one part per batch: a kill loses at most one batch
                counts.hashed += hashed
                counts.unreadable += len(batch) - hashed
    finally:
        reader.close()
    if todo:
        buffer.close()  # compact the parts into the shard file
    return result
