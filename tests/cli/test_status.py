from __future__ import annotations

import json
from pathlib import Path

from oiv4.cli.status_view import status_view
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.io.ledger_write import LedgerBuffer, now_utc
from oiv4.io.storage import Storage
from oiv4.stages.status import collect_status


def test_unplanned_archive_members_do_not_count_as_planned_work_done(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    counts = {"targets": 4, "validation": 0, "train": 0, "extended_targets": 0}
    storage.write_bytes(LAYOUT.plan_summary(), json.dumps({"shard_rows": 10, "counts": counts}).encode())
    ledger = LedgerBuffer(storage, ImageSet.targets, 0)
    for row, outcome in [(0, "ok"), (1, "ok"), (-1, "hostile_member"), (-2, "hostile_member")]:
        ledger.record(image_id=f"{row + 10:016x}", row=row, outcome=outcome, reason="why", started_at=now_utc())
    ledger.close()
    (targets,) = collect_status(storage, ["targets"])
    assert targets.recorded == 4 and targets.recorded_planned == 2
    assert targets.remaining == 2  # rows 2 and 3 are not done, whatever the refused members say
    from rich.console import Console

    console = Console(width=80, record=True)
    console.print(status_view([targets]))
    assert "targets" in console.export_text()
