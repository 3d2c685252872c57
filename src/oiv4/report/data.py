"""Everything the report shows, computed from the plan and ledger with DuckDB (never a Python loop over rows)."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa

from oiv4.contracts.errors import CorruptImageError, ReaderError
from oiv4.contracts.schema import ImageSet
from oiv4.io.image_decode import decode
from oiv4.io.manifest import plan_rows
from oiv4.io.sql import attach_filesystem, ledger_relation
from oiv4.io.storage import Storage
from oiv4.read.set_reader import SetReader
from oiv4.report.failures import FailedImage, FailureGroup, failed_images, failure_kinds, failures_csv_link
from oiv4.report.timing import Bucket, HostRate, attempts_counts, host_rates, latency_values, throughput

#: Ledger columns the report reads (not `location`/`image_id` of every row: memory on 7M-row sets).
REPORT_COLUMNS = (
    "row",
    "image_id",
    "attempts",
    "outcome",
    "reason",
    "reason_kind",
    "source",
    "url",
    "bytes_downloaded",
    "stored_width",
    "stored_height",
    "stored_bytes",
    "started_at",
    "elapsed_s",
)
#: Ledger columns for the layout and the thumbnails' locations (read by two queries, not held in memory).
LOCATION_COLUMNS = ("row", "image_id", "shard", "outcome", "location")
#: Thumbnails per set that also carry a larger copy (shown on click); bounds the page's size.
LARGE_PER_SET = 8
LARGE_SIDE = 480


@dataclass
class Bin:
    lo: float
    hi: float
    count: int


@dataclass
class Thumb:
    image_id: str
    data_uri: str
    width: int  # stored image size
    height: int
    large_uri: str = ""  # a bigger copy shown on click ("" for most: the page stays small)
    ledger: dict[str, object] = field(default_factory=dict)  # the image's ledger row


@dataclass
class SetStats:
    """One set's figures for the report."""

    name: str
    planned: int | None
    finished: int = 0
    ok: int = 0
    layout: str = "empty"
    outcomes: list[tuple[str, int]] = field(default_factory=list)  # most frequent first
    sources: list[tuple[str, int]] = field(default_factory=list)
    stored_bytes: int = 0
    downloaded_bytes: int = 0
    bucket_s: float = 0
    buckets: list[Bucket] = field(default_factory=list)
    busy_s: float = 0.0  # seconds with at least one image finishing (resumed runs have idle gaps)
    size_bins: list[Bin] = field(default_factory=list)  # stored bytes, log-spaced
    side_bins: list[Bin] = field(default_factory=list)  # longest stored side, px
    aspect_bins: list[Bin] = field(default_factory=list)  # width / height, log-spaced
    dims_note: str = ""
    failures: list[FailureGroup] = field(default_factory=list)
    failed_images: list[FailedImage] = field(default_factory=list)
    failures_csv: str = ""  # a data: URI or the path of the CSV of every failure
    latency_bins: list[Bin] = field(default_factory=list)  # elapsed_s per image, log-spaced
    attempts: list[tuple[int, int]] = field(default_factory=list)
    hosts: list[HostRate] = field(default_factory=list)
    thumbs: list[Thumb] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return self.finished - self.ok

    @property
    def pending(self) -> int:
        return max(0, (self.planned or 0) - self.finished)

    @property
    def rate(self) -> float:
        """Images finished per busy second."""
        return self.finished / self.busy_s if self.busy_s else 0.0


def collect(
    storage: Storage, image_set: ImageSet, reader: SetReader, *, samples: int = 24, page_dir: str | None = "report"
) -> SetStats | None:
    """The set's figures; None when the root holds nothing of this set. A set with many failures gets its
    failure CSV written beside the page (`page_dir`, relative to `storage`; None when the page goes elsewhere)."""
    planned = plan_rows(storage, image_set)
    import duckdb

    con = duckdb.connect()
    if reader.has_ledger:
        attach_filesystem(con, storage)
        # A view: each query below streams the shard files' few columns (a 6M-row set held in memory,
        # even in DuckDB's compressed columns, is ~1 GiB).
        ledger_relation(con, storage, image_set, REPORT_COLUMNS).create_view("l")
        ledger_relation(con, storage, image_set, LOCATION_COLUMNS).create_view("ok_locations")
    elif len(reader):
        con.from_arrow(_pseudo_ledger(reader)).create("l")
    elif planned is None:
        return None
    else:
        return SetStats(image_set.value, planned)
    finished = con.execute("SELECT count(*) FROM l").fetchone()[0]
    stats = SetStats(image_set.value, planned)
    if finished == 0:
        return stats
    stats.finished = finished
    stats.ok = con.execute("SELECT count(*) FROM l WHERE outcome = 'ok'").fetchone()[0]
    samples_at = _spread(stats.ok, samples)
    if reader.has_ledger:  # from the ledger files: loading a 6M-row set's index only for this costs ~1 GiB
        stats.layout, picked = _ledger_layout_and_picks(con, samples_at)
        stats.thumbs = _thumbs([(i, partial(reader.read_stored, i, loc, sh)) for i, sh, loc in picked])
    else:
        stats.layout = reader.layout
        stats.thumbs = _thumbs([(reader.image_id_at(p), partial(reader.read_bytes_at, p)) for p in samples_at])
    stats.outcomes = con.execute("SELECT outcome, count(*) n FROM l GROUP BY 1 ORDER BY n DESC, 1").fetchall()
    stats.sources = con.execute(
        "SELECT coalesce(source, 'unknown'), count(*) n FROM l WHERE outcome = 'ok' GROUP BY 1 ORDER BY n DESC"
    ).fetchall()
    stats.stored_bytes, stats.downloaded_bytes = con.execute(
        "SELECT coalesce(sum(stored_bytes), 0), coalesce(sum(bytes_downloaded), 0) FROM l"
    ).fetchone()
    stats.bucket_s, stats.buckets, stats.busy_s = throughput(con)
    _distributions(con, stats, reader)
    stats.latency_bins = _log_bins(latency_values(con), 0.01, 10.0, per_decade=6)
    stats.attempts = attempts_counts(con)
    stats.hosts = host_rates(con)
    stats.failures = failure_kinds(con)
    stats.failed_images = failed_images(con)
    stats.failures_csv = failures_csv_link(con, storage, image_set.value, page_dir)
    _thumb_ledger_rows(con, stats.thumbs)
    return stats


def _pseudo_ledger(reader: SetReader) -> pa.Table:
    # A set without a ledger (the old notebook's output): every stored file is an ok row without timings.
    ok = reader._load()
    n = ok.num_rows
    null = pa.nulls(n)
    return pa.table(
        {
            "row": ok["row"],
            "image_id": ok["image_id"],
            "attempts": null.cast(pa.int16()),
            "outcome": ok["outcome"],
            "reason": null.cast(pa.string()),
            "reason_kind": null.cast(pa.string()),
            "source": null.cast(pa.string()),
            "url": null.cast(pa.string()),
            "bytes_downloaded": null.cast(pa.int64()),
            "stored_width": null.cast(pa.int32()),
            "stored_height": null.cast(pa.int32()),
            "stored_bytes": ok["stored_bytes"],
            "started_at": ok["started_at"],
            "elapsed_s": null.cast(pa.float64()),
        }
    )


def _log_bins(values: np.ndarray, lo: float, hi: float, per_decade: int) -> list[Bin]:
    if values.size == 0:
        return []
    lo = min(lo, float(values.min()))
    hi = max(hi, float(values.max()) * 1.0001)
    lo_e, hi_e = math.floor(math.log10(lo) * per_decade), math.ceil(math.log10(hi) * per_decade)
    edges = 10 ** (np.arange(lo_e, hi_e + 1) / per_decade)
    counts, _ = np.histogram(values, bins=edges)
    return [Bin(float(a), float(b), int(c)) for a, b, c in zip(edges[:-1], edges[1:], counts, strict=True)]


def _lin_bins(values: np.ndarray, step: float) -> list[Bin]:
    if values.size == 0:
        return []
    # The last bin is closed on the right, so a 1024 px longest side ends in [896, 1024], not [1024, 1152).
    top = max(step, math.ceil(float(values.max()) / step) * step)
    edges = np.arange(0, top + step / 2, step)
    counts, _ = np.histogram(values, bins=edges)
    return [Bin(float(a), float(b), int(c)) for a, b, c in zip(edges[:-1], edges[1:], counts, strict=True)]


def _distributions(con, stats: SetStats, reader: SetReader) -> None:
    sizes = con.execute("SELECT stored_bytes FROM l WHERE outcome = 'ok' AND stored_bytes > 0").fetchnumpy()[
        "stored_bytes"
    ]
    dims = con.execute(
        """SELECT stored_width w, stored_height h FROM l
           WHERE outcome = 'ok' AND stored_width > 0 AND stored_height > 0"""
    ).fetchnumpy()
    w, h = np.asarray(dims["w"], dtype=np.float64), np.asarray(dims["h"], dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.float64)
    if (w.size == 0 or sizes.size == 0) and len(reader):
        # The ledger did not record them (a set built by the notebook): measure a sample instead.
        sw, sh, ss = _sample_dims(reader, 400)
        if w.size == 0:
            w, h = sw, sh
        if sizes.size == 0:
            sizes = ss
        stats.dims_note = f"measured on a sample of {len(ss):,} stored images (the ledger does not record them)"
    stats.size_bins = _log_bins(sizes, 1_000, 100_000, per_decade=8)
    if w.size:
        longest = np.maximum(w, h)
        stats.side_bins = _lin_bins(longest, 128 if longest.max() > 512 else 16)
        stats.aspect_bins = _log_bins(w / h, 0.25, 4.0, per_decade=12)


def _sample_dims(reader: SetReader, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from PIL import Image

    n = len(reader)
    ws, hs, ss = [], [], []
    for pos in sorted({int(p) for p in np.linspace(0, n - 1, min(k, n))}):
        try:
            data = reader.read_bytes_at(pos)
            size = Image.open(io.BytesIO(data)).size  # header only: no decode
        except (ReaderError, OSError):
            continue
        ws.append(size[0])
        hs.append(size[1])
        ss.append(len(data))
    return np.array(ws, float), np.array(hs, float), np.array(ss, float)


def _spread(n: int, k: int) -> list[int]:
    """`k` positions spread evenly over `n` (deterministic: same report, same sheet)."""
    return sorted({int(p) for p in np.linspace(0, n - 1, min(k, n))}) if n > 0 and k > 0 else []


def _ledger_layout_and_picks(con: Any, positions: list[int]) -> tuple[str, list[tuple[str, int, str | None]]]:
    """The set's layout (as `SetReader.layout`) and (image_id, shard, location) of its ok rows at `positions`
    in plan order, by two DuckDB queries over the view `ok_locations` (LOCATION_COLUMNS of the ledger files)."""
    zip_, tar, folder = con.execute(
        """SELECT bool_or(contains(location, '.zip:')), bool_or(contains(location, '.tar:')),
                  bool_or(NOT (contains(location, '.zip:') OR contains(location, '.tar:')))
           FROM ok_locations WHERE outcome = 'ok'"""
    ).fetchall()[0]  # fetched to the end: an unfinished result blocks the connection's next query
    layout = "+".join(k for k, on in (("folder", folder), ("zip", zip_), ("tar", tar)) if on) or "empty"
    if not positions:
        return layout, []
    ok_rows = np.sort(con.sql("""SELECT "row" FROM ok_locations WHERE outcome = 'ok'""").fetchnumpy()["row"])
    wanted = [int(r) for r in ok_rows[positions]]  # the rows at those positions in plan order
    picked = con.sql(
        """SELECT image_id, shard, location FROM ok_locations
           WHERE outcome = 'ok' AND "row" IN (SELECT unnest($r)) ORDER BY "row" """,
        params={"r": wanted},
    ).fetchall()
    return layout, [(i, int(sh), loc) for i, sh, loc in picked]


def _thumbs(samples: list[tuple[str, Callable[[], bytes]]], side: int = 160) -> list[Thumb]:
    """Thumbnails of (image_id, its bytes) samples; one that cannot be read or decoded is left out."""
    out: list[Thumb] = []
    for image_id, read in samples:
        try:
            img = decode(read(), image_id)
        except (CorruptImageError, ReaderError, OSError):
            continue  # verify reports broken images; the contact sheet shows what can be shown
        size = img.size
        img = img.convert("RGB")
        large = _jpeg_uri(img, LARGE_SIDE, 62) if len(out) < LARGE_PER_SET else ""
        out.append(Thumb(image_id, _jpeg_uri(img, side, 78), size[0], size[1], large))
    return out


def _jpeg_uri(img: Any, side: int, quality: int) -> str:
    """A data: URI of `img` shrunk to fit `side` x `side`, aspect ratio kept."""
    img = img.copy()
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _thumb_ledger_rows(con: Any, thumbs: list[Thumb]) -> None:
    """Each thumbnail's ledger row (one scan for all of them)."""
    if not thumbs:
        return
    ids = [t.image_id for t in thumbs]
    rel = con.sql(
        "SELECT * EXCLUDE (image_id), image_id FROM l WHERE image_id IN (SELECT unnest($ids))", params={"ids": ids}
    )
    # Through Arrow, not fetchall(): duckdb 1.2 (our lower bound) needs pytz to make a timestamptz a Python object.
    rows = {r["image_id"]: r for r in rel.to_arrow_table().to_pylist()}
    for t in thumbs:
        t.ledger = {k: v for k, v in rows.get(t.image_id, {}).items() if v is not None}


def ledger_time_range(stats: list[SetStats]) -> tuple[datetime, datetime] | None:
    starts = [s.buckets[0].start for s in stats if s.buckets]
    ends = [s.buckets[-1].start for s in stats if s.buckets]
    return (min(starts), max(ends)) if starts else None


__all__ = [
    "Bin",
    "Bucket",
    "FailedImage",
    "FailureGroup",
    "HostRate",
    "SetStats",
    "Thumb",
    "collect",
    "ledger_time_range",
]
