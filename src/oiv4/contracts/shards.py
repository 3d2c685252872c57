"""Shard arithmetic and the output-settings contract, shared by the stages and the run layer (no I/O).

A shard is the unit of work: rows [start, stop) of a set's manifest (URL sets), one archive (archive sets),
or one ledger shard. The task, result and plan types and the stage base class live in `oiv4.stages.base`,
since a task carries the `Storage` it writes to.

`OutputSettings` is the small protocol of settings that shape stored bytes (JPEG quality, max side, the
archive member limit, the feature model): `oiv4.run.shard_settings` records them with each shard when it
starts and refuses a resume with other values unless `force_settings`. Settings that shape no stored byte
(hash's) do not implement it, and nothing is recorded for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from oiv4.contracts.schema import ImageSet

#: Rows per URL-set shard. 7.27M URLs -> ~727 shards: enough to balance 100 workers, few enough
#: that the scheduler and the ledger directory stay small. Recorded in the plan so resume is stable.
DEFAULT_SHARD_ROWS = 10_000

#: A JSON-able value of a recorded setting.
SettingValue = str | int | float | bool | None


@runtime_checkable
class OutputSettings(Protocol):
    """Settings whose values shape the stored bytes, recorded per shard so a resume cannot mix two makes."""

    @property
    def force_settings(self) -> bool:
        """Resume shards recorded with different `output_settings` anyway (the override is recorded)."""
        ...

    def output_settings(self) -> dict[str, SettingValue]:
        """The settings that shape the stored bytes, by name; recorded with each shard when it starts."""
        ...


@runtime_checkable
class OwnSettingsRecord(Protocol):
    """`OutputSettings` recorded somewhere other than beside the set's ledger (features: per model)."""

    def settings_record(self, image_set: ImageSet | str, shard: int) -> str:
        """The record's path relative to the root."""
        ...


def setting_changes(old: Mapping[str, object], new: Mapping[str, object]) -> dict[str, tuple[object, object]]:
    """Each recorded setting whose value differs, as (old, new), by name."""
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def describe_changes(changes: Mapping[str, tuple[object, object]]) -> str:
    """`setting_changes` in words, for one-line errors."""
    return ", ".join(f"{k}: was {old!r}, now {new!r}" for k, (old, new) in changes.items())


def shard_bounds(n_rows: int, shard_rows: int) -> list[tuple[int, int]]:
    """[(start, stop), ...] covering `n_rows` in order."""
    return [(s, min(s + shard_rows, n_rows)) for s in range(0, n_rows, shard_rows)]
