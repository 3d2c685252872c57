"""Archive sets run as shards through the same executors as fetch: on a Dask LocalCluster the zips and
the ledger come out exactly as from the default in-process run."""

from __future__ import annotations

import zipfile
from pathlib import Path

from oiv4.contracts.layout import LAYOUT
from oiv4.io.ledger import read_set
from oiv4.io.storage import Storage
from oiv4.run.archives import build_archive_set
from oiv4.run.executor import ExecutorSettings
from oiv4.stages.archives import ArchiveSettings
from support.archives import image_ids, images_archive, write_plan

#: Columns that depend on when and how fast a row was recorded, not on what was recorded.
TIMING = ("started_at", "elapsed_s")


def _ledger(storage: Storage) -> list[dict]:
    rows = read_set(storage, "targets").drop_columns(list(TIMING)).to_pylist()
    return sorted(rows, key=lambda r: (r["shard"], r["row"]))


def _zip(path: Path) -> list[tuple[str, int, bytes]]:
    with zipfile.ZipFile(path) as zf:
        return [(i.filename, i.CRC, zf.read(i)) for i in zf.infolist()]


def test_archives_on_a_dask_cluster_give_the_same_zips_and_ledger_as_a_local_run(tmp_path: Path) -> None:
    ids3, ids7 = image_ids(3, "3", seed=40), image_ids(4, "7", seed=41)
    folder = tmp_path / "src"
    folder.mkdir()
    for a in (images_archive("train_3", ids3), images_archive("train_7", ids7)):
        (folder / a.name).write_bytes(a.data)
    settings = ArchiveSettings(source=str(folder))
    roots = {kind: tmp_path / kind for kind in ("local", "dask")}
    for root in roots.values():
        write_plan(Storage(str(root)), "targets", ids3 + ids7)

    local = build_archive_set(Storage(str(roots["local"])), "targets", settings)
    on_dask = build_archive_set(
        Storage(str(roots["dask"])), "targets", settings, executor=ExecutorSettings(kind="dask", workers=2)
    )

    assert local.ok and on_dask.ok, (local.to_dict(), on_dask.to_dict())
    assert [(a.name, a.status, a.outcomes, a.sha256) for a in on_dask.archives] == [
        (a.name, a.status, a.outcomes, a.sha256) for a in local.archives
    ]
    assert [a.status for a in on_dask.archives] == ["converted", "converted"]
    for stem in ("train_3", "train_7"):
        rel = LAYOUT.archive_zip("targets", stem)
        assert _zip(roots["dask"] / rel) == _zip(roots["local"] / rel)
    dask_ledger = _ledger(Storage(str(roots["dask"])))
    assert dask_ledger == _ledger(Storage(str(roots["local"])))
    assert sorted(r["row"] for r in dask_ledger) == list(range(7))
    # A second run on the cluster finds both archives done and submits nothing.
    again = build_archive_set(
        Storage(str(roots["dask"])), "targets", settings, executor=ExecutorSettings(kind="dask", workers=2)
    )
    assert [a.status for a in again.archives] == ["done_before", "done_before"]
