"""Nothing is ever written outside the root: a symlink at any level of the layout is refused, never followed.

The real fetch path (mirror on 127.0.0.1, folder layout) and the ledger writer, with a symlink planted at
`<set>`, `<set>/images`, `<set>/images/<id[:2]>`, the final file, and the ledger folders.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from oiv4.contracts.errors import StorageError, UnsafePath
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.io.ledger_write import append_rows, now_utc
from oiv4.io.manifest import read_manifest
from oiv4.io.storage import Storage
from oiv4.run.executor import ExecutorSettings
from oiv4.run.fetch import fetch_set
from support.fetch_env import SETTINGS, SPEC, copy_root, ledger_rows, planned_root

CLEAN_SPEC = dataclasses.replace(SPEC, seed=31, n_images=40, misbehaviour_fraction=0.0, special_kind_fraction=0.0)
IN_PROCESS = ExecutorSettings(kind="thread", workers=1)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    with planned_root(tmp_path_factory.mktemp("plan"), CLEAN_SPEC, train_size=8, shard_rows=16) as (_, tmp):
        yield tmp  # the mirror keeps serving while the module's tests run


def _outside(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.jpg").write_bytes(b"not yours")
    return outside, {"victim.jpg": b"not yours"}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("level", ["set", "images", "prefix", "file"])
def test_a_symlink_anywhere_above_an_image_is_refused_as_unsafe_path_and_nothing_is_written_outside(
    template, tmp_path, level
):
    storage = copy_root(template, tmp_path / "root")
    root = Path(storage.root)
    outside, before = _outside(tmp_path)
    first = read_manifest(storage, "train", ["ImageID"])["ImageID"][0].as_py()
    link = {
        "set": root / "train",
        "images": root / "train" / "images",
        "prefix": root / "train" / "images" / first[:2],
        "file": root / LAYOUT.image("train", first),
    }[level]
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(outside / "victim.jpg" if level == "file" else outside, link)

    fetch_set(storage, "train", SETTINGS, IN_PROCESS)

    assert _snapshot(outside) == before  # not a byte written (or replaced) outside the root
    assert link.is_symlink()  # refused, not silently replaced
    rows = {r["image_id"]: r for r in ledger_rows(storage, "train")}
    refused = [r for r in rows.values() if r["outcome"] == "unsafe_path"]
    assert rows[first]["outcome"] == "unsafe_path" and "symlink" in rows[first]["reason"]
    if level in ("set", "images"):
        assert len(refused) == len(rows)  # every image of the set was below the link
    else:
        assert [r["image_id"] for r in refused] == [first]  # only the images below the link
        assert all(r["outcome"] == "ok" for i, r in rows.items() if i != first)
    assert all(r["checksum"] is None for r in refused)


def test_a_symlinked_ledger_folder_stops_the_fetch_with_a_clear_error_and_nothing_written_outside(template, tmp_path):
    storage = copy_root(template, tmp_path / "root")
    outside, before = _outside(tmp_path)
    (Path(storage.root) / "ledger").mkdir()
    os.symlink(outside, Path(storage.root) / LAYOUT.ledger_dir("train"))
    # Refused where the first ledger file is written (the shard's recorded settings, or a ledger part): a
    # StorageError (exit code 5 on the CLI) with a one-line message naming the symlink.
    with pytest.raises(StorageError, match="symlink"):
        fetch_set(storage, "train", SETTINGS, IN_PROCESS)
    assert _snapshot(outside) == before


@pytest.mark.parametrize("linked", ["ledger", "ledger/train", "ledger/train/shard-00000.parts"])
def test_the_ledger_writer_refuses_symlinked_folders(tmp_path, linked):
    storage = Storage(str(tmp_path / "root"))
    outside, before = _outside(tmp_path)
    link = Path(storage.root) / linked
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(outside, link)
    row = {"image_id": "0" * 16, "row": 0, "outcome": "ok", "started_at": now_utc()}
    with pytest.raises(UnsafePath, match="symlink"):
        append_rows(storage, ImageSet.train, 0, [row])
    assert _snapshot(outside) == before


@pytest.mark.parametrize("rel", ["../escape.jpg", "train/../../escape.jpg", "/etc/escape", "a\\b.jpg", "a\0b"])
def test_hostile_relative_paths_are_refused_by_storage(tmp_path, rel):
    storage = Storage(str(tmp_path / "root"))
    with pytest.raises(UnsafePath):
        storage.write_bytes(rel, b"x")
    assert not (tmp_path / "escape.jpg").exists()
