"""Everything the report shows, computed from the plan and ledger with DuckDB (never a Python loop over rows)."""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa

from oiv4.contracts.schema import ImageSet, Outcome
from oiv4.io.blob_errors import CorruptImageError, ReaderError
from oiv4.io.image_decode import decode
from oiv4.io.manifest import plan_rows
from oiv4.io.sql import attach_filesystem, ledger_relation
from oiv4.io.storage import Storage
from oiv4.read.set_reader import SetReader

#: Ledger columns the report reads (not `location`/`image_id` of every row: memory on 7M-row sets).
REPORT_COLUMNS = (
    "row",
    "outcome",
    "reason",
    "source",
    "url",
    "bytes_downloaded",
    "stored_width",
    "stored_height",
    "stored_bytes",
    "started_at",
    "elapsed_s",
)
#: Candidate throughput bucket widths in seconds: the smallest giving at most MAX_BUCKETS wins.
BUCKET_WIDTHS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400, 604800)
MAX_BUCKETS = 120


@dataclass
class Bin:
    lo: float
    hi: float
    count: int


@dataclass
class Bucket:
    start: datetime
    ok: int
    failed: int
    bytes: int


@dataclass
class FailureGroup:
    outcome: str
    reason: str
    count: int
    examples: list[str]  # URLs


@dataclass
class Thumb:
    image_id: str
    data_uri: str
    width: int  # stored image size
    height: int


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
    bucket_s: int = 0
    buckets: list[Bucket] = field(default_factory=list)
    busy_s: float = 0.0  # seconds with at least one image finishing (resumed runs have idle gaps)
    size_bins: list[Bin] = field(default_factory=list)  # stored bytes, log-spaced
    side_bins: list[Bin] = field(default_factory=list)  # longest stored side, px
    aspect_bins: list[Bin] = field(default_factory=list)  # width / height, log-spaced
    dims_note: str = ""
    failures: list[FailureGroup] = field(default_factory=list)
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


def collect(storage: Storage, image_set: ImageSet, reader: SetReader, *, samples: int = 24) -> SetStats | None:
    """The set's figures; None when the root holds nothing of this set."""
    planned = plan_rows(storage, image_set)
    import duckdb

    con = duckdb.connect()
    if reader.has_ledger:
        attach_filesystem(con, storage)
        # A view: each query below streams the shard files' few columns (a 6M-row set held in memory,
        # even in DuckDB's compressed columns, is ~1 GiB).
        ledger_relation(con, storage, image_set, REPORT_COLUMNS).create_view("l")
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
    stats.layout = reader.layout
    stats.outcomes = con.execute("SELECT outcome, count(*) n FROM l GROUP BY 1 ORDER BY n DESC, 1").fetchall()
    stats.sources = con.execute(
        "SELECT coalesce(source, 'unknown'), count(*) n FROM l WHERE outcome = 'ok' GROUP BY 1 ORDER BY n DESC"
    ).fetchall()
    stats.stored_bytes, stats.downloaded_bytes = con.execute(
        "SELECT coalesce(sum(stored_bytes), 0), coalesce(sum(bytes_downloaded), 0) FROM l"
    ).fetchone()
    _throughput(con, stats)
    _distributions(con, stats, reader)
    stats.failures = _failures(con)
    stats.thumbs = _thumbs(reader, samples)
    return stats


def _pseudo_ledger(reader: SetReader) -> pa.Table:
    # A set without a ledger (the old notebook's output): every stored file is an ok row without timings.
    ok = reader._load()
    n = ok.num_rows
    null = pa.nulls(n)
    return pa.table(
        {
            "row": ok["row"],
            "outcome": ok["outcome"],
            "reason": null.cast(pa.string()),
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


def _throughput(con, stats: SetStats) -> None:
    span = con.execute(
        """SELECT min(epoch_ms(started_at)), max(epoch_ms(started_at) + coalesce(elapsed_s, 0) * 1000)
           FROM l WHERE started_at IS NOT NULL"""
    ).fetchone()
    if span[0] is None:
        return
    t0, t1 = int(span[0]), int(span[1])
    width = next((w for w in BUCKET_WIDTHS if (t1 - t0) / 1000 / w < MAX_BUCKETS), BUCKET_WIDTHS[-1])
    # An image counts when it finished: started_at + elapsed_s. Buckets start at t0 aligned to the width.
    base = t0 - t0 % (width * 1000)
    rows = con.execute(
        f"""SELECT CAST(floor((epoch_ms(started_at) + coalesce(elapsed_s, 0) * 1000 - {base}) / {width * 1000}) AS BIGINT) b,
                   count(*) FILTER (WHERE outcome = 'ok'), count(*) FILTER (WHERE outcome <> 'ok'),
                   coalesce(sum(bytes_downloaded), 0)
            FROM l WHERE started_at IS NOT NULL GROUP BY 1 ORDER BY 1"""
    ).fetchall()
    n_buckets = int(rows[-1][0]) + 1
    dense = {int(b): (ok, failed, nbytes) for b, ok, failed, nbytes in rows}
    from datetime import UTC, timedelta

    start = datetime.fromtimestamp(base / 1000, UTC)
    stats.bucket_s = width
    stats.buckets = [Bucket(start + timedelta(seconds=i * width), *dense.get(i, (0, 0, 0))) for i in range(n_buckets)]
    stats.busy_s = float(len(rows) * width)


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


def _failures(con, top: int = 12) -> list[FailureGroup]:
    # Reasons embed byte counts, ports and checksums: fold them so the same failure groups as one line.
    folded = (
        "regexp_replace(regexp_replace(coalesce(reason, ''), '[A-Za-z0-9+/]{22}==', '…', 'g'), "
        "'[0-9][0-9,.]{2,}[0-9]', '…', 'g')"
    )
    rows = con.execute(
        f"""SELECT outcome, {folded} r, count(*) n,
                   list(url ORDER BY "row") FILTER (WHERE url IS NOT NULL)[1:3] ex
            FROM l WHERE outcome <> '{Outcome.ok.value}' GROUP BY 1, 2 ORDER BY n DESC, 1, 2 LIMIT {top}"""
    ).fetchall()
    return [FailureGroup(o, r, int(n), list(ex or [])) for o, r, n, ex in rows]


def _thumbs(reader: SetReader, k: int, side: int = 160) -> list[Thumb]:
    """`k` thumbnails spread evenly over the set in plan order (deterministic: same report, same sheet)."""
    n = len(reader)
    out: list[Thumb] = []
    if n == 0 or k <= 0:
        return out
    for pos in sorted({int(p) for p in np.linspace(0, n - 1, min(k, n))}):
        image_id = reader.image_id_at(pos)
        try:
            img = decode(reader.read_bytes_at(pos), image_id)
        except (CorruptImageError, ReaderError, OSError):
            continue  # verify reports broken images; the contact sheet shows what can be shown
        size = img.size
        img = img.convert("RGB")
        img.thumbnail((side, side))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=78)
        uri = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
        out.append(Thumb(image_id, uri, size[0], size[1]))
    return out


def ledger_time_range(stats: list[SetStats]) -> tuple[datetime, datetime] | None:
    starts = [s.buckets[0].start for s in stats if s.buckets]
    ends = [s.buckets[-1].start for s in stats if s.buckets]
    return (min(starts), max(ends)) if starts else None


__all__ = ["Bin", "Bucket", "FailureGroup", "SetStats", "Thumb", "collect", "ledger_time_range"]
