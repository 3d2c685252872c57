"""The settings that shaped a shard's stored bytes, recorded beside its ledger when it starts.

`ledger/<set>/shard-NNNNN.settings.json` holds the settings' `output_settings()` (JPEG quality, max side,
rotation, resample filter, draft, layout for fetch; the member size limit for archives). Resuming a
shard with different values would leave one shard holding images made two ways, which no ledger column
would reveal, so it is refused with the differing settings named, unless the settings say
`force_settings`; then the new values are recorded together with what they replaced and when.
Only settings implementing `contracts.shards.OutputSettings` are recorded (hash's shape no stored byte);
those implementing `OwnSettingsRecord` say where their record lives (features: per model).
The ledger's columns stay as they are: readers of the ledger never need this file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from oiv4.contracts.errors import DiskError, SettingsChangedError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.contracts.shards import (
    OutputSettings,
    OwnSettingsRecord,
    SettingValue,
    describe_changes,
    setting_changes,
)
from oiv4.io.damage import damaged, read_json_object
from oiv4.io.ledger_write import now_utc
from oiv4.io.storage import SPACE_ERRNOS, Storage
from oiv4.stages.base import ShardResult, ShardTask


def settings_rel(image_set: ImageSet | str, shard: int) -> str:
    """Where a shard's settings record lives: beside its ledger file."""
    return LAYOUT.ledger_settings(image_set, shard)


def record_rel(task: ShardTask[OutputSettings]) -> str:
    """Where `task`'s record lives: where its settings say (`OwnSettingsRecord`, e.g. per feature model), else
    beside the set's ledger."""
    if isinstance(task.settings, OwnSettingsRecord):
        return task.settings.settings_record(task.image_set, task.shard)
    return settings_rel(task.image_set, task.shard)


def read_record(
    storage: Storage, image_set: ImageSet | str, shard: int, rel: str | None = None
) -> dict[str, Any] | None:
    """The shard's settings record, or None if the shard never started (or predates these records)."""
    rel = rel or settings_rel(image_set, shard)
    if not storage.exists(rel):
        return None
    record = read_json_object(storage, rel)
    if not isinstance(record.get("settings"), dict):
        raise damaged(storage, rel, "it has no `settings` object")
    return record


def _recorded(tasks: Iterable[ShardTask[Any]]) -> list[ShardTask[OutputSettings]]:
    """The tasks whose settings shape stored bytes: only those are recorded and checked."""
    return [t for t in tasks if isinstance(t.settings, OutputSettings)]


def _wanted(task: ShardTask[OutputSettings]) -> dict[str, SettingValue]:
    return dict(task.settings.output_settings())


def _write(
    storage: Storage, task: ShardTask[OutputSettings], settings: dict[str, SettingValue], overrides: list[Any]
) -> None:
    record = {
        "stage": task.stage,
        "set": task.image_set.value,
        "shard": task.shard,
        "settings": settings,
        "recorded_at": now_utc().isoformat(),
        "overrides": overrides,
    }
    storage.write_bytes(record_rel(task), json.dumps(record, indent=1).encode())


@dataclass(frozen=True)
class SettingsConflict:
    shard: int
    differences: dict[str, tuple[object, object]]


def check_tasks(storage: Storage, tasks: Iterable[ShardTask[Any]]) -> list[SettingsConflict]:
    """Shards already started with output settings other than their task's, with what differs."""
    conflicts = []
    for task in _recorded(tasks):
        record = read_record(storage, task.image_set, task.shard, record_rel(task))
        if record is not None and (diff := setting_changes(record["settings"], _wanted(task))):
            conflicts.append(SettingsConflict(task.shard, diff))
    return conflicts


def refuse_or_override(storage: Storage, image_set: ImageSet, tasks: list[ShardTask[Any]]) -> None:
    """Before any shard runs: refuse a resume with changed output settings, or record the forced override
    when the settings say `force_settings`."""
    conflicts = check_tasks(storage, tasks)
    if not conflicts:
        return
    by_shard = {t.shard: t for t in _recorded(tasks)}
    if not by_shard[conflicts[0].shard].settings.force_settings:
        first = conflicts[0]
        more = f" (and {len(conflicts) - 1} more shards)" if len(conflicts) > 1 else ""
        raise SettingsChangedError(
            f"{image_set.value} shard {first.shard}{more} was started with other settings "
            f"({describe_changes(first.differences)}): re-run with the old values, or with --force-settings to "
            f"resume with the new ones (the override is recorded in {record_rel(by_shard[first.shard])})"
        )
    for c in conflicts:
        task = by_shard[c.shard]
        old = read_record(storage, image_set, c.shard, record_rel(task)) or {}
        overrides = [
            *old.get("overrides", []),
            {"at": now_utc().isoformat(), "previous": old.get("settings", {}), "forced": True},
        ]
        _write(storage, task, _wanted(task), overrides)


@dataclass(frozen=True)
class RecordingShard:
    """The shard function the executors run: records the task's output settings, then runs the shard.

    Top-level and frozen, so it pickles by reference for the process pool and Dask. The check is
    repeated here (not only when planning) because another run may have started the shard meanwhile.
    """

    run_shard: Callable[[ShardTask[Any]], ShardResult[Any]]

    def __call__(self, task: ShardTask[Any]) -> ShardResult[Any]:
        if not isinstance(task.settings, OutputSettings):
            return self.run_shard(task)
        storage = task.storage
        wanted = _wanted(task)
        record = read_record(storage, task.image_set, task.shard, record_rel(task))
        if record is None:
            try:
                _write(storage, task, wanted, [])
            except OSError as exc:
                # The first write of a shard can be the one that meets a full disk: the same exit as any other.
                if exc.errno not in SPACE_ERRNOS:
                    raise
                raise DiskError(
                    f"disk full while recording {task.image_set.value} shard {task.shard}'s settings in"
                    f" {storage.path(record_rel(task))}; free space and re-run (it resumes)"
                ) from exc
        elif diff := setting_changes(record["settings"], wanted):
            raise SettingsChangedError(
                f"{task.image_set.value} shard {task.shard} was started with other settings meanwhile "
                f"({describe_changes(diff)}): is another run using this root?"
            )
        return self.run_shard(task)
