"""oiv4 verify: a clean bill on good data in every layout; injected damage is found, reported and requeued."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

import oiv4
from oiv4.cli import app
from oiv4.contracts.layout import LAYOUT
from oiv4.io.ledger import read_set
from oiv4.io.storage import Storage
from oiv4.stages.verify import VerifySettings, verify
from support.layout_builder import LAYOUTS, build_root, build_set


def _tree_digest(root: Path) -> dict[str, str]:
    """Every stored image/archive file and its hash (ledger excluded: requeue may append to it)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and not p.relative_to(root).as_posix().startswith("ledger/")
        and p.name != ".oiv4-run.lock"  # verify --requeue holds the root like any writing command
    }


@pytest.mark.parametrize("layout", LAYOUTS)
def test_intact_data_gets_a_clean_bill_in_every_layout(tmp_path, layout):
    build_root(tmp_path, layout, n=16, fail_every=5)
    report = verify(tmp_path, VerifySettings(deep=True))
    assert report.ok, report.problems
    assert report.problems == []
    assert [s.image_set for s in report.sets] == ["targets", "validation", "train", "extended_targets"]
    for s in report.sets:
        assert s.ok_rows == s.intact > 0
        assert s.planned == s.ledger_rows == 16

    result = CliRunner().invoke(app, ["verify", "--root", str(tmp_path), "--deep"])
    assert result.exit_code == 0, result.output
    assert "clean" in result.output


def _damage_folder_set(root: Path) -> dict[str, str]:
    """Inject four kinds of damage into a folder-layout train set; returns image_id -> expected kind."""
    built = build_set(root, "train", 20, "folder", fail_every=6)
    ids = built.ok_ids
    path = {i: root / built.locations[i] for i in ids}
    path[ids[0]].write_bytes(built.images[ids[0]][:-300])  # truncated file
    path[ids[1]].unlink()  # deleted file
    data = built.images[ids[2]]  # garbage bytes of the same length: only decoding can tell
    path[ids[2]].write_bytes(b"\x00" * len(data))
    data = bytearray(built.images[ids[3]])  # corrupted JPEG body, same length, starts like a JPEG
    data[200:] = bytes(len(data) - 200)
    path[ids[3]].write_bytes(bytes(data))
    return {ids[0]: "size_mismatch", ids[1]: "missing", ids[2]: "undecodable", ids[3]: "undecodable"}


def test_truncated_deleted_and_garbage_files_are_found(tmp_path):
    expected = _damage_folder_set(tmp_path)
    shallow = verify(tmp_path, VerifySettings(fast=True))  # sizes only: same-length damage is unseen
    assert {p.image_id: p.kind for p in shallow.problems if p.broken} == {
        i: k for i, k in expected.items() if k != "undecodable"
    }
    default = verify(tmp_path)  # reads and hashes every file: same-length damage breaks the checksum
    assert {p.image_id: p.kind for p in default.problems if p.broken} == {
        i: "checksum_mismatch" if k == "undecodable" else k for i, k in expected.items()
    }
    deep = verify(tmp_path, VerifySettings(deep=True))
    assert not deep.ok
    assert {p.image_id: p.kind for p in deep.problems if p.broken} == expected
    (check,) = deep.sets
    assert check.broken_images == 4
    assert check.intact == check.ok_rows - 4


def test_corrupted_zip_member_fails_its_crc_unless_fast(tmp_path):
    built = build_set(tmp_path, "targets", 24, "archive_zip")
    victim = built.ok_ids[5]
    zpath = tmp_path / built.locations[victim].split(":")[0]
    raw = bytearray(zpath.read_bytes())
    at = raw.find(built.images[victim]) + len(built.images[victim]) // 2
    raw[at : at + 16] = b"\xff" * 16
    zpath.write_bytes(bytes(raw))

    assert verify(tmp_path, VerifySettings(fast=True)).ok  # sizes and central directory are still right
    for settings in (VerifySettings(), VerifySettings(deep=True)):
        (problem,) = verify(tmp_path, settings).problems
        assert (problem.image_id, problem.kind) == (victim, "damaged")
        assert "CRC" in problem.detail


def test_truncated_archive_breaks_every_image_in_it(tmp_path):
    built = build_set(tmp_path, "validation", 10, "archive_zip")
    zpath = tmp_path / LAYOUT.archive_zip("validation", "validation")
    zpath.write_bytes(zpath.read_bytes()[: zpath.stat().st_size // 2])
    report = verify(tmp_path)
    kinds = {(p.image_id, p.kind) for p in report.problems}
    assert (None, "bad_archive") in kinds
    assert {i for i, k in kinds if k == "bad_archive" and i} == set(built.ok_ids)


def test_garbage_tar_and_missing_shard_zip_are_reported(tmp_path):
    tar_set = build_set(tmp_path, "train", 12, "shard_tar", shard_rows=6)
    (tmp_path / LAYOUT.shard_tar("train", 1)).write_bytes(b"this is not a tar file at all" * 40)
    zip_set = build_set(tmp_path, "extended_targets", 12, "shard_zip", shard_rows=6)
    (tmp_path / LAYOUT.shard_zip("extended_targets", 0)).unlink()
    report = verify(tmp_path)
    broken = {p.image_id: p.kind for p in report.problems if p.broken and p.image_id}
    assert {i for i, k in broken.items() if k == "bad_archive"} == set(tar_set.ok_ids[6:])
    assert {i for i, k in broken.items() if k == "missing"} == set(zip_set.ok_ids[:6])


def test_files_without_ledger_rows_and_temp_leftovers_are_reported_but_not_broken(tmp_path):
    built = build_set(tmp_path, "train", 10, "folder", fail_every=5)
    storage = Storage(str(tmp_path))
    stray = LAYOUT.image("train", "00000000deadbeef")
    storage.write_bytes(stray, built.images[built.ok_ids[0]])
    failed_id = next(iter(built.failed))
    storage.write_bytes(LAYOUT.image("train", failed_id), b"leftover")
    (tmp_path / "train/images/ab").mkdir(parents=True, exist_ok=True)
    (tmp_path / "train/images/ab/abcd.jpg.oiv4tmp-1-ff").write_bytes(b"partial")

    report = verify(tmp_path)
    assert report.ok
    found = {(p.kind, p.location): p.detail for p in report.problems}
    assert found[("orphan", stray)] == "no ledger row points at it"
    assert "http_404" in found[("orphan", LAYOUT.image("train", failed_id))]
    assert ("stray_temp", "train/images/ab/abcd.jpg.oiv4tmp-1-ff") in found


def test_requeue_marks_only_broken_images_and_never_touches_stored_files(tmp_path):
    expected = _damage_folder_set(tmp_path)
    storage = Storage(str(tmp_path))
    before = _tree_digest(tmp_path)

    result = CliRunner().invoke(app, ["verify", "--root", str(tmp_path), "--deep", "--requeue"])
    assert result.exit_code == 6, result.output  # integrity (oiv4.contracts.errors)
    assert "requeued 4" in " ".join(result.output.split())

    assert _tree_digest(tmp_path) == before  # nothing stored was modified or removed
    ledger = read_set(storage, "train")
    by_id = {r["image_id"]: r for r in ledger.to_pylist()}
    for image_id, kind in expected.items():
        assert by_id[image_id]["outcome"] == "verify_failed"
        assert by_id[image_id]["reason"].startswith(f"verify: {kind}")
        assert by_id[image_id]["url"]  # kept, so the fetch stage can redo it
    assert sum(r["outcome"] == "verify_failed" for r in ledger.to_pylist()) == 4
    assert len(oiv4.open(tmp_path)["train"]) == sum(r["outcome"] == "ok" for r in ledger.to_pylist())

    again = verify(tmp_path, VerifySettings(deep=True))
    assert again.ok  # the ledger no longer claims them; what is left on disk is reported as orphans
    assert {p.kind for p in again.problems} == {"orphan"}


def test_cli_reports_per_set_table_and_fails_on_broken_data(tmp_path):
    _damage_folder_set(tmp_path)
    build_set(tmp_path, "validation", 6, "archive_zip")
    result = CliRunner().invoke(app, ["verify", "--root", str(tmp_path)])
    assert result.exit_code == 6  # integrity, as README's exit-code table says
    out = result.output
    for word in ("train", "validation", "missing", "size", "--requeue"):
        assert word in out
    assert "Traceback" not in out


def test_cli_on_a_root_with_nothing_built_says_so(tmp_path):
    result = CliRunner().invoke(app, ["verify", "--root", str(tmp_path / "empty")])
    assert result.exit_code == 2
    assert "nothing to verify" in result.output


def test_staged_images_of_an_unpacked_shard_are_a_warning_not_damage(tmp_path):
    built = build_set(tmp_path, "train", 8, "shard_tar", shard_rows=4)
    (tmp_path / LAYOUT.shard_tar("train", 1)).unlink()
    storage = Storage(str(tmp_path))
    for image_id in built.ok_ids[4:]:
        storage.write_bytes(f"train/staging/shard-00001/{image_id}.jpg", built.images[image_id])
    report = verify(tmp_path, VerifySettings(deep=True))
    assert report.ok
    assert {(p.image_id, p.kind) for p in report.problems} == {(i, "staged") for i in built.ok_ids[4:]}
    (check,) = report.sets
    assert check.intact == 8
