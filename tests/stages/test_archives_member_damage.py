"""Archive members that start like a JPEG but are not whole: refused as `corrupt_jpeg`, never stored `ok`.

The member check reads the marker layout (io/jpeg_layout.py): headers that hold together, an end-of-image
marker after the scan data, no zero-filled stretch in it. These are the damages a published SHA-256 does not
bound for a mirror or a local folder of archives.
"""

from __future__ import annotations

from pathlib import Path

from oiv4.io.jpeg_layout import ZERO_RUN, read_layout, structure_problem
from oiv4.io.ledger import read_set
from oiv4.io.storage import Storage
from oiv4.run.archives import build_archive_set
from oiv4.stages.archives import ArchiveSettings
from oiv4.stages.verify import VerifySettings, verify
from support.archives import Entry, image_ids, make_archive, noisy_jpeg, write_plan


def _damaged() -> dict[str, bytes]:
    good = noisy_jpeg(1, (512, 384))
    layout = read_layout(good)
    zero_body = good[: layout.scan_start] + bytes(ZERO_RUN + 10) + b"\xff\xd9"
    return {
        "good": good,
        "first_half": good[: len(good) // 2],
        "zeros_behind_magic": b"\xff\xd8\xff" + bytes(40 << 20),
        "zero_filled_scan": zero_body,
        "no_eoi": good[:-2],
    }


def test_truncated_and_zero_filled_members_are_corrupt_jpeg_and_only_the_whole_one_is_stored(tmp_path: Path) -> None:
    members = _damaged()
    ids = image_ids(len(members), "5", seed=41)
    by_id = dict(zip(ids, members, strict=True))
    archive = make_archive("train_5", [Entry(f"train_5/{i}.jpg", members[k]) for i, k in by_id.items()])
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / archive.name).write_bytes(archive.data)
    storage = Storage(str(tmp_path / "root"))
    write_plan(storage, "targets", ids)
    build_archive_set(storage, "targets", ArchiveSettings(source=str(folder)))
    rows = {by_id[r["image_id"]]: r for r in read_set(storage, "targets").to_pylist()}
    assert {k: r["outcome"] for k, r in rows.items()} == {
        "good": "ok",
        "first_half": "corrupt_jpeg",
        "zeros_behind_magic": "corrupt_jpeg",
        "zero_filled_scan": "corrupt_jpeg",
        "no_eoi": "corrupt_jpeg",
    }
    assert "truncated" in rows["first_half"]["reason"] and "zero-filled" in rows["zero_filled_scan"]["reason"]
    assert all(r["reason"] for r in rows.values())
    assert verify(storage).ok and verify(storage, VerifySettings(deep=True)).ok


def test_the_layout_reads_progressive_scans_and_whole_files_pass() -> None:
    good = noisy_jpeg(2, (300, 200))
    assert structure_problem(good) is None
    layout = read_layout(good)
    assert (layout.width, layout.height, layout.components, layout.progressive, layout.scans) == (300, 200, 3, False, 1)
    assert layout.end == len(good)
    assert structure_problem(good + b"trailing junk after EOI") is None
