"""A stage that re-records existing ledger rows changes only the columns it owns (`REWRITE_OWNERS`).

Every other column is a fact another stage recorded (the conversion's `started_at` and `elapsed_s`, which the
report's throughput charts are drawn from; sizes; locations) and must come through unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import LEDGER_SCHEMA, REWRITE_OWNERS, ImageSet
from oiv4.io.ledger import MANY_PARTS, read_set
from oiv4.io.ledger_write import append_rows
from oiv4.io.storage import Storage
from oiv4.run.executor import ExecutorSettings
from oiv4.run.hash import hash_set
from oiv4.stages.hash import HashSettings
from oiv4.stages.verify import VerifySettings, verify
from support.layout_builder import build_root

SETS = ("targets", "validation", "train", "extended_targets")


def _ledgers(storage: Storage) -> dict[str, dict[int, dict[str, Any]]]:
    return {name: {r["row"]: r for r in read_set(storage, name).to_pylist()} for name in SETS}


def _changed_columns(before: dict, after: dict) -> dict[str, set[str]]:
    """Per set, the ledger columns whose value differs on some row (rows must be the same rows)."""
    out: dict[str, set[str]] = {}
    for name in SETS:
        assert sorted(after[name]) == sorted(before[name]), name  # one row per image, none lost or added
        out[name] = {
            c for row, old in before[name].items() for c in LEDGER_SCHEMA.names if after[name][row][c] != old[c]
        }
    return out


def _forget_phash(root: Path) -> None:
    """The archive conversion records no phash: that is what `oiv4 hash` fills in after `build`."""
    for path in (root / "ledger").rglob("*.parquet"):
        pq.write_table(pq.read_table(path).drop_columns(["phash", "hashed_at", "hash_s"]), path)


def test_hash_changes_only_the_ledger_columns_it_owns(tmp_path: Path) -> None:
    build_root(tmp_path, "shard_zip", n=16, fail_every=4)
    _forget_phash(tmp_path)
    storage = Storage(str(tmp_path))
    before = _ledgers(storage)

    for name in SETS:
        summary = hash_set(storage, name, HashSettings(batch_rows=3), ExecutorSettings(kind="thread", workers=2))
        assert summary.hashed > 0, name

    after = _ledgers(storage)
    changed = _changed_columns(before, after)
    for name in SETS:
        assert changed[name] - REWRITE_OWNERS["hash"] == set(), name
        assert {"phash", "hashed_at", "hash_s"} <= changed[name], name  # it did run, and recorded its own timing
        for row, r in after[name].items():
            if r["outcome"] == "ok":
                assert r["started_at"] == before[name][row]["started_at"]  # the conversion's clock, kept
                assert r["hashed_at"] is not None and r["hash_s"] >= 0


def test_verify_requeue_changes_only_the_ledger_columns_it_owns(tmp_path: Path) -> None:
    built = build_root(tmp_path, "folder", n=16, fail_every=4)
    storage = Storage(str(tmp_path))
    broken = built["train"].ok_ids[:2]
    for image_id in broken:
        (tmp_path / LAYOUT.image("train", image_id)).unlink()
    before = _ledgers(storage)

    report = verify(tmp_path, VerifySettings(requeue=True))
    assert sum(s.requeued for s in report.sets) == len(broken)

    after = _ledgers(storage)
    changed = _changed_columns(before, after)
    assert changed["train"] and changed["train"] - REWRITE_OWNERS["verify_requeue"] == set()
    for name in SETS:
        untouched = [r for r in after[name].values() if r["image_id"] not in broken]
        assert untouched == [before[name][r["row"]] for r in untouched], name


def test_every_owned_column_is_a_ledger_column() -> None:
    for stage, owned in REWRITE_OWNERS.items():
        assert owned <= set(LEDGER_SCHEMA.names), stage
        assert {"image_id", "set", "shard", "row"}.isdisjoint(owned), stage  # a row's identity is nobody's


def test_a_ledger_written_before_hashed_at_and_hash_s_still_reads_with_them_null(tmp_path: Path) -> None:
    build_root(tmp_path, "folder", n=8, fail_every=4)
    _forget_phash(tmp_path)
    storage = Storage(str(tmp_path))
    table = read_set(storage, "train")
    assert table.schema.equals(LEDGER_SCHEMA)
    assert table["hashed_at"].null_count == table.num_rows and table["hash_s"].null_count == table.num_rows


def test_a_rewritten_row_with_the_same_started_at_wins_over_the_row_it_rewrites_however_many_parts(
    tmp_path: Path,
) -> None:
    """Hash keeps `started_at`, so its row must win the tie: written later wins, in the Python and DuckDB reads."""
    storage = Storage(str(tmp_path))
    build_root(tmp_path, "folder", n=8, fail_every=0)
    original = read_set(storage, "train").to_pylist()
    for k in range(MANY_PARTS + 6):  # past MANY_PARTS the parts are read by DuckDB
        append_rows(storage, ImageSet.train, 0, [{**r, "hash_s": float(k)} for r in original if r["shard"] == 0])
        assert {r["hash_s"] for r in read_set(storage, "train").to_pylist() if r["shard"] == 0} == {float(k)}
    after = read_set(storage, "train").to_pylist()
    assert [r["started_at"] for r in after] == [r["started_at"] for r in original]
