"""io.safe_paths: nothing is written outside the root, whatever symlinks or hostile names the tree holds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from oiv4.contracts.errors import UnsafePath
from oiv4.io.safe_paths import open_atomic_under, safe_target, split_relative
from oiv4.io.storage import Storage

IMAGE = "train/images/ab/ab12cd34ef567890.jpg"
LEDGER = "train/ledger/shard-00000.parquet"


@pytest.fixture
def root_and_outside(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    return root, outside


def _everything_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize(
    ("link", "rel"),
    [
        ("train", IMAGE),
        ("train/images", IMAGE),
        ("train/images/ab", IMAGE),
        ("train", LEDGER),
        ("train/ledger", LEDGER),
    ],
)
def test_a_symlinked_folder_at_any_level_of_the_layout_is_refused_and_nothing_lands_outside(
    root_and_outside, link, rel
):
    root, outside = root_and_outside
    (root / link).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(outside, root / link)
    with pytest.raises(UnsafePath, match="symlink"):
        Storage(root).write_bytes(rel, b"jpeg bytes")
    with pytest.raises(UnsafePath, match="symlink"):
        safe_target(root, rel)
    assert _everything_under(outside) == []


@pytest.mark.parametrize("rel", [IMAGE, LEDGER])
def test_a_symlink_at_the_final_file_is_refused_and_its_target_untouched(root_and_outside, rel):
    root, outside = root_and_outside
    victim = outside / "victim"
    victim.write_bytes(b"precious")
    (root / rel).parent.mkdir(parents=True)
    os.symlink(victim, root / rel)
    with pytest.raises(UnsafePath, match="symlink"):
        Storage(root).write_bytes(rel, b"jpeg bytes")
    with pytest.raises(UnsafePath):
        safe_target(root, rel)
    assert victim.read_bytes() == b"precious" and (root / rel).is_symlink()


def test_a_dangling_symlinked_folder_is_refused_rather_than_created_outside(root_and_outside):
    root, outside = root_and_outside
    (root / "train/images").mkdir(parents=True)
    os.symlink(outside / "not-yet", root / "train/images/ab")
    with pytest.raises(UnsafePath):
        Storage(root).write_bytes(IMAGE, b"x")
    assert _everything_under(outside) == []


@pytest.mark.parametrize(
    "rel",
    [
        "",
        "../escape.jpg",
        "train/../../escape.jpg",
        "/etc/passwd",
        "train\\images\\x.jpg",
        "train/x\0.jpg",
        "train//x.jpg",
        "./train/x.jpg",
        "train/images/",
        "train/\nx.jpg",
    ],
)
def test_hostile_names_are_refused_before_touching_the_disk(root_and_outside, rel):
    root, _ = root_and_outside
    with pytest.raises(UnsafePath):
        split_relative(rel)
    with pytest.raises(UnsafePath):
        Storage(root).write_bytes(rel, b"x")
    assert _everything_under(root) == []


def test_a_normal_write_creates_the_folders_and_replaces_atomically(root_and_outside):
    root, _ = root_and_outside
    Storage(root).write_bytes(IMAGE, b"first")
    Storage(root).write_bytes(IMAGE, b"second", fsync=True)
    assert (root / IMAGE).read_bytes() == b"second"
    assert safe_target(root, IMAGE) == root / IMAGE
    assert _everything_under(root / "train/images/ab") == ["ab12cd34ef567890.jpg"]  # no temp file left


def test_a_failed_write_leaves_neither_the_file_nor_a_temp_file(root_and_outside):
    root, _ = root_and_outside
    with pytest.raises(RuntimeError), open_atomic_under(root, IMAGE) as fh:
        fh.write(b"half")
        raise RuntimeError("killed mid-write")
    assert _everything_under(root / "train/images/ab") == []


def test_a_symlinked_root_chosen_by_the_user_is_allowed(root_and_outside, tmp_path):
    root, _ = root_and_outside
    alias = tmp_path / "alias"
    os.symlink(root, alias)
    Storage(alias).write_bytes(IMAGE, b"ok")
    assert (root / IMAGE).read_bytes() == b"ok"
