"""The ledger, once: one writer, one reader, one de-dup rule, and every read-side tool agrees with it."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import oiv4
from oiv4.cli import app
from oiv4.contracts.errors import ImageNotFoundError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.io.ledger import iter_ledger, read_ledger, read_set, read_shard
from oiv4.io.ledger_write import LedgerBuffer, append_rows
from oiv4.io.sql import connect
from oiv4.io.storage import Storage
from oiv4.read.set_reader import SetReader
from oiv4.report import render_report
from oiv4.stages.status import collect_status
from oiv4.stages.verify import EXAMPLES_PER_KIND, VerifySettings, verify
from support.layout_builder import T0, build_set
from support.paths import SRC


def _row(storage: Storage, rel: str) -> list[int]:
    return pq.read_table(storage.local_path(rel), columns=["row"])["row"].to_pylist()


def test_compaction_leaves_one_row_per_set_and_row_with_the_latest_winning(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    led = LedgerBuffer(storage, ImageSet.train, 0, flush_rows=2)
    for row in range(4):
        led.record(image_id=f"{row:016x}", row=row, outcome="timeout", reason="slow", started_at=T0)
    led.flush()
    # A retry of rows 1 and 3, later: it must supersede the failure it retried.
    for row in (1, 3):
        led.record(image_id=f"{row:016x}", row=row, outcome="ok", location="x.jpg", started_at=T0 + timedelta(1))
    led.close()

    assert _row(storage, LAYOUT.ledger_shard("train", 0)) == [0, 1, 2, 3]  # the file itself, not a reader
    assert not (tmp_path / LAYOUT.ledger_parts_dir("train", 0)).exists()
    outcomes = read_shard(storage, "train", 0)["outcome"].to_pylist()
    assert outcomes == ["timeout", "ok", "timeout", "ok"]


def _superseded_root(tmp_path: Path) -> tuple[Storage, str, str]:
    """A compacted train set (some failures) where one ok image was then requeued as verify_failed in a part."""
    built = build_set(tmp_path, "train", 16, "folder", fail_every=4, shard_rows=8)
    storage = Storage(str(tmp_path))
    victim = built.ok_ids[5]
    old = next(r for r in read_set(storage, "train").to_pylist() if r["image_id"] == victim)
    new = dict(old, outcome="verify_failed", reason="verify: missing: file is missing")
    new["started_at"] = old["started_at"] + timedelta(seconds=1)
    append_rows(storage, ImageSet.train, old["shard"], [new])
    assert (tmp_path / LAYOUT.ledger_parts_dir("train", old["shard"])).is_dir()  # still only in .parts/
    return storage, victim, next(iter(built.failed))


def test_a_part_superseding_a_compacted_row_is_resolved_by_every_reader(tmp_path: Path) -> None:
    storage, victim, _failed = _superseded_root(tmp_path)

    table = read_ledger(storage, "train")
    assert table.num_rows == 16 and sorted(table["row"].to_pylist()) == list(range(16))
    assert (
        dict(zip(table["image_id"].to_pylist(), table["outcome"].to_pylist(), strict=True))[victim] == "verify_failed"
    )
    assert sum(t.num_rows for t in iter_ledger(storage, "train", ["row"], batch_shards=1)) == 16
    expected = {o: table["outcome"].to_pylist().count(o) for o in set(table["outcome"].to_pylist())}

    (status,) = collect_status(storage, ["train"])
    assert status.counts == expected
    assert status.examples["verify_failed"] == "verify: missing: file is missing"

    con = connect(storage)
    assert dict(con.sql("SELECT outcome, count(*) FROM ledger_train GROUP BY 1").fetchall()) == expected

    s = oiv4.open(tmp_path)["train"]
    assert len(s) == expected["ok"] and victim not in s
    with pytest.raises(ImageNotFoundError, match=f"{victim}.*verify_failed \\(verify: missing: file is missing\\)"):
        s.read_bytes(victim)
    m = s.manifest
    assert m.num_rows == 16
    assert dict(zip(m["ImageID"].to_pylist(), m["outcome"].to_pylist(), strict=True))[victim] == "verify_failed"

    report = verify(tmp_path, VerifySettings(sets=("train",)))
    (check,) = report.sets
    assert check.ledger_rows == 16 and check.ok_rows == expected["ok"] and report.ok
    assert "verify_failed" in render_report(storage)


def test_a_big_sets_manifest_is_a_lazy_relation_with_the_same_rows(tmp_path: Path) -> None:
    storage, _victim, _failed = _superseded_root(tmp_path)
    eager = SetReader(storage, "train").manifest
    lazy = SetReader(storage, "train", eager_manifest_rows=0).manifest
    assert isinstance(eager, pa.Table)
    assert isinstance(lazy, duckdb.DuckDBPyRelation)
    assert lazy.to_arrow_table().to_pylist() == eager.to_pylist()
    m = lazy  # noqa: F841 - the documented way to query it: DuckDB finds the variable by name
    rows = duckdb.sql("SELECT outcome, count(*) FROM m GROUP BY 1").fetchall()
    assert dict(rows)["verify_failed"] == 1


def _sql(root: str, query: str) -> list[dict[str, str]]:
    result = CliRunner().invoke(app, ["sql", "--root", root, "--csv", query])
    assert result.exit_code == 0, result.output
    return list(csv.DictReader(io.StringIO(result.stdout)))


def test_oiv4_sql_counts_rows_still_in_parts_mid_run(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    done = LedgerBuffer(storage, ImageSet.train, 0)
    for row in range(5):
        done.record(image_id=f"{row:016x}", row=row, outcome="ok", started_at=T0)
    done.close()
    running = LedgerBuffer(storage, ImageSet.train, 1, flush_rows=2)  # a shard still running: parts only
    for row in range(5, 10):
        running.record(image_id=f"{row:016x}", row=row, outcome="http_404" if row % 2 else "ok", started_at=T0)
    running.flush()
    rows = _sql(str(tmp_path), "select outcome, count(*) n from ledger_train group by 1 order by 1")
    assert rows == [{"outcome": "http_404", "n": "3"}, {"outcome": "ok", "n": "7"}]
    # What the README used to suggest misses the running shard entirely:
    naive = duckdb.sql(f"select count(*) from '{tmp_path}/ledger/train/*.parquet'").fetchall()[0][0]
    assert naive == 5


def test_oiv4_sql_after_requeue_counts_each_image_once(tmp_path: Path) -> None:
    _storage, victim, _failed = _superseded_root(tmp_path)
    rows = _sql(
        str(tmp_path), "select count(*) n, count(*) filter (where outcome = 'verify_failed') vf from ledger_train"
    )
    assert rows == [{"n": "16", "vf": "1"}]
    joined = _sql(
        str(tmp_path),
        f"select p.ImageID from plan_train p join ledger_train l using (row) where l.image_id = '{victim}'",
    )
    assert joined == [{"ImageID": victim}]


def test_oiv4_sql_names_a_bad_query_in_one_line(tmp_path: Path) -> None:
    build_set(tmp_path, "train", 4, "folder")
    result = CliRunner().invoke(app, ["sql", "--root", str(tmp_path), "select * from ledger_nowhere"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output and "ledger_nowhere" in result.output


def test_sql_views_work_on_an_s3_root(s3_root) -> None:
    root, opts = s3_root
    storage = Storage(root, opts)
    led = LedgerBuffer(storage, ImageSet.validation, 0)
    for row in range(3):
        led.record(image_id=f"{row:016x}", row=row, outcome="ok", started_at=T0)
    led.close()
    # Then a requeue-like part on top of the compacted file.
    append_rows(
        storage,
        ImageSet.validation,
        0,
        [{"image_id": f"{2:016x}", "row": 2, "outcome": "verify_failed", "started_at": T0 + timedelta(seconds=1)}],
    )
    con = connect(storage)
    assert dict(con.sql("SELECT outcome, count(*) FROM ledger_validation GROUP BY 1").fetchall()) == {
        "ok": 2,
        "verify_failed": 1,
    }


def _ok_rows_whose_files_are_missing(storage: Storage, n: int) -> int:
    """`n` train rows recorded ok whose files were never written: each is a `missing` finding for verify."""
    rows = [
        {
            "image_id": f"{i:016x}",
            "row": i,
            "outcome": "ok",
            "location": LAYOUT.image("train", f"{i:016x}"),
            "stored_bytes": 100,
            "started_at": T0,
        }
        for i in range(n)
    ]
    append_rows(storage, ImageSet.train, 0, rows)
    return n


def test_verify_counts_every_finding_but_keeps_a_bounded_list_of_examples(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    n = _ok_rows_whose_files_are_missing(storage, EXAMPLES_PER_KIND + 50)
    report = verify(tmp_path, VerifySettings(requeue=True))
    (check,) = report.sets
    assert check.count("missing") == n and check.broken_images == n and check.intact == 0
    assert len([p for p in check.problems if p.kind == "missing"]) == EXAMPLES_PER_KIND
    assert check.requeued == n
    assert set(read_set(storage, "train")["outcome"].to_pylist()) == {"verify_failed"}


def test_verify_prints_the_full_count_and_a_few_examples(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    n = _ok_rows_whose_files_are_missing(storage, EXAMPLES_PER_KIND + 50)
    result = CliRunner().invoke(app, ["verify", "--root", str(tmp_path), "--show", "3"])
    assert result.exit_code == 6  # integrity
    out = " ".join(result.output.split())
    assert f"train: {n:,} missing" in out and f"... and {n - 3:,} more" in out
    assert out.count("file is missing") == 3


def test_no_second_de_dup_implementation_is_left() -> None:
    offenders = [
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if re.search(r"row_number\(\)|_latest_per_row|_dedupe_latest", p.read_text())
    ]
    assert offenders == []
