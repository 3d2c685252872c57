"""The report's timing figures from per-image ledger timing (`started_at` + `elapsed_s`): throughput over
time, latency and attempts histograms and rates per URL host.

An image counts when it finished: `started_at + elapsed_s`. Archive members written by one conversion may
all carry the archive's start time; members of such a group are placed one after another by their own
`elapsed_s` (a cumulative sum in plan order), or spread evenly over it when every member carries the same
`elapsed_s` (the archive's total). A group with no timing at all has no finishing times to show: it is left
out of the throughput rather than drawn as thousands of images in one instant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

#: Candidate throughput bucket widths in seconds (sub-second for short runs): the smallest giving at most
#: MAX_BUCKETS wins.
BUCKET_WIDTHS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
BUCKET_WIDTHS += (7200, 21600, 43200, 86400, 604800)
MAX_BUCKETS = 120

#: Each row's finishing time in epoch ms, or NULL when it has no timing (see the module docstring).
FINISHED = """
WITH g AS (
  SELECT outcome, bytes_downloaded, epoch_ms(started_at) AS t0, elapsed_s,
         count(*) OVER w AS gn, min(elapsed_s) OVER w AS gmin, max(elapsed_s) OVER w AS gmax,
         count(elapsed_s) OVER w AS gtimed,
         sum(coalesce(elapsed_s, 0)) OVER (w ORDER BY "row" ROWS UNBOUNDED PRECEDING) AS cum,
         count(*) OVER (w ORDER BY "row" ROWS UNBOUNDED PRECEDING) AS rk
  FROM l WHERE started_at IS NOT NULL AND source LIKE 'archive:%'
  WINDOW w AS (PARTITION BY source, started_at))
SELECT outcome, bytes_downloaded, CASE
    WHEN gn = 1 THEN t0 + coalesce(elapsed_s, 0) * 1000
    WHEN gtimed = 0 THEN NULL
    WHEN gmin = gmax AND gtimed = gn THEN t0 + gmax * 1000 * rk / gn
    ELSE t0 + cum * 1000 END AS fin
FROM g
UNION ALL
SELECT outcome, bytes_downloaded, epoch_ms(started_at) + coalesce(elapsed_s, 0) * 1000 AS fin
FROM l WHERE started_at IS NOT NULL AND (source IS NULL OR source NOT LIKE 'archive:%')
"""


@dataclass
class Bucket:
    start: datetime
    ok: int
    failed: int
    bytes: int


@dataclass
class HostRate:
    host: str
    images: int
    ok_pct: float
    median_s: float | None


def throughput(con: Any) -> tuple[float, list[Bucket], float]:
    """(bucket width s, buckets, busy seconds) of images finishing over time; ([], 0) without timings."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE fin AS SELECT * FROM ({FINISHED}) WHERE fin IS NOT NULL")
    span = con.execute("SELECT min(fin), max(fin), count(*) FROM fin").fetchone()
    if span[0] is None:
        return 0.0, [], 0.0
    t0, t1 = float(span[0]), float(span[1])
    width = next((w for w in BUCKET_WIDTHS if (t1 - t0) / 1000 / w < MAX_BUCKETS), BUCKET_WIDTHS[-1])
    wms = width * 1000
    base = math.floor(t0 / wms) * wms
    rows = con.execute(
        f"""SELECT CAST(floor((fin - {base}) / {wms}) AS BIGINT) b,
                   count(*) FILTER (WHERE outcome = 'ok'), count(*) FILTER (WHERE outcome <> 'ok'),
                   coalesce(sum(bytes_downloaded), 0)
            FROM fin GROUP BY 1 ORDER BY 1"""
    ).fetchall()
    con.execute("DROP TABLE fin")
    dense = {int(b): (ok, failed, nbytes) for b, ok, failed, nbytes in rows}
    start = datetime.fromtimestamp(base / 1000, UTC)
    buckets = [
        Bucket(start + timedelta(seconds=i * width), *dense.get(i, (0, 0, 0))) for i in range(int(rows[-1][0]) + 1)
    ]
    return float(width), buckets, float(len(rows) * width)


def latency_values(con: Any) -> np.ndarray:
    """Every timed image's `elapsed_s` (seconds), for the latency histogram."""
    got = con.execute("SELECT elapsed_s FROM l WHERE elapsed_s > 0").fetchnumpy()["elapsed_s"]
    return np.asarray(got, dtype=np.float64)


def attempts_counts(con: Any) -> list[tuple[int, int]]:
    """(attempts, images), fewest attempts first."""
    rows = con.execute("SELECT attempts, count(*) FROM l WHERE attempts IS NOT NULL GROUP BY 1 ORDER BY 1").fetchall()
    return [(int(a), int(n)) for a, n in rows]


def host_rates(con: Any, top: int = 12) -> list[HostRate]:
    """Images, ok share and median latency per URL host, busiest first."""
    rows = con.execute(
        f"""SELECT regexp_extract(url, '^[A-Za-z][A-Za-z0-9+.-]*://([^/:?#]+)', 1) AS host, count(*) n,
                   100.0 * count(*) FILTER (WHERE outcome = 'ok') / count(*), median(elapsed_s)
            FROM l WHERE url IS NOT NULL GROUP BY 1 ORDER BY n DESC, 1 LIMIT {top}"""
    ).fetchall()
    return [HostRate(h or "(no host)", int(n), float(p), None if m is None else float(m)) for h, n, p, m in rows]
