"""Output layouts: staged images packed into deterministic, readable per-shard zips and webdataset tars."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import zipfile

import pytest

from oiv4.contracts.errors import HostileIdError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.io.storage import TMP_MARK, Storage
from oiv4.io.store import remove_stale_temps, shard_writer

IDS = [f"{i:016x}" for i in (0xA1, 0x3B, 0xFF00, 0x12)]  # manifest order, deliberately not sorted


def _rows(ids: list[str]) -> list[dict]:
    return [{"ImageID": i, "OriginalMD5": f"md5-of-{i}", "Rotation": float("nan"), "row": n} for n, i in enumerate(ids)]


def _jpeg(i: str) -> bytes:
    return b"\xff\xd8" + i.encode() * 50 + b"\xff\xd9"


def _pack(root, layout: str, ids: list[str], put_order: list[str] | None = None) -> Storage:
    storage = Storage(str(root))
    w = shard_writer(layout, storage, ImageSet.train, 3)
    for i in put_order or ids:
        w.put(i, _jpeg(i))
    w.finalize(_rows(ids))
    return storage


@pytest.mark.parametrize("layout", ["zip", "webdataset"])
def test_archives_are_byte_identical_for_the_same_images(tmp_path, layout):
    a = _pack(tmp_path / "a", layout, IDS)
    b = _pack(tmp_path / "b", layout, IDS, put_order=list(reversed(IDS)))  # finished in another order
    rel = LAYOUT.shard_zip("train", 3) if layout == "zip" else LAYOUT.shard_tar("train", 3)
    assert a.read_bytes(rel) == b.read_bytes(rel)
    assert not (tmp_path / "a" / "train" / "staging").exists()


def test_zip_members_are_stored_in_manifest_order(tmp_path):
    storage = _pack(tmp_path, "zip", IDS)
    with zipfile.ZipFile(storage.local_path(LAYOUT.shard_zip("train", 3))) as zf:
        assert zf.namelist() == [f"{i}.jpg" for i in IDS]
        assert all(zf.getinfo(n).compress_type == zipfile.ZIP_STORED for n in zf.namelist())
        assert zf.read(f"{IDS[1]}.jpg") == _jpeg(IDS[1]) and zf.testzip() is None


def test_webdataset_keys_pair_the_jpeg_with_its_metadata(tmp_path):
    storage = _pack(tmp_path, "webdataset", IDS)
    with tarfile.open(storage.local_path(LAYOUT.shard_tar("train", 3))) as tf:
        assert tf.getnames() == [f"{i}.{ext}" for i in IDS for ext in ("jpg", "json")]
        meta = json.loads(tf.extractfile(f"{IDS[2]}.json").read())
        assert meta == {"ImageID": IDS[2], "OriginalMD5": f"md5-of-{IDS[2]}", "Rotation": None, "row": 2}
        assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in tf.getmembers())


@pytest.mark.parametrize("layout", ["zip", "webdataset"])
def test_repacking_keeps_old_members_and_adds_new_ones_atomically(tmp_path, layout):
    storage = _pack(tmp_path, layout, IDS[:3])
    w = shard_writer(layout, storage, ImageSet.train, 3)
    rel = w.archive_rel
    path = storage.local_path(rel)
    inode = path.stat().st_ino
    w.finalize(_rows(IDS[:3]))  # nothing new: the archive is not touched
    assert path.stat().st_ino == inode
    assert w.available(IDS) == set(IDS[:3])
    w.put(IDS[3], _jpeg(IDS[3]))  # e.g. a retried failure that now succeeded
    assert w.available(IDS) == set(IDS)
    w.finalize(_rows(IDS))
    assert path.stat().st_ino != inode  # a new file renamed into place, never edited in place
    fresh = _pack(tmp_path / "fresh", layout, IDS)
    assert storage.read_bytes(rel) == fresh.read_bytes(rel)


def test_folder_layout_writes_each_image_at_its_final_path(tmp_path):
    storage = Storage(str(tmp_path))
    w = shard_writer("folder", storage, ImageSet.train, 0)
    loc = w.put(IDS[0], _jpeg(IDS[0]))
    assert loc == LAYOUT.image("train", IDS[0]) == f"train/images/00/{IDS[0]}.jpg"
    assert storage.read_bytes(loc) == _jpeg(IDS[0]) and w.has_staged(IDS[0])


@pytest.mark.parametrize("layout", ["folder", "zip", "webdataset"])
@pytest.mark.parametrize("hostile", ["../../etc/passwd", "0123456789ABCDEF", "0123456789abcde/", "a" * 17])
def test_hostile_ids_never_become_paths_in_any_layout(tmp_path, layout, hostile):
    w = shard_writer(layout, Storage(str(tmp_path / "root")), ImageSet.train, 0)
    with pytest.raises(HostileIdError):
        w.put(hostile, b"x")
    with pytest.raises(HostileIdError):
        w.location(hostile)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_stale_temp_files_of_a_killed_run_are_removed_and_nothing_else(tmp_path):
    storage = Storage(str(tmp_path))
    storage.write_bytes(LAYOUT.image("train", IDS[0]), b"done")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = storage.local_path(LAYOUT.image("train", IDS[1])).with_name(
        f"{IDS[1]}.jpg{TMP_MARK}{int(dead.stdout)}-abcd"
    )
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"half")
    assert remove_stale_temps(storage, "train") == 1
    assert not leftover.exists() and storage.read_bytes(LAYOUT.image("train", IDS[0])) == b"done"


def test_unknown_layout_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown layout"):
        shard_writer("tarball", Storage(str(tmp_path)), ImageSet.train, 0)
