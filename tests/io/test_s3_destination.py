"""`Storage` and the ledger on an s3:// root, against moto's real S3 server on 127.0.0.1.

What matters on an object store: nothing partial ever appears at a final key, and a reader (resume,
`oiv4 status`) sees what *other* processes wrote or removed, not a cached listing.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import boto3
import pytest
import s3fs

from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.io.ledger import read_set, read_shard
from oiv4.io.ledger_write import LedgerBuffer, now_utc
from oiv4.io.storage import Storage


def other_writer(options: dict[str, str]) -> s3fs.S3FileSystem:
    """Another client of the same bucket, as a worker process on another machine would be."""
    return s3fs.S3FileSystem(skip_instance_cache=True, **options)


def bucket_path(root: str, rel: str) -> str:
    return f"{root.removeprefix('s3://')}/{rel}"


def test_storage_on_s3_sees_what_other_writers_add_and_remove(s3_root) -> None:
    root, options = s3_root
    storage = Storage(root, options)
    storage.write_bytes("ledger/train/shard-00000.parts/part-a.parquet", b"a")
    assert storage.glob("ledger/train/shard-*.parts/part-*.parquet") == [
        "ledger/train/shard-00000.parts/part-a.parquet"
    ]

    other = other_writer(options)
    other.pipe_file(bucket_path(root, "ledger/train/shard-00000.parts/part-b.parquet"), b"b")
    other.rm(bucket_path(root, "ledger/train/shard-00000.parts/part-a.parquet"))

    assert storage.glob("ledger/train/shard-*.parts/part-*.parquet") == [
        "ledger/train/shard-00000.parts/part-b.parquet"
    ]
    assert storage.exists("ledger/train/shard-00000.parts/part-b.parquet")
    assert not storage.exists("ledger/train/shard-00000.parts/part-a.parquet")
    assert storage.read_bytes("ledger/train/shard-00000.parts/part-b.parquet") == b"b"


def test_storage_on_s3_writes_reads_and_removes_folders(s3_root) -> None:
    root, options = s3_root
    storage = Storage(root, options)
    storage.write_bytes("train/images/ab/abcdef0123456789.jpg", b"jpeg", fsync=True)
    with storage.open_atomic("train/images/ab/zip.zip") as fh:
        fh.write(b"zip")
    storage.sync()  # a no-op on object stores: a finished PUT is already durable

    assert storage.read_bytes("train/images/ab/zip.zip") == b"zip"
    assert storage.size("train/images/ab/abcdef0123456789.jpg") == 4
    assert storage.glob("train/images/*/*") == ["train/images/ab/abcdef0123456789.jpg", "train/images/ab/zip.zip"]
    storage.remove("train/images")
    storage.remove("train/images")  # removing what is gone is fine
    assert storage.glob("train/**") == []
    assert not storage.exists("train/images/ab/zip.zip")


@pytest.mark.parametrize("size", [1_000, 12 << 20], ids=["single-put", "multipart"])
def test_open_atomic_on_s3_publishes_nothing_when_the_writer_fails(s3_root, moto_endpoint: str, size: int) -> None:
    root, options = s3_root
    storage = Storage(root, options)

    with pytest.raises(OSError, match="disk on fire"), storage.open_atomic("train/images/00.zip") as fh:
        for _ in range(0, size, 1 << 20):
            fh.write(b"x" * min(1 << 20, size))
        raise OSError("disk on fire")

    assert not other_writer(options).exists(bucket_path(root, "train/images/00.zip"))
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, aws_access_key_id="x", aws_secret_access_key="x")
    bucket = root.removeprefix("s3://").split("/")[0]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == [], "a started upload must be aborted"


def test_open_atomic_on_s3_publishes_the_whole_object(s3_root) -> None:
    root, options = s3_root
    storage = Storage(root, options)
    chunk = bytes(range(256)) * 4096  # 1 MiB

    with storage.open_atomic("train/images/01.zip") as fh:
        for _ in range(12):  # past s3fs's 5 MiB block: a multipart upload
            fh.write(chunk)

    assert other_writer(options).cat_file(bucket_path(root, "train/images/01.zip")) == chunk * 12


def record(ledger: LedgerBuffer, rows: range, reason: str = "ok", minutes: int = 0) -> None:
    for row in rows:
        ledger.record(
            image_id=f"{row:016x}",
            row=row,
            outcome="ok" if reason == "ok" else "http_503",
            reason=reason,
            started_at=now_utc() + timedelta(minutes=minutes),
        )


def test_ledger_on_s3_resumes_from_parts_and_compacts(s3_root) -> None:
    root, options = s3_root
    storage = Storage(root, options)
    first = LedgerBuffer(storage, ImageSet.train, 3, flush_rows=2)
    record(first, range(30, 35), reason="service unavailable")
    first.flush()
    # The run was killed here: parts exist, no compacted file. A re-run sees every recorded row.
    assert sorted(read_shard(storage, "train", 3).column("row").to_pylist()) == list(range(30, 35))
    assert storage.glob(f"{LAYOUT.ledger_parts_dir('train', 3)}/part-*.parquet")

    rerun = LedgerBuffer(storage, ImageSet.train, 3, flush_rows=2)
    record(rerun, range(30, 40), minutes=1)  # retried rows succeed later: the latest row wins
    table = rerun.close()

    assert table.column("row").to_pylist() == list(range(30, 40))
    assert set(table.column("outcome").to_pylist()) == {"ok"}
    assert storage.glob("ledger/train/*") == ["ledger/train/shard-00003.parquet"]
    assert read_set(storage, "train").num_rows == 10


def test_read_set_while_shards_compact_never_fails_nor_loses_rows(s3_root) -> None:
    """`oiv4 status` during a run: shards finish (write shard file, remove parts) while the ledger is read."""
    root, options = s3_root
    storage = Storage(root, options)
    n_shards, rows_per_shard = 6, 3
    done = threading.Event()

    def run_shards() -> None:
        for shard in range(n_shards):
            ledger = LedgerBuffer(Storage(root, options), ImageSet.train, shard, flush_rows=1)
            record(ledger, range(shard * rows_per_shard, (shard + 1) * rows_per_shard))
            ledger.close()
        done.set()

    writer = threading.Thread(target=run_shards)
    writer.start()
    seen = [0]
    while not done.is_set():
        rows = read_set(storage, "train").column("row").to_pylist()
        assert len(rows) == len(set(rows))
        assert len(rows) >= seen[-1], "a row seen once must stay visible while its shard compacts"
        seen.append(len(rows))
    writer.join()
    assert read_set(storage, "train").num_rows == n_shards * rows_per_shard
