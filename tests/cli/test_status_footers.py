"""`oiv4 status` counts running shards from their parts' footer summaries: the same numbers as reading rows."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.io.ledger import read_ledger
from oiv4.io.ledger_summary import read_summary
from oiv4.io.ledger_write import LedgerBuffer, append_rows, now_utc
from oiv4.io.reason_kind import reason_kind, reason_kind_sql
from oiv4.io.storage import Storage
from oiv4.stages.status import SetStatus, collect_status

OUTCOMES = [("ok", None), ("http_404", "HTTP 404 Not Found from farm{n}.staticflickr.com")]
OUTCOMES += [("placeholder", "redirected to https://s.yimg.com/photo_unavailable.png from https://f.com/{n}.jpg")]
OUTCOMES += [("timeout", "no response within {n} s"), ("md5_mismatch", None)]
T0 = now_utc()


def _row(row: int, rng: random.Random, minutes: int = 0) -> dict:
    outcome, reason = rng.choice(OUTCOMES)
    return {
        "image_id": f"{row + 100:016x}",
        "row": row,
        "outcome": outcome,
        "reason": reason.format(n=rng.randint(1, 9)) if reason else None,
        "bytes_downloaded": rng.randint(0, 5000),
        "stored_bytes": rng.choice([None, rng.randint(0, 4000)]),
        "started_at": T0 + timedelta(minutes=minutes, seconds=rng.random()),
    }


def _reference(storage: Storage, image_set: str) -> dict:
    """Status numbers straight from the resolved rows (no footers, no DuckDB aggregate)."""
    t = read_ledger(storage, image_set, ["row", "outcome", "reason", "bytes_downloaded", "stored_bytes"]).to_pylist()
    kinds: dict[tuple[str, str], list] = {}
    for r in sorted(t, key=lambda r: r["row"]):
        k = (r["outcome"], reason_kind(r["reason"]))
        if k not in kinds:
            kinds[k] = [0, r["reason"] or ""]
        kinds[k][0] += 1
    return {
        "counts": {o: sum(1 for r in t if r["outcome"] == o) for o in {r["outcome"] for r in t}},
        "dl": sum(r["bytes_downloaded"] or 0 for r in t),
        "stored": sum(r["stored_bytes"] or 0 for r in t),
        "planned": sum(1 for r in t if r["row"] >= 0),
        "kinds": {k: tuple(v) for k, v in kinds.items() if k[0] != "ok"},
    }


def _seen(st: SetStatus) -> dict:
    return {
        "counts": st.counts,
        "dl": st.bytes_downloaded,
        "stored": st.stored_bytes,
        "planned": st.recorded_planned,
        "kinds": {(k.outcome, k.kind): (k.count, k.example) for k in st.kinds},
    }


def _build(tmp_path: Path) -> Storage:
    storage = Storage(str(tmp_path))
    counts = {"targets": 0, "validation": 0, "train": 400, "extended_targets": 0}
    storage.write_bytes(LAYOUT.plan_summary(), json.dumps({"shard_rows": 100, "counts": counts}).encode())
    return storage


def _fetch_shard(storage: Storage, shard: int, rng: random.Random, *, flush: int = 7) -> None:
    """A shard mid-run: rows in completion order (not plan order), flushed in small parts, never compacted."""
    rows = list(range(shard * 100, shard * 100 + 60))
    rng.shuffle(rows)
    led = LedgerBuffer(storage, ImageSet.train, shard, flush_rows=flush)
    for r in rows:
        led.record(**_row(r, rng))
    led.flush()


def test_status_of_shards_still_in_parts_matches_the_rows_exactly(tmp_path: Path) -> None:
    storage, rng = _build(tmp_path), random.Random(1)
    for shard in range(4):
        _fetch_shard(storage, shard, rng)
    (st,) = collect_status(storage, ["train"])
    assert st.shards_from_footers == 4  # every shard counted without reading a row
    assert _seen(st) == _reference(storage, "train")
    assert st.remaining == 400 - 240


@pytest.mark.parametrize("case", ["retry", "recovery", "requeue", "mid_compaction", "part_without_summary"])
def test_status_is_exact_when_rows_are_recorded_twice(tmp_path: Path, case: str) -> None:
    storage, rng = _build(tmp_path), random.Random(2)
    for shard in range(3):
        _fetch_shard(storage, shard, rng)
    if case == "retry":  # a retry of recorded failures of shard 1 lands in a later part of the same shard
        append_rows(storage, ImageSet.train, 1, [_row(r, rng, minutes=5) for r in range(100, 130)])
    elif case == "recovery":  # the same row twice within one part, the later one winning
        led = LedgerBuffer(storage, ImageSet.train, 2, flush_rows=100)
        for r, minutes in ((250, 9), (251, 9), (250, 10)):
            led.record(**_row(r, rng, minutes=minutes))
        led.flush()
    elif case == "requeue":  # shard 0 compacted, then verify --requeue appends to it
        LedgerBuffer(storage, ImageSet.train, 0).close()
        append_rows(storage, ImageSet.train, 0, [_row(r, rng, minutes=20) for r in range(0, 100, 3)])
    elif case == "mid_compaction":  # the shard file is written, the parts are not yet removed
        table = read_ledger(storage, "train", shards=[1])
        from oiv4.io.ledger_write import _table_bytes

        storage.write_bytes(LAYOUT.ledger_shard(ImageSet.train, 1), _table_bytes(table))
    else:  # a part written before parts carried summaries
        import pyarrow.parquet as pq

        part = storage.glob(f"{LAYOUT.ledger_parts_dir(ImageSet.train, 2)}/part-*.parquet")[0]
        t = pq.read_table(storage.path(part))
        pq.write_table(t.replace_schema_metadata({}), storage.path(part))
        assert read_summary(storage, part) is None
    (st,) = collect_status(storage, ["train"])
    assert st.shards_from_footers == 2  # the shard in doubt is read row by row
    assert _seen(st) == _reference(storage, "train")


def test_the_python_and_duckdb_reason_kinds_agree() -> None:
    reasons = [
        None,
        "",
        "HTTP 404 Not Found from farm3.staticflickr.com",
        "redirected to https://s.yimg.com/pw/images/en-us/photo_unavailable.png from http://farm4.x/1_2.jpg?a=b",
        "MD5 of 2,354,112 bytes is not OriginalMD5",
        "no response within 30.5 s (read timeout, 3 attempts)",
        'it\'s "quoted"\tand tabbed 7 é5 5é',
        "s3://bucket/key 12:30",
    ]
    sql = duckdb.execute(f"SELECT {reason_kind_sql('x')} FROM unnest(?::VARCHAR[]) AS t(x)", [reasons]).fetchall()
    assert [r[0] for r in sql] == [reason_kind(r) for r in reasons]
    assert reason_kind(reasons[3]) == "redirected to <url> from <url>"
