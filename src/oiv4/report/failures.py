"""The report's failures: kinds (outcome + reason with URLs/numbers taken out, `oiv4.io.reason_kind`, as stored
in each ledger row when it was written), the first failed images by ImageID, and a CSV of every failure.

The CSV is inlined as a data: URI while it is small (the page must stay a few MB at full scale); a bigger one
is written beside the page as `report/failures_<set>.csv` (through `Storage`, atomically) and linked.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

import pyarrow.csv as pacsv

from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import Outcome
from oiv4.io.reason_kind import stored_or_computed_sql
from oiv4.io.sql import arrow_batches
from oiv4.io.storage import Storage

#: Failures listed on the page per set (the CSV has all of them).
SHOWN = 50
#: Largest CSV inlined as a data: URI (bytes); four sets of this stay well under the page's 2 MB budget.
INLINE_MAX_BYTES = 256_000
CSV_QUERY = f"""SELECT image_id AS "ImageID", outcome, reason, url FROM l
                WHERE outcome <> '{Outcome.ok.value}' ORDER BY "row\""""


@dataclass
class FailureGroup:
    outcome: str
    reason: str  # the kind: URLs and numbers taken out
    count: int
    examples: list[str]  # URLs
    example_reason: str = ""  # the first full reason of the kind


@dataclass
class FailedImage:
    image_id: str
    outcome: str
    reason: str
    url: str


def failure_kinds(con: Any, top: int = 12) -> list[FailureGroup]:
    """The `top` most frequent (outcome, kind) groups: each Flickr failure kind is one row."""
    rows = con.execute(
        f"""SELECT outcome, {stored_or_computed_sql()} k, count(*) n,
                   arg_min(url, "row", 3) FILTER (WHERE url IS NOT NULL) ex,
                   arg_min(coalesce(reason, ''), "row")
            FROM l WHERE outcome <> '{Outcome.ok.value}' GROUP BY 1, 2 ORDER BY n DESC, 1, 2 LIMIT {top}"""
    ).fetchall()
    return [FailureGroup(o, k, int(n), list(ex or []), r) for o, k, n, ex, r in rows]


def failed_images(con: Any, shown: int = SHOWN) -> list[FailedImage]:
    """The first `shown` failed images in plan order."""
    rows = con.execute(f"{CSV_QUERY} LIMIT {shown}").fetchall()
    return [FailedImage(i or "", o, r or "", u or "") for i, o, r, u in rows]


def failures_csv_link(con: Any, storage: Storage, image_set: str, page_dir: str | None) -> str:
    """A link to every failure of the set as CSV: a data: URI, or the sibling file it wrote ('' for none).

    One pass over the failures: batches are kept while the CSV is small; once it outgrows an inline link they
    go to the sibling file, and the rest streams after them. `page_dir`: where the page goes, relative to
    `storage` (None: elsewhere, so the link is absolute)."""
    reader = arrow_batches(con.sql(CSV_QUERY), 100_000)
    buf = io.BytesIO()
    writer: pacsv.CSVWriter | None = None
    held = []
    try:
        for batch in reader:
            writer = writer or pacsv.CSVWriter(buf, batch.schema)
            writer.write_batch(batch)
            held.append(batch)
            if buf.tell() > INLINE_MAX_BYTES:
                break
        else:
            if writer is None:
                return ""
            writer.close()
            return "data:text/csv;base64," + base64.b64encode(buf.getvalue()).decode()
        rel = f"{LAYOUT.report_dir()}/failures_{image_set}.csv"
        with storage.open_atomic(rel) as fh, pacsv.CSVWriter(fh, reader.schema) as w:
            for batch in held:
                w.write_batch(batch)
            for batch in reader:
                w.write_batch(batch)
    finally:
        reader.close()  # a result left open blocks the connection's next query
    return f"failures_{image_set}.csv" if page_dir == LAYOUT.report_dir() else storage.path(rel)
