"""Shared set-up for the fetch tests: a mirror universe, a planned root to copy, fast test settings.

The plan is made by the real stages (`fetch_metadata` from the mirror, then `build_plan`) once per
module; each test copies that root, so tests stay independent and parallel-safe.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import MANIFEST_SCHEMA
from oiv4.contracts.transfer import TransferSettings
from oiv4.io.ledger import read_set
from oiv4.io.storage import TMP_MARK, Storage
from oiv4.run.executor import ExecutorSettings
from oiv4.stages.fetch import FETCH_TRANSFER, FetchSettings
from oiv4.stages.metadata import MetadataSettings, fetch_metadata
from oiv4.stages.plan import PlanSettings, build_plan
from oiv4_mirror import MirrorHandle, UniverseSpec, start_mirror

#: Every misbehaviour a few times, every colour kind, some rotations; small pictures (some > 1024 px).
SPEC = UniverseSpec(
    seed=18,
    n_images=120,
    megapixels=(0.2, 1.5),
    misbehaviour_fraction=0.5,
    special_kind_fraction=0.3,
    rotated_fraction=0.15,
    trickle_seconds=8.0,
    transient_failures=2,
    retry_after=1,
)

#: Short deadlines so `slow_timeout` rows cost seconds, three attempts so 429/503-twice rows end ok.
HTTP = replace(
    FETCH_TRANSFER,
    allow_private_networks=True,
    deadline_s=1.0,
    read_timeout_s=1.0,
    connect_timeout_s=2.0,
    attempts=3,
    backoff_s=0.05,
)
SETTINGS = FetchSettings(transfer=HTTP, flush_seconds=0.3)
EXECUTOR = ExecutorSettings(workers=2)


@contextmanager
def planned_root(
    tmp: Path, spec: UniverseSpec = SPEC, train_size: int = 30, shard_rows: int = 16
) -> Iterator[tuple[MirrorHandle, Path]]:
    """A running mirror and a root holding its metadata and plan (copy it with `copy_root`)."""
    with start_mirror(spec) as mirror:
        storage = Storage(str(tmp))
        fetch_metadata(
            storage,
            MetadataSettings(base_url=mirror.metadata_base_url, transfer=TransferSettings(allow_private_networks=True)),
        )
        build_plan(storage, PlanSettings(train_size=train_size, shard_rows=shard_rows))
        yield mirror, tmp


def copy_root(template: Path, dest: Path) -> Storage:
    shutil.copytree(template / "plan", dest / "plan")
    shutil.copytree(template / "metadata", dest / "metadata")
    return Storage(str(dest))


def write_manifest(storage: Storage, image_set: str, rows: list[dict[str, Any]], shard_rows: int = 16) -> None:
    """A plan written directly (as the plan contract says), for rows the planner would reject."""
    full = []
    for i, r in enumerate(rows):
        base = {c.name: None for c in MANIFEST_SCHEMA}
        base.update(Subset="train", License="", Author="", Title="", Rotation=0.0)
        base.update(r)
        base["row"] = i
        full.append(base)
    table = pa.Table.from_pylist(full, schema=MANIFEST_SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    storage.write_bytes(LAYOUT.plan(image_set), sink.getvalue().to_pybytes())
    counts = {"targets": 0, "validation": 0, "train": 0, "extended_targets": 0, image_set: len(rows)}
    storage.write_bytes(LAYOUT.plan_summary(), json.dumps({"shard_rows": shard_rows, "counts": counts}).encode())


def ledger_rows(storage: Storage, image_set: str) -> list[dict[str, Any]]:
    return read_set(storage, image_set).to_pylist()


def files_under(root: Path) -> dict[str, bytes]:
    """Every stored image/archive (not ledgers, plan or metadata) by relative path."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel.split("/")[0] in ("train", "extended_targets"):
            out[rel] = p.read_bytes()
    return out


def temp_files(root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in root.rglob(f"*{TMP_MARK}*")]
