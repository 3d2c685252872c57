"""The row-level pieces of a fetch shard that need no event loop: its manifest slice, the checks of a
downloaded original against the metadata, and how a thumbnail fallback's row is merged."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace
from typing import Any

import pyarrow.parquet as pq

from oiv4.contracts.errors import OutcomeError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.ledger_row import LedgerRow
from oiv4.contracts.schema import ImageSet, Outcome
from oiv4.io.checksum import checksum
from oiv4.io.damage import damaged
from oiv4.io.storage import Storage
from oiv4.stages.fetch.transform import StoredImage


def md5_b64(data: bytes) -> str:
    """OriginalMD5's form: base64 of the 16-byte MD5 digest."""
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def read_manifest_slice(storage: Storage, image_set: ImageSet | str, start: int, stop: int) -> list[dict[str, Any]]:
    """Manifest rows [start, stop) as dicts, reading only the Parquet row groups that hold them."""
    with storage.open(LAYOUT.plan(image_set)) as fh:
        pf = pq.ParquetFile(fh)
        groups, first, offset = [], None, 0
        for i in range(pf.num_row_groups):
            n = pf.metadata.row_group(i).num_rows
            if offset < stop and offset + n > start:
                groups.append(i)
                first = offset if first is None else first
            offset += n
        if not groups:
            return []
        table = pf.read_row_groups(groups).slice(start - (first or 0), stop - start)
    rows = table.to_pylist()
    if rows and (rows[0]["row"] != start or rows[-1]["row"] != start + len(rows) - 1):
        raise damaged(
            storage, LAYOUT.plan(image_set), f"column `row` does not match file order at rows {start}..{stop}"
        )
    return rows


def check_original(row: dict[str, Any], body: bytes) -> None:
    """Raises OutcomeError unless `body` is the original the row describes (OriginalSize, OriginalMD5)."""
    size = row.get("OriginalSize")
    if size is not None and len(body) != size:
        raise OutcomeError(Outcome.size_mismatch.value, f"got {len(body):,} bytes, OriginalSize says {size:,}")
    md5 = md5_b64(body)
    if md5 != row.get("OriginalMD5"):
        raise OutcomeError(
            Outcome.md5_mismatch.value,
            f"MD5 {md5} differs from OriginalMD5 {row.get('OriginalMD5')} ({len(body):,} bytes)",
        )


def merge_fallback(rec: LedgerRow, trec: LedgerRow) -> LedgerRow:
    """One ledger row for a row whose original was gone (`rec`) and whose thumbnail was tried (`trec`)."""
    gone = f"original gone ({rec.outcome}: {rec.reason})"
    attempts = (rec.attempts or 0) + (trec.attempts or 0)
    nbytes = (rec.bytes_downloaded or 0) + (trec.bytes_downloaded or 0)
    if trec.outcome == Outcome.ok:
        return replace(trec, attempts=attempts, bytes_downloaded=nbytes, reason=f"{gone}; stored the {trec.reason}")
    reason = f"{rec.reason}; thumbnail fallback failed too ({trec.outcome}: {trec.reason})"
    return replace(rec, attempts=attempts, bytes_downloaded=nbytes, reason=reason)


def stored_fields(stored: StoredImage, verified: str, location: str) -> dict[str, Any]:
    """The `LedgerRow` fields of an `ok` row: sizes, where it is, and the checksum of exactly the stored bytes."""
    return {
        "outcome": Outcome.ok.value,
        "reason": f"{verified}; {stored.description}",
        "original_width": stored.original_size[0],
        "original_height": stored.original_size[1],
        "stored_width": stored.stored_size[0],
        "stored_height": stored.stored_size[1],
        "stored_bytes": len(stored.data),
        "location": location,
        "checksum": checksum(stored.data),  # of the bytes handed to the writer: the file, or the archive member
        "phash": stored.phash,
    }
