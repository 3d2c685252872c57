"""The read side at a real failure mix: each row's reason kind is stored when it is written (and backfilled
when an older ledger compacts), a finished build is counted from footers alone, and explaining a failed
ImageID reads only the one shard that lists it.

"Reads no row data" is proven from outside: the data pages of the files that must not be read are overwritten
with zeros (their footers left intact), so any read of their rows fails or miscounts."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oiv4.contracts.errors import ImageNotFoundError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import LEDGER_SCHEMA, ImageSet
from oiv4.io.ledger_write import LedgerBuffer, now_utc
from oiv4.io.reason_kind import reason_kind, reason_kinds
from oiv4.io.storage import Storage
from oiv4.read.set_reader import SetReader
from oiv4.stages.status import collect_status

T0 = now_utc()
#: Reasons in the shapes fetch writes: each names a digest, a byte count, a size or a URL.
REASONS = {
    "ok": "size and MD5 verified; JPEG RGB {a}x{b} -> 1024x{c}",
    "md5_mismatch": "MD5 {d}Q== differs from OriginalMD5 abcdefghijklmnopqrstuv== ({a:,}{b} bytes)",
    "placeholder": "HTTP 302 redirect to https://s.yimg.com/pw/{a}/photo_unavailable.png: Flickr's 'photo unavailable' card",
    "timeout": "no data for 30s ({a:,}{c} bytes received), after 30.{b}s (after 3 attempts)",
    "http_404": "HTTP 404 Not Found; thumbnail fallback failed too (http_404: HTTP 404 Not Found)",
}
SHARD_ROWS = 40


def _row(row: int, rng: random.Random) -> dict:
    outcome = rng.choice(list(REASONS))
    n = {k: rng.randint(100, 9999) for k in "abc"}
    return {
        "image_id": f"{row + 4096:016x}",
        "row": row,
        "outcome": outcome,
        "reason": REASONS[outcome].format(d="x" * 21, **n),
        "bytes_downloaded": rng.randint(0, 5000),
        "stored_bytes": rng.randint(0, 4000) if outcome == "ok" else None,
        "started_at": T0 + timedelta(seconds=row),
    }


def _finished_build(tmp_path: Path, shards: int = 3) -> Storage:
    storage, rng = Storage(str(tmp_path)), random.Random(17)
    counts = {"targets": 0, "validation": 0, "train": shards * SHARD_ROWS, "extended_targets": 0}
    storage.write_bytes(LAYOUT.plan_summary(), json.dumps({"shard_rows": SHARD_ROWS, "counts": counts}).encode())
    for shard in range(shards):
        led = LedgerBuffer(storage, ImageSet.train, shard, flush_rows=9)
        for r in range(shard * SHARD_ROWS, (shard + 1) * SHARD_ROWS):
            led.record(**_row(r, rng))
        led.close()
    return storage


def _zero_row_data(path: Path) -> None:
    """Overwrite everything between the leading magic and the footer with zeros: the footer still reads."""
    data = bytearray(path.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little")
    data[4 : len(data) - 8 - footer] = bytes(len(data) - 12 - footer)
    path.write_bytes(bytes(data))


def _status_numbers(storage: Storage) -> tuple:
    (st,) = collect_status(storage, ["train"])
    return st.counts, st.bytes_downloaded, st.stored_bytes, st.recorded_planned, [k.__dict__ for k in st.kinds]


def test_status_of_a_finished_build_reads_no_row_data_of_its_shard_files(tmp_path: Path) -> None:
    storage = _finished_build(tmp_path)
    expected = _status_numbers(storage)
    assert expected[0]["ok"] and len(expected[4]) >= 3  # several failure kinds, one line each
    for f in (tmp_path / "ledger" / "train").glob("shard-*.parquet"):
        _zero_row_data(f)
    with pytest.raises(Exception):  # noqa: B017 - the rows really are unreadable now
        pq.read_table(next((tmp_path / "ledger" / "train").glob("shard-*.parquet")))
    assert _status_numbers(storage) == expected
    (st,) = collect_status(storage, ["train"])
    assert st.shards_from_footers == 3


def test_reason_kind_is_stored_when_a_row_is_written_and_equals_the_rule(tmp_path: Path) -> None:
    storage, rng = Storage(str(tmp_path)), random.Random(3)
    led = LedgerBuffer(storage, ImageSet.train, 0, flush_rows=7)
    for r in range(30):
        led.record(**_row(r, rng))
    led.flush()
    parts = sorted((tmp_path / LAYOUT.ledger_parts_dir(ImageSet.train, 0)).glob("part-*.parquet"))
    part = pq.read_table(parts[0], columns=["reason", "reason_kind"]).to_pylist()
    assert [r["reason_kind"] for r in part] == [reason_kind(r["reason"]) for r in part]
    led.close()
    shard = pq.read_table(tmp_path / LAYOUT.ledger_shard(ImageSet.train, 0)).to_pylist()
    assert len(shard) == 30
    assert [r["reason_kind"] for r in shard] == [reason_kind(r["reason"]) for r in shard]
    assert {r["reason_kind"] for r in shard if r["outcome"] == "md5_mismatch"} == {
        "MD5 <md5> differs from OriginalMD5 <md5> (N bytes)"
    }


def test_a_ledger_written_before_stored_kinds_gets_them_at_its_next_compaction(tmp_path: Path) -> None:
    storage, rng = Storage(str(tmp_path)), random.Random(5)
    counts = {"targets": 0, "validation": 0, "train": SHARD_ROWS, "extended_targets": 0}
    storage.write_bytes(LAYOUT.plan_summary(), json.dumps({"shard_rows": SHARD_ROWS, "counts": counts}).encode())
    old_schema = pa.schema([f for f in LEDGER_SCHEMA if f.name not in ("checksum", "phash", "reason_kind")])
    rows = [{"set": "train", "shard": 0, **_row(r, rng)} for r in range(SHARD_ROWS)]
    old = pa.Table.from_pylist(rows, schema=old_schema)  # the old format: no column, no footer summary
    shard_file = tmp_path / LAYOUT.ledger_shard(ImageSet.train, 0)
    shard_file.parent.mkdir(parents=True)
    pq.write_table(old, shard_file)
    before = _status_numbers(storage)
    (st,) = collect_status(storage, ["train"])
    assert st.shards_from_footers == 0  # counted row by row, with the rule, until it compacts
    retried = {**_row(3, rng), "outcome": "ok", "reason": "size and MD5 verified; JPEG RGB 800x600 -> 800x600"}
    led = LedgerBuffer(storage, ImageSet.train, 0)
    led.record(**{**retried, "started_at": T0 + timedelta(days=1)})
    led.close()
    stored = pq.read_table(shard_file).to_pylist()
    assert len(stored) == SHARD_ROWS
    assert [r["reason_kind"] for r in stored] == [reason_kind(r["reason"]) for r in stored]
    after = _status_numbers(storage)
    (st,) = collect_status(storage, ["train"])
    assert st.shards_from_footers == 1
    assert sum(after[0].values()) == sum(before[0].values())
    _zero_row_data(shard_file)  # from now on status never looks at the rows again
    assert _status_numbers(storage) == after


def test_explaining_a_failed_id_reads_only_the_shard_that_lists_it(tmp_path: Path) -> None:
    storage = _finished_build(tmp_path, shards=4)
    files = {s: tmp_path / LAYOUT.ledger_shard(ImageSet.train, s) for s in range(4)}
    shard2 = pq.read_table(files[2]).to_pylist()
    failed = [r for r in shard2 if r["outcome"] != "ok"]
    ok_id = next(r["image_id"] for r in shard2 if r["outcome"] == "ok")
    for s in (0, 1, 3):
        _zero_row_data(files[s])
    reader = SetReader(storage, "train")
    for r in failed:
        with pytest.raises(ImageNotFoundError) as exc:
            reader.read_bytes(r["image_id"])
        assert str(exc.value) == f"{r['image_id']} is not stored in train: outcome {r['outcome']} ({r['reason']})"
    assert reader._ok is None  # the set's ok rows were never loaded
    intact = SetReader(_finished_build(tmp_path / "intact", shards=4), "train")
    assert ok_id in intact  # an ID no footer lists as failed is found in the loaded set, as before
    with pytest.raises(ImageNotFoundError, match="is not in set train"):
        intact.read_bytes("ffffffffffffffff")


def test_a_failed_id_in_a_shard_with_newer_parts_is_judged_on_the_resolved_rows(tmp_path: Path) -> None:
    storage = _finished_build(tmp_path, shards=2)
    shard1 = pq.read_table(tmp_path / LAYOUT.ledger_shard(ImageSet.train, 1)).to_pylist()
    retried = next(r for r in shard1 if r["outcome"] != "ok")
    led = LedgerBuffer(storage, ImageSet.train, 1)
    led.record(**{**retried, "outcome": "timeout", "reason": "no data for 30s, after 30.0s (retried)",
                  "started_at": T0 + timedelta(days=1)})  # fmt: skip
    led.flush()  # not compacted: the footer's list of failed IDs is no longer the whole story
    with pytest.raises(ImageNotFoundError, match=r"outcome timeout \(no data for 30s, after 30.0s \(retried\)\)"):
        SetReader(storage, "train").read_bytes(retried["image_id"])


def test_fetch_reasons_that_differ_only_in_host_or_duration_are_one_kind() -> None:
    timeouts = [f"no data for 30s ({n:,} bytes received), after 30.{n % 10}s (after 3 attempts)" for n in (7, 1234)]
    refused = [
        f"ClientConnectorError: Cannot connect to host farm{n}.staticflickr.com:443 ssl:default [Connection reset by "
        "peer] (after 3 attempts)"
        for n in (3, 8)
    ]
    for reasons in (timeouts, refused):
        kinds = {reason_kind(r) for r in reasons}
        assert len(kinds) == 1, kinds
        assert set(reason_kinds(pa.array(reasons)).to_pylist()) == kinds
