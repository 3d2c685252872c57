"""A stage is its shards, its rows and its summary: `ShardStage` does the planning, resuming, settings records
and summarising. The tiny stage here is the worked example of docs/architecture.md ("Adding a stage"), run
through the same `run_set` as fetch, archives, hash and features."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from oiv4.contracts.errors import SettingsTypeError
from oiv4.contracts.schema import ImageSet
from oiv4.contracts.setting import setting
from oiv4.contracts.shards import SettingValue, shard_bounds
from oiv4.io.storage import Storage
from oiv4.run.executor import ExecutorSettings
from oiv4.run.shard_settings import SettingsChangedError, read_record
from oiv4.run.stage_runner import run_set
from oiv4.stages.base import SetPlan, Shard, ShardResult, Shards, ShardStage, ShardTask
from oiv4.stages.hash import HASH, HashSettings

THREADS = ExecutorSettings(kind="thread", workers=2)


# ---- the newcomer's stage: its settings, its plan detail, its summary, and the stage -------------------------
@dataclass(frozen=True)
class TallySettings:
    """How the tally stage works: one line per row, `rows` rows in shards of `shard_rows`."""

    rows: int = setting(10, help="Rows of the set.", flag="--rows")
    shard_rows: int = setting(4, help="Rows per shard.", flag="--shard-rows")
    word: str = setting("row", help="What each line says (shapes the stored bytes).", flag="--word")
    force_settings: bool = setting(
        False, help="Resume shards written with another --word (recorded).", flag="--force-settings"
    )

    def output_settings(self) -> dict[str, SettingValue]:
        return {"word": self.word}

    def settings_record(self, image_set: ImageSet | str, shard: int) -> str:
        return f"tally/{ImageSet(image_set).value}/shard-{shard:05d}.settings.json"


@dataclass(frozen=True)
class TallyPlan:
    rows: int


@dataclass
class TallySummary:
    image_set: str
    rows: int
    written: Counter[str] = field(default_factory=Counter)
    already: int = 0


def tally_rel(image_set: ImageSet, shard: int) -> str:
    return f"tally/{image_set.value}/shard-{shard:05d}.txt"


class TallyStage(ShardStage[TallySettings, TallyPlan, None, TallySummary]):
    name = "tally"
    settings_type = TallySettings
    error = RuntimeError

    def shards(
        self, storage: Storage, image_set: ImageSet, settings: TallySettings
    ) -> Shards[TallySettings, TallyPlan]:
        bounds = shard_bounds(settings.rows, settings.shard_rows)
        shards = []
        for i, (start, stop) in enumerate(bounds):
            done = storage.exists(tally_rel(image_set, i))
            shards.append(
                Shard(i, start, stop, todo=0 if done else stop - start, done=stop - start if done else 0, finished=done)
            )
        return Shards(shards, TallyPlan(settings.rows))

    def run(self, task: ShardTask[TallySettings]) -> ShardResult[None]:
        lines = "".join(f"{task.settings.word} {r}\n" for r in range(task.start, task.stop))
        task.storage.write_bytes(tally_rel(task.image_set, task.shard), lines.encode())
        result: ShardResult[None] = ShardResult(task.image_set, task.shard)
        result.outcomes["ok"] = task.stop - task.start
        return result

    def summary(
        self,
        storage: Storage,
        plan: SetPlan[TallySettings, TallyPlan],
        results: list[ShardResult[None]],
        elapsed_s: float,
    ) -> TallySummary:
        summary = TallySummary(plan.image_set.value, plan.detail.rows, already=plan.skipped)
        for r in results:
            summary.written.update(r.outcomes)
        return summary


TALLY = TallyStage()


# ---- what the base class gives it ----------------------------------------------------------------------------
def test_a_new_stage_runs_resumes_and_summarises_through_run_set(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    first = run_set(TALLY, storage, "validation", TallySettings(), ExecutorSettings(kind="local", workers=1))
    assert (first.image_set, first.rows, first.written, first.already) == ("validation", 10, {"ok": 10}, 0)
    assert (tmp_path / "tally/validation/shard-00002.txt").read_text() == "row 8\nrow 9\n"

    (tmp_path / "tally/validation/shard-00001.txt").unlink()  # as if killed before this shard ran
    again = run_set(TALLY, storage, "validation", TallySettings(), THREADS)
    assert (again.written, again.already) == ({"ok": 4}, 6)
    assert (tmp_path / "tally/validation/shard-00001.txt").read_text() == "row 4\nrow 5\nrow 6\nrow 7\n"

    only = run_set(TALLY, storage, "validation", TallySettings(), THREADS, shards=[0])
    assert (only.written, only.already) == (Counter(), 4)


def test_a_new_stage_gets_its_output_settings_recorded_and_guarded(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    run_set(TALLY, storage, "validation", TallySettings(), THREADS, shards=[0])
    rel = TallySettings().settings_record("validation", 0)
    assert read_record(storage, "validation", 0, rel)["settings"] == {"word": "row"}  # type: ignore[index]
    assert read_record(storage, "validation", 0) is None  # the set's own record (fetch's, archives') is not touched
    (tmp_path / "tally/validation/shard-00000.txt").unlink()
    with pytest.raises(SettingsChangedError, match="word: was 'row', now 'line'"):
        run_set(TALLY, storage, "validation", TallySettings(word="line"), THREADS, shards=[0])
    run_set(TALLY, storage, "validation", TallySettings(word="line", force_settings=True), THREADS, shards=[0])
    record = json.loads((tmp_path / rel).read_text())
    assert record["settings"] == {"word": "line"} and record["overrides"][0]["previous"] == {"word": "row"}


def test_another_stages_settings_are_refused_not_replaced_by_defaults(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    with pytest.raises(SettingsTypeError, match="the tally stage runs with TallySettings, not HashSettings"):
        run_set(TALLY, storage, "validation", HashSettings(), THREADS)  # type: ignore[arg-type]
    with pytest.raises(SettingsTypeError, match="the hash stage runs with HashSettings, not TallySettings"):
        HASH.run_shard(ShardTask("hash", ImageSet.validation, 0, 0, 0, storage, TallySettings()))  # type: ignore[arg-type]
    assert not (tmp_path / "tally").exists() and not (tmp_path / "ledger").exists()


def test_settings_that_shape_no_stored_bytes_record_nothing(tmp_path: Path) -> None:
    # hash's settings are not OutputSettings: a stage like it leaves no settings record behind
    storage = Storage(str(tmp_path))

    @dataclass(frozen=True)
    class Plain:
        rows: int = 3

    class PlainStage(TallyStage):
        name = "plain"
        settings_type = Plain

        def shards(self, storage: Storage, image_set: ImageSet, settings: Plain) -> Shards[Plain, TallyPlan]:  # type: ignore[override]
            return Shards([Shard(0, 0, settings.rows, todo=settings.rows)], TallyPlan(settings.rows))

        def run(self, task: ShardTask[Plain]) -> ShardResult[None]:  # type: ignore[override]
            task.storage.write_bytes(tally_rel(task.image_set, task.shard), b"plain\n")
            return ShardResult(task.image_set, task.shard, Counter(ok=task.stop - task.start))

    summary = run_set(PlainStage(), storage, "validation", Plain(), THREADS)  # type: ignore[arg-type]
    assert summary.written == {"ok": 3}
    assert read_record(storage, "validation", 0) is None and not list(tmp_path.rglob("*.settings.json"))


def test_a_plan_carries_the_stages_typed_detail_and_the_finished_shards(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    run_set(TALLY, storage, "validation", TallySettings(), THREADS, shards=[1])
    plan = TALLY.plan_set(storage, "validation", replace(TallySettings(), rows=10))
    assert plan.detail == TallyPlan(10)
    assert [t.shard for t in plan.tasks] == [0, 2] and [s.shard for s in plan.finished] == [1]
    assert (plan.shards, plan.todo, plan.skipped) == (3, 6, 4)
    assert all(t.storage is storage and isinstance(t.settings, TallySettings) for t in plan.tasks)
