"""A set whose shards are all still parts (every shard running, or killed before it compacted) has a ledger:
every command that looks for built sets finds it, the same way the one reader reads it."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from oiv4.cli import app
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.io.ledger import has_ledger, list_ledger, sets_with_ledger
from oiv4.io.ledger_write import append_rows
from oiv4.io.storage import Storage
from oiv4.read.set_reader import SetReader


def _id(n: int) -> str:
    return f"{n:016x}"


def _parts_only_root(root: Path) -> Storage:
    """train planned with two images, both recorded ok and hashed, in parts only (no shard compacted)."""
    storage = Storage(str(root))
    manifest = pa.table(
        {"row": [0, 1], "ImageID": [_id(1), _id(2)], "OriginalMD5": ["a", "b"], "OriginalURL": ["u1", "u2"]}
    )
    sink = pa.BufferOutputStream()
    pq.write_table(manifest, sink)
    storage.write_bytes(LAYOUT.plan(ImageSet.train), sink.getvalue().to_pybytes())
    rows = [
        {
            "image_id": _id(n),
            "row": n - 1,
            "outcome": "ok",
            "reason": "stored",
            "phash": n * 0x0F0F0F0F0F0F,
            "checksum": f"x{n}",
        }
        for n in (1, 2)
    ]
    append_rows(storage, ImageSet.train, 0, rows)
    return storage


def test_a_set_with_parts_only_has_a_ledger(tmp_path: Path) -> None:
    storage = _parts_only_root(tmp_path)
    files = list_ledger(storage, ImageSet.train)
    assert not files.compacted and files.parts  # the case: nothing compacted yet
    assert has_ledger(storage, ImageSet.train)
    assert not has_ledger(storage, ImageSet.targets)
    assert sets_with_ledger(storage) == [ImageSet.train]
    assert SetReader(storage, ImageSet.train).has_ledger


def test_dedup_finds_a_set_whose_shards_are_all_parts(tmp_path: Path) -> None:
    _parts_only_root(tmp_path)
    result = CliRunner().invoke(app, ["dedup", "--root", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["images"] == 2  # train's two images were compared, not skipped as "not built"


def test_progress_counts_parts_and_compacted_shards_once_each(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from oiv4.io.ledger_write import LedgerBuffer
    from oiv4.stages.fetch.progress import LedgerPoller

    storage = Storage(str(tmp_path))
    since = datetime.now(UTC) - timedelta(seconds=5)
    old, now = since - timedelta(hours=1), datetime.now(UTC)
    append_rows(
        storage,
        ImageSet.train,
        0,
        [{"image_id": _id(1), "row": 0, "outcome": "ok", "bytes_downloaded": 10, "started_at": now}],
    )
    append_rows(storage, ImageSet.train, 0, [{"image_id": _id(2), "row": 1, "outcome": "http_404", "started_at": now}])
    append_rows(storage, ImageSet.train, 0, [{"image_id": _id(3), "row": 2, "outcome": "ok", "started_at": old}])
    led = LedgerBuffer(storage, ImageSet.train, 1)
    led.record(image_id=_id(4), row=10, outcome="ok", bytes_downloaded=5, started_at=now)
    led.close()  # compacted: its rows count once, not again from parts
    snap = LedgerPoller(storage, ImageSet.train, since, todo=4).poll()
    assert snap.done == 3  # the row started before `since` belongs to an earlier run
    assert snap.outcomes == {"ok": 2, "http_404": 1}
    assert snap.bytes_downloaded == 15
