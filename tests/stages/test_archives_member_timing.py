"""Each archive member's ledger row carries its own start time and duration (the report's latency figures)."""

from __future__ import annotations

import itertools
from pathlib import Path

from oiv4.contracts.transfer import TransferSettings
from oiv4.io.ledger import read_set
from oiv4.io.storage import Storage
from oiv4.run.archives import build_archive_set
from oiv4.stages.archives import ArchiveSettings
from support.archives import RangeServer, image_ids, images_archive, write_plan


def test_each_member_row_has_its_own_start_time_and_elapsed_seconds(tmp_path: Path) -> None:
    ids = image_ids(8, "c", seed=9)
    archive = images_archive("train_c", ids[:7])  # ids[7] is planned but not in the archive
    storage = Storage(str(tmp_path / "root"))
    write_plan(storage, "targets", ids)
    with RangeServer({archive.name: archive.data}) as server:
        summary = build_archive_set(
            storage,
            "targets",
            ArchiveSettings(
                source=server.base_url, transfer=TransferSettings(allow_private_networks=True, part_size=512)
            ),
        )
    assert summary.ok, summary.to_dict()
    rows = read_set(storage, "targets").to_pylist()
    members = [r for r in rows if r["outcome"] == "ok"]
    (absent,) = [r for r in rows if r["outcome"] == "missing_from_archive"]
    assert len(members) == 7
    assert all(r["elapsed_s"] is not None and r["elapsed_s"] >= 0 for r in members)
    in_archive_order = sorted(
        members, key=lambda r: archive.entries.index(next(e for e in archive.entries if r["image_id"] in e.name))
    )
    starts = [r["started_at"] for r in in_archive_order]
    assert starts == sorted(starts)
    # Member i+1 starts when member i is done: consecutive rows tile the conversion (ledger times are in ms).
    for before, after in itertools.pairwise(in_archive_order):
        gap = (after["started_at"] - before["started_at"]).total_seconds()
        assert gap >= before["elapsed_s"] - 0.002, (before, after)
    assert absent["started_at"] <= starts[0]  # a planned image no member carried keeps the archive's start
