"""oiv4.open(root): the same API over folders, shard zips, webdataset tars and the CVDF archive zips."""

from __future__ import annotations

import multiprocessing
import pickle
import zipfile
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import timedelta

import pyarrow as pa
import pytest
from PIL import Image

import oiv4
from oiv4.contracts.errors import BadArchiveError, BadLocationError, CorruptImageError, ImageNotFoundError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.io.containers import BlobReader, index_zip
from oiv4.io.ledger_write import append_rows
from oiv4.io.locations import parse_location
from oiv4.io.storage import Storage
from support.layout_builder import LAYOUTS, T0, build_set, make_jpeg
from support.moto import moto_s3


def _set_name(layout: str) -> str:
    return "validation" if layout == "archive_zip" else "train"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_reads_back_the_stored_bytes_in_plan_order(tmp_path, layout):
    name = _set_name(layout)
    built = build_set(tmp_path, name, 30, layout, fail_every=4, shard_rows=7)

    ds = oiv4.open(tmp_path)
    assert list(ds.sets) == [name]
    s = ds[name]
    assert len(s) == len(built.ok_ids) == 23
    assert s.ids() == built.ok_ids
    assert s.layout == ("tar" if layout == "shard_tar" else "folder" if layout == "folder" else "zip")
    for image_id in built.ok_ids:
        assert s.read_bytes(image_id) == built.images[image_id]
        assert image_id in s
    first = s[built.ok_ids[0]]
    assert isinstance(first, Image.Image)
    assert first.size == built.sizes[built.ok_ids[0]]
    assert [i for i, _ in s] == built.ok_ids
    assert [i for i, _ in s.iter_bytes()] == built.ok_ids
    assert s[0].size == first.size  # positions index plan order too


@pytest.mark.parametrize("layout", LAYOUTS)
def test_manifest_joins_every_plan_row_with_its_outcome(tmp_path, layout):
    name = _set_name(layout)
    built = build_set(tmp_path, name, 20, layout, fail_every=3)

    m = oiv4.open(tmp_path)[name].manifest
    assert isinstance(m, pa.Table)
    assert m.num_rows == 20
    assert m["ImageID"].to_pylist() == built.plan_ids
    assert m["row"].to_pylist() == list(range(20))
    for col in ("OriginalURL", "OriginalMD5", "Rotation", "outcome", "reason", "location", "stored_bytes"):
        assert col in m.column_names
    outcomes = dict(zip(m["ImageID"].to_pylist(), m["outcome"].to_pylist(), strict=True))
    assert {i for i, o in outcomes.items() if o != "ok"} == set(built.failed)
    import duckdb

    counts = dict(duckdb.sql("SELECT outcome, count(*) FROM m GROUP BY outcome").fetchall())
    assert counts["ok"] == len(built.ok_ids)


def test_failed_image_lookup_says_which_outcome_and_why(tmp_path):
    built = build_set(tmp_path, "train", 12, "folder", fail_every=4)
    failed_id, outcome = next(iter(built.failed.items()))
    s = oiv4.open(tmp_path)["train"]

    with pytest.raises(ImageNotFoundError, match=f"{failed_id}.*{outcome} \\(.+\\)") as exc:
        s.read_bytes(failed_id)
    assert "None" not in str(exc.value)  # the ledger's reason is quoted
    assert isinstance(exc.value, KeyError)
    assert failed_id not in s
    assert s.get(failed_id) is None
    with pytest.raises(KeyError, match="not in set train"):
        s["ffffffffffffffff"]


@pytest.mark.parametrize("hostile", ["../../etc/passwd", "ABCDEF0123456789", "", "0" * 17, "g" * 16])
def test_hostile_image_ids_are_a_clean_miss(tmp_path, hostile):
    build_set(tmp_path, "train", 5, "folder")
    s = oiv4.open(tmp_path)["train"]
    assert hostile not in s
    with pytest.raises(ImageNotFoundError, match="not an ImageID"):
        s.read_bytes(hostile)


@pytest.mark.parametrize(
    "location", ["/etc/passwd", "../x.jpg", "train/../../x.jpg", "a.zip:../x", "a.tar.gz:x.jpg", "a.rar:x.jpg"]
)
def test_hostile_ledger_locations_are_refused(location):
    with pytest.raises(BadLocationError):
        parse_location(location)


def test_unknown_set_names_list_the_sets_present(tmp_path):
    build_set(tmp_path, "validation", 4, "archive_zip")
    ds = oiv4.open(tmp_path)
    with pytest.raises(KeyError, match="sets present: validation"):
        ds["train"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        oiv4.open(tmp_path / "nope")


def test_deflated_archive_zip_with_directory_entries_reads_like_the_notebook_made_it(tmp_path):
    built = build_set(tmp_path, "targets", 40, "archive_zip", deflate=True)
    s = oiv4.open(tmp_path)["targets"]
    assert len(s) == 40
    assert all(s.read_bytes(i) == built.images[i] for i in built.ok_ids)
    assert s.location(built.ok_ids[0]).container == LAYOUT.archive_zip("targets", f"train_{built.ok_ids[0][0]}")


def test_zip64_central_directory_is_indexed_like_zipfile_does(tmp_path, monkeypatch):
    # Shrinking the stdlib's Zip64 threshold makes zipfile write real Zip64 records for a tiny file:
    # the offsets and sizes then live in the Zip64 extra fields and end record, as in a 50 GB archive.
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 64)
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 3)
    payloads = {f"validation/{i:016x}.jpg": make_jpeg(i) for i in range(6)}
    path = tmp_path / "z.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in payloads.items():
            zf.writestr(name, data)
    raw = path.read_bytes()
    assert b"PK\x06\x06" in raw  # the Zip64 end record is really there

    index = index_zip(lambda o, n: raw[o : o + n], len(raw), "z.zip")
    with zipfile.ZipFile(path) as zf:
        assert {k: (v.offset, v.size) for k, v in index.items()} == {
            i.filename: (i.header_offset, i.file_size) for i in zf.infolist()
        }
    blobs = BlobReader(Storage(str(tmp_path)))
    for name, data in payloads.items():
        assert blobs.read(parse_location(f"z.zip:{name}")) == data


def test_a_retry_that_succeeded_supersedes_the_failure_it_retried(tmp_path):
    built = build_set(tmp_path, "train", 8, "folder", fail_every=4)
    failed_id = next(iter(built.failed))
    row = built.plan_ids.index(failed_id)
    data = make_jpeg(999)
    loc = LAYOUT.image("train", failed_id)
    storage = Storage(str(tmp_path))
    storage.write_bytes(loc, data)
    append_rows(
        storage,
        ImageSet.train,
        row // 8,
        [
            {
                "image_id": failed_id,
                "row": row,
                "outcome": "ok",
                "reason": "retried",
                "location": loc,
                "stored_bytes": len(data),
                "started_at": T0 + timedelta(days=1),
            }
        ],
    )
    s = oiv4.open(tmp_path)["train"]
    assert s.read_bytes(failed_id) == data
    assert len(s) == len(built.ok_ids) + 1
    assert s.ids().index(failed_id) == sorted([*built.ok_ids, failed_id], key=built.plan_ids.index).index(failed_id)


def test_sets_built_without_a_ledger_are_found_from_their_files(tmp_path):
    # The old notebook left folders and converted zips but no ledger: they must still open.
    train = build_set(tmp_path, "train", 10, "folder", with_ledger=False)
    val = build_set(tmp_path, "validation", 10, "archive_zip", with_ledger=False, with_plan=False)
    ds = oiv4.open(tmp_path)
    assert ds["train"].ids() == train.ok_ids  # plan order, from the plan
    assert sorted(ds["validation"].ids()) == sorted(val.ok_ids)
    assert ds["validation"].read_bytes(val.ok_ids[3]) == val.images[val.ok_ids[3]]
    assert ds["train"].manifest.num_rows == 10


def test_damaged_zip_member_raises_corrupt_image_error(tmp_path):
    built = build_set(tmp_path, "train", 6, "shard_zip", shard_rows=6)
    victim = built.ok_ids[2]
    zpath = tmp_path / LAYOUT.shard_zip("train", 0)
    raw = bytearray(zpath.read_bytes())
    at = raw.find(built.images[victim]) + 200
    raw[at : at + 8] = b"\x00garbage"
    zpath.write_bytes(bytes(raw))

    s = oiv4.open(tmp_path)["train"]
    with pytest.raises(CorruptImageError, match="CRC"):
        s.read_bytes(victim)
    assert s.read_bytes(built.ok_ids[0]) == built.images[built.ok_ids[0]]


def test_garbage_file_raises_corrupt_image_error_on_decode(tmp_path):
    built = build_set(tmp_path, "train", 4, "folder")
    (tmp_path / built.locations[built.ok_ids[1]]).write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(CorruptImageError, match="not an image"):
        oiv4.open(tmp_path)["train"][built.ok_ids[1]]


def test_truncated_tar_and_zip_are_bad_archives_not_tracebacks(tmp_path):
    built = build_set(tmp_path, "train", 6, "shard_tar", shard_rows=6)
    tpath = tmp_path / LAYOUT.shard_tar("train", 0)
    tpath.write_bytes(tpath.read_bytes()[:1500])
    with pytest.raises(BadArchiveError, match=r"train-00000\.tar"):
        oiv4.open(tmp_path)["train"].read_bytes(built.ok_ids[-1])

    built = build_set(tmp_path / "z", "validation", 6, "archive_zip")
    zpath = tmp_path / "z" / LAYOUT.archive_zip("validation", "validation")
    zpath.write_bytes(zpath.read_bytes()[:-30])
    with pytest.raises(BadArchiveError, match="end-of-central-directory"):
        oiv4.open(tmp_path / "z")["validation"].read_bytes(built.ok_ids[0])


def test_concurrent_reads_from_threads_return_the_right_bytes(tmp_path):
    built = build_set(tmp_path, "targets", 64, "archive_zip")
    s = oiv4.open(tmp_path)["targets"]
    ids = built.ok_ids * 4
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(s.read_bytes, ids))
    assert got == [built.images[i] for i in ids]


def _read_all(ds) -> list[tuple[str, tuple[int, int]]]:
    return [(ds[i][0], ds[i][1].size) for i in range(len(ds))]


def test_torch_adapter_pickles_to_spawned_workers_and_yields_ids_with_rgb_images(tmp_path):
    built = build_set(tmp_path, "validation", 12, "archive_zip", fail_every=5)
    tds = oiv4.open(tmp_path)["validation"].torch(with_ids=True)
    assert len(tds) == len(built.ok_ids)
    image_id, img = tds[0]
    assert image_id == built.ok_ids[0]
    assert img.mode == "RGB"
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        remote = pool.submit(_read_all, tds).result()
    assert remote == [(i, built.sizes[i]) for i in built.ok_ids]

    sized = oiv4.open(tmp_path)["validation"].torch(transform=lambda im: im.resize((8, 8)).tobytes())
    assert len(sized[1]) == 8 * 8 * 3
    assert (
        pickle.loads(pickle.dumps(oiv4.open(tmp_path)["validation"])).read_bytes(built.ok_ids[1])
        == built.images[built.ok_ids[1]]
    )


def test_s3_root_reads_through_fsspec(tmp_path):
    built = build_set(tmp_path, "train", 9, "shard_zip", fail_every=4, shard_rows=4)
    build_set(tmp_path, "validation", 5, "archive_zip")
    with moto_s3() as endpoint:
        opts = {
            "key": "test",
            "secret": "test",
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
        import boto3
        import s3fs

        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        ).create_bucket(Bucket="bucket")
        fs = s3fs.S3FileSystem(**opts)
        fs.put(f"{tmp_path}/", "bucket/root/", recursive=True)

        ds = oiv4.open("s3://bucket/root", **opts)
        assert set(ds.sets) == {"train", "validation"}
        s = ds["train"]
        assert s.ids() == built.ok_ids
        assert all(s.read_bytes(i) == built.images[i] for i in built.ok_ids)
        assert s.manifest.num_rows == 9
        assert ds["validation"][0].size[0] > 0

        # verify and report work on the same root through fsspec too
        from oiv4.report import build_report
        from oiv4.stages.verify import VerifySettings, verify

        report = verify(Storage("s3://bucket/root", opts), VerifySettings(deep=True))
        assert report.ok and report.problems == []
        assert [c.intact for c in report.sets] == [5, len(built.ok_ids)]
        assert build_report(Storage("s3://bucket/root", opts)) == "s3://bucket/root/report/index.html"
        assert b"<svg" in fs.cat_file("bucket/root/report/index.html")


def test_dataset_is_a_context_manager_and_reprs_its_sets(tmp_path):
    build_set(tmp_path, "train", 3, "folder")
    with oiv4.open(tmp_path) as ds:
        assert "train" in repr(ds)
        assert "3 images" in repr(ds["train"])
        assert "train" in ds
        assert list(ds) == ["train"]


def test_webdataset_locations_may_name_the_sample_key_or_the_member(tmp_path):
    keyed = build_set(tmp_path / "k", "train", 6, "shard_tar")
    named = build_set(tmp_path / "m", "train", 6, "shard_tar", tar_member_locations=True)
    assert keyed.locations[keyed.ok_ids[0]].endswith(keyed.ok_ids[0])
    for root, built in ((tmp_path / "k", keyed), (tmp_path / "m", named)):
        s = oiv4.open(root)["train"]
        assert [s.read_bytes(i) for i in s.ids()] == [built.images[i] for i in built.ok_ids]


def test_images_staged_before_their_shard_archive_was_packed_are_still_readable(tmp_path):
    # A fetch killed before packing leaves ok rows pointing at a zip that does not exist yet, and the
    # images in <set>/staging/shard-NNNNN/: reading must not lose them.
    built = build_set(tmp_path, "train", 8, "shard_zip", shard_rows=4)
    zpath = tmp_path / LAYOUT.shard_zip("train", 1)
    zpath.unlink()
    storage = Storage(str(tmp_path))
    for image_id in built.ok_ids[4:]:
        storage.write_bytes(f"train/staging/shard-00001/{image_id}.jpg", built.images[image_id])
    s = oiv4.open(tmp_path)["train"]
    assert [s.read_bytes(i) for i in s.ids()] == [built.images[i] for i in built.ok_ids]


def test_staged_path_matches_where_the_fetch_stage_stages_images(tmp_path):
    from oiv4.io.locations import staged_path
    from oiv4.io.store import shard_writer

    for layout in ("zip", "webdataset"):
        writer = shard_writer(layout, Storage(str(tmp_path)), "extended_targets", 12)
        assert staged_path("extended_targets", 12, "0123456789abcdef") == writer.staged_path("0123456789abcdef")
