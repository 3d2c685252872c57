"""Ledger files written before `checksum` / `phash` existed still read, with those columns null."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import LEDGER_SCHEMA, ImageSet
from oiv4.io.ledger import load_ledger, read_set
from oiv4.io.ledger_write import append_rows
from oiv4.io.storage import Storage

OLD_SCHEMA = pa.schema([f for f in LEDGER_SCHEMA if f.name not in ("checksum", "phash")])


def _old_ledger(storage: Storage, shard: int, rows: range) -> None:
    table = pa.Table.from_pylist(
        [
            {
                "image_id": f"{r:016x}",
                "set": "train",
                "shard": shard,
                "row": r,
                "outcome": "ok",
                "started_at": datetime(2024, 1, 1, tzinfo=UTC),
            }
            for r in rows
        ],
        schema=OLD_SCHEMA,
    )
    path = Path(storage.root) / LAYOUT.ledger_shard(ImageSet.train, shard)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def test_old_ledger_without_checksum_and_phash_reads_with_nulls(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    _old_ledger(storage, 0, range(0, 3))
    for table in (read_set(storage, "train"), load_ledger(storage, "train")):
        assert table.schema.equals(LEDGER_SCHEMA)
        assert table["checksum"].null_count == 3 and table["phash"].null_count == 3
    some = load_ledger(storage, "train", ("image_id", "phash", "checksum"))
    assert some.column_names == ["image_id", "phash", "checksum"]
    assert some["phash"].type == pa.uint64() and some["phash"].null_count == 3


def test_old_and_new_ledger_files_mix_and_the_newer_row_wins(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    _old_ledger(storage, 0, range(0, 2))
    # `oiv4 hash` re-records row 1 later with its hashes, in the new schema
    append_rows(
        storage,
        ImageSet.train,
        0,
        [
            {
                "image_id": f"{1:016x}",
                "row": 1,
                "outcome": "ok",
                "checksum": "xxh3:" + "0" * 32,
                "phash": 2**63 + 5,
                "started_at": datetime(2025, 1, 1, tzinfo=UTC),
            }
        ],
    )
    for table in (read_set(storage, "train"), load_ledger(storage, "train")):
        assert table["row"].to_pylist() == [0, 1]
        assert table["phash"].to_pylist() == [None, 2**63 + 5]
        assert table["checksum"].to_pylist() == [None, "xxh3:" + "0" * 32]


def test_sql_views_and_the_lazy_manifest_read_old_ledgers_when_no_file_has_the_new_columns(tmp_path: Path) -> None:
    import oiv4
    from oiv4.io.sql import connect

    storage = Storage(str(tmp_path))
    _old_ledger(storage, 0, range(0, 3))
    _old_ledger(storage, 1, range(3, 5))
    con = connect(storage)
    counts = con.sql(
        "SELECT count(*), count(*) FILTER (WHERE checksum IS NULL AND phash IS NULL) FROM ledger_train"
    ).fetchall()
    assert counts == [(5, 5)]
    relation = oiv4.open(str(tmp_path))["train"].manifest_relation(con)
    assert relation.aggregate("count(*)").fetchall() == [(5,)] and "checksum" in relation.columns
