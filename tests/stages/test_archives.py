"""The archive stage end to end: sources (moto S3, https, folder), member checks, verification, ledger."""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from dataclasses import replace
from pathlib import Path

import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from oiv4.cli import app
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import LEDGER_SCHEMA
from oiv4.contracts.transfer import TransferSettings
from oiv4.io.ledger import read_set, read_shard
from oiv4.io.storage import Storage
from oiv4.run.archives import build_archive_set
from oiv4.stages.archives import ArchiveSettings, KnownArchive, archive_done, negative_row
from support.archives import (
    Entry,
    RangeServer,
    files_under,
    image_ids,
    images_archive,
    jpeg,
    make_archive,
    upload,
    write_plan,
)
from support.moto import moto_s3

BUCKET = "open-images-dataset"


def zip_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        assert zf.testzip() is None
        return {n: zf.read(n) for n in zf.namelist()}


def outcomes(storage: Storage, image_set: str) -> dict[str, int]:
    t = read_set(storage, image_set)
    return {d["values"]: d["counts"] for d in pc.value_counts(t["outcome"]).to_pylist()}


def test_targets_from_s3_stores_each_needed_archive_and_records_every_plan_row(tmp_path: Path) -> None:
    ids3, ids7 = image_ids(6, "3", seed=1), image_ids(4, "7", seed=2)
    a3 = images_archive("train_3", ids3[:5])  # ids3[5] is listed by the plan but missing from the archive
    a7 = images_archive("train_7", ids7, seed=50)
    unneeded = images_archive("train_9", image_ids(2, "9", seed=3))
    storage = Storage(str(tmp_path / "root"))
    write_plan(storage, "targets", ids3 + ids7)
    with moto_s3() as endpoint:
        upload(endpoint, BUCKET, "tar/", [a3, a7, unneeded])
        settings = ArchiveSettings(
            s3_endpoint=endpoint, transfer=TransferSettings(allow_private_networks=True, part_size=1024, connections=3)
        )
        summary = build_archive_set(storage, "targets", settings)

    assert summary.ok, summary.to_dict()
    assert [a.name for a in summary.archives] == ["train_3.tar.gz", "train_7.tar.gz"]  # train_9: no plan row
    for a in summary.archives:
        assert "verified by size and ETag (the MD5 of the content)" in a.verification
        assert a.bytes_downloaded == a.compressed_bytes
    root = tmp_path / "root"
    got = zip_members(root / LAYOUT.archive_zip("targets", "train_3"))
    assert got == {e.name: e.data for e in a3.entries}
    assert set(zip_members(root / LAYOUT.archive_zip("targets", "train_7"))) == {f"train_7/{i}.jpg" for i in ids7}
    assert not list(root.rglob("*.tar.gz")) and not list(root.rglob("*.part*"))  # downloads removed after success

    ledger = read_set(storage, "targets")
    assert ledger.schema.equals(LEDGER_SCHEMA)
    rows = {r["row"]: r for r in ledger.to_pylist()}
    assert sorted(rows) == list(range(10))  # every plan row exactly once, nothing else
    assert rows[5]["outcome"] == "missing_from_archive" and "train_3.tar.gz" in rows[5]["reason"]
    ok = rows[0]
    assert ok["outcome"] == "ok" and ok["shard"] == 3 and ok["image_id"] == ids3[0]
    assert ok["location"] == f"targets/images/train_3.zip:train_3/{ids3[0]}.jpg"
    assert ok["source"] == "archive:train_3.tar.gz" and ok["url"] == f"s3://{BUCKET}/tar/train_3.tar.gz"
    assert (ok["stored_width"], ok["stored_height"]) == (48, 32)
    assert rows[6]["shard"] == 7
    assert archive_done(storage, "targets", "train_3") and archive_done(storage, "targets", "train_7")


def test_validation_streams_from_s3_without_any_tar_on_disk(tmp_path: Path) -> None:
    ids = image_ids(8, seed=4)
    archive = images_archive("validation", ids)
    storage = Storage(str(tmp_path / "root"))
    write_plan(storage, "validation", ids)
    with moto_s3() as endpoint:
        upload(endpoint, BUCKET, "tar/", [archive])
        summary = build_archive_set(
            storage,
            "validation",
            ArchiveSettings(
                s3_endpoint=endpoint,
                stream=True,
                transfer=TransferSettings(allow_private_networks=True, part_size=700, connections=4),
            ),
        )
    assert summary.ok, summary.to_dict()
    assert summary.archives[0].shard == 0
    root = tmp_path / "root"
    assert files_under(root / "validation") == {"images", "images/validation.zip"}
    assert zip_members(root / "validation/images/validation.zip") == {e.name: e.data for e in archive.entries}
    assert outcomes(storage, "validation") == {"ok": 8}
    assert summary.archives[0].sha256 == archive.sha256


def test_rerun_skips_done_archives_without_touching_the_network(tmp_path: Path) -> None:
    ids = image_ids(5, "a", seed=5)
    archive = images_archive("train_a", ids)
    storage = Storage(str(tmp_path / "root"))
    write_plan(storage, "targets", ids)
    with RangeServer({archive.name: archive.data}) as server:
        settings = ArchiveSettings(
            source=server.base_url, transfer=TransferSettings(allow_private_networks=True, part_size=512)
        )
        first = build_archive_set(storage, "targets", settings)
        served = server.bytes_served
        again = build_archive_set(storage, "targets", settings)
    assert first.archives[0].status == "converted" and served == len(archive.data)
    assert again.archives[0].status == "done_before"
    assert server.bytes_served == served  # not a byte more
    assert "ETag (the MD5 of the content)" in first.archives[0].verification


def test_keep_tar_leaves_the_verified_archive_where_feature_extraction_reads_it(tmp_path: Path) -> None:
    ids = image_ids(4, seed=6)
    archive = images_archive("validation", ids)
    storage = Storage(str(tmp_path / "root"))
    write_plan(storage, "validation", ids)
    with RangeServer({archive.name: archive.data}) as server:
        build_archive_set(
            storage,
            "validation",
            ArchiveSettings(
                source=server.base_url, keep_tar=True, transfer=TransferSettings(allow_private_networks=True)
            ),
        )
    kept = tmp_path / "root" / LAYOUT.archive_tar("validation", "validation")
    assert kept.read_bytes() == archive.data

    # From a local folder, --keep-tar copies the archive into the root in the same single pass.
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / archive.name).write_bytes(archive.data)
    other = Storage(str(tmp_path / "other"))
    write_plan(other, "validation", ids)
    summary = build_archive_set(other, "validation", ArchiveSettings(source=str(folder), keep_tar=True))
    assert summary.ok
    assert (tmp_path / "other" / LAYOUT.archive_tar("validation", "validation")).read_bytes() == archive.data
    assert (folder / archive.name).read_bytes() == archive.data  # the source folder is never modified
    assert "verified by size only" in summary.archives[0].verification


def test_hostile_members_are_refused_one_by_one_and_nothing_is_written_outside_the_root(tmp_path: Path) -> None:
    ids = image_ids(5, "7", seed=7)
    good = [Entry(f"train_7/{i}.jpg", jpeg(k)) for k, i in enumerate(ids[:3])]
    big_id, link_id = ids[3], ids[4]
    hostile = [
        Entry("../escape.jpg", jpeg(10)),
        Entry("train_7/../../escape2.jpg", jpeg(11)),
        Entry("/tmp/abs.jpg", jpeg(12)),
        Entry(f"train_7/{link_id}.jpg", kind="symlink", linkname="/etc/passwd"),
        Entry("train_7/hard.jpg", kind="hardlink", linkname="../../etc/passwd"),
        Entry("train_7/dev", kind="chardev"),
        Entry("train_7/pipe", kind="fifo"),
        Entry("train_7/NOT-HEX.jpg", jpeg(13)),
        Entry("train_7/" + "ab" * 80 + ".jpg", jpeg(14)),  # > 100 chars: a GNU long-name header
        Entry(f"train_7/{image_ids(1, '5', seed=8)[0]}.jpg", jpeg(15)),  # belongs in train_5
        Entry(f"train_7/{big_id}.jpg", jpeg(16, (400, 400)) + b"\0" * 3000),  # over the cap below
        Entry(f"train_7/{ids[0]}.jpg", jpeg(17)),  # a duplicate of a good member
        Entry("train_7/subdir", kind="dir"),
    ]
    archive = make_archive("train_7", good + hostile)
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / archive.name).write_bytes(archive.data)
    storage = Storage(str(tmp_path / "root"))
    write_plan(storage, "targets", ids)
    before = files_under(tmp_path)
    summary = build_archive_set(storage, "targets", ArchiveSettings(source=str(folder), max_member_bytes=4000))

    assert summary.ok, summary.to_dict()
    written = files_under(tmp_path) - before
    assert all(p.startswith("root/") for p in written), written
    assert not [p for p in files_under(tmp_path) if "escape" in p or "abs.jpg" in p]
    assert not Path("/tmp/abs.jpg").exists()
    zipped = zip_members(tmp_path / "root" / LAYOUT.archive_zip("targets", "train_7"))
    assert zipped == {e.name: e.data for e in good}

    table = read_shard(storage, "targets", 7).to_pylist()
    by_row = {r["row"]: r for r in table}
    assert len(table) == 3 + len(hostile)  # 3 stored, one row per refused member; the 2 plan rows among them
    assert by_row[3]["outcome"] == "hostile_member" and "exceeds the member cap of 4,000" in by_row[3]["reason"]
    assert by_row[4]["outcome"] == "hostile_member" and "symlink" in by_row[4]["reason"]
    refused = [r for r in table if r["row"] < 0]
    assert all(r["outcome"] == "hostile_member" and r["location"] is None for r in refused)
    reasons = " | ".join(r["reason"] for r in refused)
    for expected in (
        "path traversal ('..') in '../escape.jpg'",
        "path traversal ('..') in 'train_7/../../escape2.jpg'",
        "absolute path '/tmp/abs.jpg'",
        "hard link 'train_7/hard.jpg'",
        "chardev 'train_7/dev' refused",
        "fifo 'train_7/pipe' refused",
        "'train_7/NOT-HEX.jpg' is not train_7/<16 lowercase hex>.jpg",
        "belongs in train_5",
        "duplicate member",
        "unexpected directory 'train_7/subdir/'",
    ):
        assert expected in reasons, expected
    # negative rows are unique, stable and say which member they were (tar position 1 + index: dir entry first)
    assert len({r["row"] for r in refused}) == len(refused)
    assert max(r["row"] for r in refused) <= negative_row(7, 0)


def test_corrupt_gzip_stream_names_the_archive_and_offset_after_the_fallback_decoder_fails(tmp_path: Path) -> None:
    ids = image_ids(30, "3", seed=9)
    archive = images_archive("train_3", ids)
    damaged = bytearray(archive.data)
    at = 40  # inside the first deflate block's code tables: inflaters reject it within a few bytes
    damaged[at : at + 8] = b"\xff" * 8
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "train_3.tar.gz").write_bytes(bytes(damaged))
    storage = Storage(str(tmp_path / "root"))
    write_plan(storage, "targets", ids)
    summary = build_archive_set(storage, "targets", ArchiveSettings(source=str(folder), decoders=("isal", "zlib")))

    report = summary.archives[0]
    assert report.status == "failed"
    assert report.error.startswith("train_3.tar.gz: corrupt gzip stream, every decoder failed")
    assert "isal:" in report.error and "zlib:" in report.error  # the fallback was tried
    # zlib replays the failing block byte by byte: the exact byte where the stream stopped making sense
    exact = re.search(r"zlib: invalid [^;]* at compressed byte ([\d,]+)\)", report.error)
    assert exact and at <= int(exact.group(1).replace(",", "")) < at + 200, report.error
    # isal cannot replay its state: it names the block it rejected
    assert re.search(r"isal: .* at compressed bytes 0\.\.[\d,]+;", report.error), report.error
    assert not (tmp_path / "root" / LAYOUT.archive_zip("targets", "train_3")).exists()
    assert not [p for p in files_under(tmp_path / "root") if ".oiv4tmp-" in p]
    assert read_set(storage, "targets").num_rows == 0  # nothing recorded: a re-run tries again


def test_truncated_archive_is_reported_as_incomplete(tmp_path: Path) -> None:
    ids = image_ids(10, seed=10)
    archive = images_archive("validation", ids)
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / archive.name).write_bytes(archive.data[: len(archive.data) // 2])
    storage = Storage(str(tmp_path / "root"))
    write_plan(storage, "validation", ids)
    report = build_archive_set(storage, "validation", ArchiveSettings(source=str(folder))).archives[0]
    assert report.status == "failed"
    assert f"at compressed byte {len(archive.data) // 2:,}" in report.error
    assert "truncated archive" in report.error


def test_size_mismatch_with_the_published_table_fails_before_downloading(tmp_path: Path) -> None:
    ids = image_ids(3, seed=11)
    archive = images_archive("validation", ids)
    storage = Storage(str(tmp_path / "root"))
    write_plan(storage, "validation", ids)
    table = {archive.name: KnownArchive(archive.name, len(archive.data) + 1, archive.sha256)}
    with RangeServer({archive.name: archive.data}) as server:
        settings = ArchiveSettings(
            source=server.base_url,
            known=table,
            require_published=True,
            transfer=TransferSettings(allow_private_networks=True),
        )
        report = build_archive_set(storage, "validation", settings).archives[0]
        assert server.gets == 0
    assert report.status == "failed"
    assert report.error == (
        f"validation.tar.gz: is {len(archive.data):,} bytes at {server.base_url}validation.tar.gz, "
        f"the published size is {len(archive.data) + 1:,}: not the published archive"
    )


def test_sha256_mismatch_is_a_clear_error_and_the_bad_download_is_deleted(tmp_path: Path) -> None:
    ids = image_ids(3, seed=12)
    archive = images_archive("validation", ids)
    storage = Storage(str(tmp_path / "root"))
    write_plan(storage, "validation", ids)
    table = {archive.name: KnownArchive(archive.name, len(archive.data), "0" * 64)}
    with RangeServer({archive.name: archive.data}) as server:
        report = build_archive_set(
            storage,
            "validation",
            ArchiveSettings(
                source=server.base_url, known=table, transfer=TransferSettings(allow_private_networks=True)
            ),
        ).archives[0]
    assert report.status == "failed"
    assert f"SHA-256 is {archive.sha256}, the published one is {'0' * 64}: corrupt copy" in report.error
    assert "the download was deleted, re-run to fetch it again" in report.error
    assert files_under(tmp_path / "root" / "validation") == {"images"}  # no zip, no tar.gz
    assert read_set(storage, "validation").num_rows == 0

    # The same archive, with its true digest in the table, is accepted and says how it was verified.
    table = {archive.name: KnownArchive(archive.name, len(archive.data), archive.sha256)}
    with RangeServer({archive.name: archive.data}) as server:
        summary = build_archive_set(
            storage,
            "validation",
            ArchiveSettings(
                source=server.base_url, known=table, transfer=TransferSettings(allow_private_networks=True)
            ),
        )
    assert summary.archives[0].verification == "size and SHA-256 match the published table"


def test_the_real_bucket_demands_the_published_table_and_ships_it() -> None:
    from oiv4.stages.archives import load_known_archives
    from oiv4.stages.archives.sources import make_source

    table = load_known_archives()
    assert len(table) == 18 and table["validation.tar.gz"].bytes == 12_844_530_798
    assert table["train_0.tar.gz"].sha256 == "0cf97b0666d4c11e0ba8c2380816f2bf09c9f7750abebd658bd9204d0aa10397"
    assert make_source("s3://open-images-dataset/tar/").official
    assert make_source("https://open-images-dataset.s3.amazonaws.com/tar/").official
    assert not make_source("s3://open-images-dataset/tar/", s3_endpoint="http://127.0.0.1:9").official


def test_missing_archive_at_the_source_fails_that_archive_only(tmp_path: Path) -> None:
    ids = image_ids(2, "1", seed=13) + image_ids(2, "2", seed=14)
    present = images_archive("train_2", ids[2:])
    storage = Storage(str(tmp_path / "root"))
    write_plan(storage, "targets", ids)
    with moto_s3() as endpoint:
        upload(endpoint, BUCKET, "tar/", [present])
        summary = build_archive_set(
            storage,
            "targets",
            ArchiveSettings(s3_endpoint=endpoint, transfer=TransferSettings(allow_private_networks=True)),
        )
    status = {a.name: (a.status, a.error) for a in summary.archives}
    assert status["train_2.tar.gz"] == ("converted", None)
    assert status["train_1.tar.gz"] == (
        "failed",
        f"train_1.tar.gz: s3://{BUCKET}/tar/train_1.tar.gz does not exist (404)",
    )


def test_cli_builds_a_set_and_exits_non_zero_when_an_archive_fails(tmp_path: Path) -> None:
    ids = image_ids(3, seed=15)
    archive = images_archive("validation", ids)
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / archive.name).write_bytes(archive.data)
    storage = Storage(str(tmp_path / "root"))
    write_plan(storage, "validation", ids)
    runner = CliRunner()
    ok = runner.invoke(
        app, ["archives", "validation", "--root", str(tmp_path / "root"), "--source", str(folder), "--json"]
    )
    assert ok.exit_code == 0, ok.output
    summary = json.loads(ok.stdout[ok.stdout.index("{") :])
    assert summary["ok"] and summary["outcomes"] == {"ok": 3}

    (folder / archive.name).write_bytes(b"not gzip at all")
    other = Storage(str(tmp_path / "other"))
    write_plan(other, "validation", ids)
    bad = runner.invoke(app, ["archives", "validation", "--root", str(tmp_path / "other"), "--source", str(folder)])
    assert bad.exit_code == 1
    assert "1 archive(s) failed" in bad.output

    (tmp_path / "empty" / "metadata").mkdir(parents=True)  # an oiv4 root without a plan
    no_plan = runner.invoke(app, ["archives", "targets", "--root", str(tmp_path / "empty"), "--source", str(folder)])
    assert no_plan.exit_code == 2 and "run `oiv4 plan` first" in no_plan.output


@pytest.mark.parametrize("decoder", ["zlib-ng", "isal", "zlib"])
def test_every_decoder_gives_the_same_zip(tmp_path: Path, decoder: str) -> None:
    ids = image_ids(12, "c", seed=16)
    archive = images_archive("train_c", ids)
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / archive.name).write_bytes(archive.data)
    storage = Storage(str(tmp_path / "root"))
    write_plan(storage, "targets", ids)
    summary = build_archive_set(storage, "targets", ArchiveSettings(source=str(folder), decoders=(decoder,)))
    assert summary.archives[0].decoder == decoder
    zipped = zip_members(tmp_path / "root" / LAYOUT.archive_zip("targets", "train_c"))
    assert {n: hashlib.md5(d).hexdigest() for n, d in zipped.items()} == {
        e.name: hashlib.md5(e.data).hexdigest() for e in archive.entries
    }


@pytest.mark.parametrize("stream", [False, True])
def test_a_disk_too_small_fails_before_any_byte_is_downloaded(tmp_path: Path, stream: bool) -> None:
    ids = image_ids(2, seed=17)
    archive = images_archive("validation", ids)
    storage = Storage(str(tmp_path / "root"))
    write_plan(storage, "validation", ids)
    huge = 1 << 60  # no disk has an exabyte free
    with RangeServer({archive.name: archive.data}, head_sizes={archive.name: huge}) as server:
        report = build_archive_set(
            storage,
            "validation",
            ArchiveSettings(
                source=server.base_url, stream=stream, transfer=TransferSettings(allow_private_networks=True)
            ),
        ).archives[0]
        assert server.gets == 0
    assert report.status == "failed"
    if stream:  # nothing to download to disk, but the zip needs room
        assert f"needs about {int(huge * 1.01):,} bytes of free disk for the zip" in report.error
    else:
        assert f"needs {huge:,} more bytes of disk at {tmp_path / 'root/validation/images'}" in report.error


def test_archives_run_as_shards_on_the_local_executor(tmp_path: Path) -> None:
    from oiv4.contracts.schema import ImageSet
    from oiv4.run.executor import ExecutorSettings, run_shards
    from oiv4.stages.archives import run_archive_shard
    from oiv4.stages.base import ShardTask

    ids3, ids7 = image_ids(3, "3", seed=30), image_ids(2, "7", seed=31)
    folder = tmp_path / "src"
    folder.mkdir()
    for a in (images_archive("train_3", ids3), images_archive("train_7", ids7)):
        (folder / a.name).write_bytes(a.data)
    root = tmp_path / "root"
    write_plan(Storage(str(root)), "targets", ids3 + ids7)
    settings = ArchiveSettings(source=str(folder))
    tasks = [
        ShardTask("archives", ImageSet.targets, shard, 0, 0, Storage(str(root)), settings, name=stem)
        for stem, shard in (("train_3", 3), ("train_7", 7))
    ]
    results = run_shards(tasks, run_archive_shard, ExecutorSettings(workers=2))
    assert sorted((r.shard, dict(r.outcomes)) for r in results) == [(3, {"ok": 3}), (7, {"ok": 2})]
    assert sorted(read_set(Storage(str(root)), "targets")["row"].to_pylist()) == list(range(5))


def test_streaming_into_an_s3_root_writes_the_zip_and_ledger_there(tmp_path: Path) -> None:
    import boto3

    ids = image_ids(6, "e", seed=32)
    archive = images_archive("train_e", ids)
    with moto_s3() as endpoint:
        upload(endpoint, BUCKET, "tar/", [archive])
        boto3.session.Session().client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        ).create_bucket(Bucket="results")
        storage = Storage("s3://results/oi", {"endpoint_url": endpoint, "key": "x", "secret": "x"})
        write_plan(storage, "targets", ids)
        settings = ArchiveSettings(
            s3_endpoint=endpoint, transfer=TransferSettings(allow_private_networks=True, part_size=2048)
        )
        refused = build_archive_set(storage, "targets", settings).archives[0]
        summary = build_archive_set(storage, "targets", replace(settings, stream=True))
        assert summary.ok, summary.to_dict()
        with storage.open(LAYOUT.archive_zip("targets", "train_e")) as fh, zipfile.ZipFile(fh) as zf:
            assert {n: zf.read(n) for n in zf.namelist()} == {e.name: e.data for e in archive.entries}
        assert outcomes(storage, "targets") == {"ok": 6}
        assert archive_done(storage, "targets", "train_e")
    assert refused.status == "failed" and "use stream=True (--stream) for a remote root" in refused.error


def test_a_good_copy_after_a_refused_one_takes_the_plan_row(tmp_path: Path) -> None:
    (image_id,) = image_ids(1, "4", seed=33)
    name = f"train_4/{image_id}.jpg"
    archive = make_archive("train_4", [Entry(name, kind="symlink", linkname="/etc/shadow"), Entry(name, jpeg(5))])
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / archive.name).write_bytes(archive.data)
    storage = Storage(str(tmp_path / "root"))
    write_plan(storage, "targets", [image_id])
    assert build_archive_set(storage, "targets", ArchiveSettings(source=str(folder))).ok
    rows = sorted(read_set(storage, "targets").to_pylist(), key=lambda r: r["row"])
    assert [(r["row"], r["outcome"]) for r in rows] == [(negative_row(4, 1), "hostile_member"), (0, "ok")]
    assert zip_members(tmp_path / "root" / LAYOUT.archive_zip("targets", "train_4")) == {name: jpeg(5)}
