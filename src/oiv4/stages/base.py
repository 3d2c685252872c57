"""What every stage is made of: the shard task, its result, the plan, and `ShardStage`, the base class that
owns planning, resuming and summarising so that a stage supplies only its shards and its rows.

The split follows HF datasets' `DatasetBuilder`: a builder says which splits exist (`_split_generators`) and
how one split's examples are made (`_generate_examples`); the base class owns caching and resuming. Here a
stage says which shards its set has and how far each got (`shards`), how one shard runs (`run`) and what a
run amounts to (`summary`); `ShardStage` turns that into the `SetPlan` the run layer's `run_set` executes,
checks the settings' type at both ends, and skips finished shards.

A shard only reads its manifest slice (or ledger shard) and writes its own files and ledger, so any executor
can run it (this process, a local process pool, a Dask cluster) and re-running it is always safe. Every stage
imports this module; it imports no stage.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import pyarrow as pa

from oiv4.contracts.errors import SettingsTypeError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.io.ledger import read_ledger
from oiv4.io.storage import Storage

S = TypeVar("S")  # a stage's settings dataclass
P = TypeVar("P")  # a stage's plan detail: what `shards` found out and `summary` reports
D = TypeVar("D")  # a stage's per-shard detail in `ShardResult`
Summary = TypeVar("Summary")


@dataclass(frozen=True)
class ShardTask(Generic[S]):
    """Everything a worker needs to run one shard, picklable and self-contained."""

    stage: str  # `ShardStage.name`
    image_set: ImageSet
    shard: int
    start: int  # first manifest row (inclusive)
    stop: int  # last manifest row (exclusive)
    storage: Storage  # the root, pickled whole (an object store keeps its options)
    settings: S  # the stage's own settings type, checked by `ShardStage.run_shard`
    name: str = ""  # archive stem for archive shards, e.g. "train_3"

    @property
    def key(self) -> str:
        return f"{self.stage}-{self.image_set.value}-{self.shard:05d}"


@dataclass
class ShardResult(Generic[D]):
    """What a finished shard reports back: ledger outcomes counted, plus the stage's own typed detail (the
    rows themselves are in its ledger)."""

    image_set: ImageSet
    shard: int
    outcomes: Counter[str] = field(default_factory=Counter)  # ledger outcomes only
    skipped: int = 0  # rows already finished by an earlier run
    bytes_downloaded: int = 0
    elapsed_s: float = 0.0
    detail: D | None = None  # picklable; archives: the archive's report, hash: its counts

    @property
    def done(self) -> int:
        return sum(self.outcomes.values())


@dataclass(frozen=True)
class Shard(Generic[S]):
    """One shard of a set as a stage's `shards` declares it: what it covers and how far it got."""

    shard: int
    start: int = 0
    stop: int = 0
    name: str = ""
    todo: int = 0  # rows a run of it would (re)do
    done: int = 0  # rows an earlier run finished, left alone
    finished: bool = False  # nothing to run now: done (not even a compaction left), or waiting on another stage
    settings: S | None = None  # this shard's own settings (e.g. the rows to embed); None: the run's


@dataclass(frozen=True)
class Shards(Generic[S, P]):
    """A stage's answer to "which shards does this set have": every shard, and the stage's plan detail."""

    shards: Sequence[Shard[S]]
    detail: P


@dataclass
class SetPlan(Generic[S, P]):
    """What a stage will do for one set: the shards to run, the counts to report progress against, and the
    stage's typed plan detail carried to its `summary`."""

    image_set: ImageSet
    tasks: list[ShardTask[S]]
    shards: int  # shards of the set (run or not)
    todo: int  # rows the tasks will (re)do
    skipped: int  # rows already finished, left alone
    detail: P
    finished: list[Shard[S]] = field(default_factory=list)  # shards asked for with nothing to run now


def merged_outcomes(results: Iterable[ShardResult[Any]]) -> Counter[str]:
    """Every shard's ledger outcomes added up."""
    total: Counter[str] = Counter()
    for r in results:
        total.update(r.outcomes)
    return total


class ShardStage(ABC, Generic[S, P, D, Summary]):
    """A stage run as shards by `oiv4.run.stage_runner.run_set`; subclasses supply `shards`, `run` and `summary`.

    Class attributes: `name` (also `ShardTask.stage`), `settings_type` (the settings dataclass every task must
    carry), `error` (the stage's error class, raised with a one-line message). Instances must pickle (Dask
    and the process pool send them to workers); in-process state such as a progress callback must be
    dropped on pickling.
    """

    name: ClassVar[str]
    settings_type: ClassVar[type]
    error: ClassVar[type[Exception]]

    # ---- what a stage supplies -------------------------------------------------------------------------
    @abstractmethod
    def shards(self, storage: Storage, image_set: ImageSet, settings: S) -> Shards[S, P]:
        """Every shard of `image_set` and how far each got; raises `error` when the set cannot be run."""

    @abstractmethod
    def run(self, task: ShardTask[S]) -> ShardResult[D]:
        """Run one shard: rows in, files + ledger rows out. Safe to re-run."""

    @abstractmethod
    def summary(
        self, storage: Storage, plan: SetPlan[S, P], results: list[ShardResult[D]], elapsed_s: float
    ) -> Summary:
        """What one `run_set` call did, from the plan's detail and the shards' results."""

    def planned(self, storage: Storage, plan: SetPlan[S, P]) -> None:
        """Called once the plan is made, before any shard runs (e.g. to sweep temp files); nothing by default."""

    def ledger_dir(self, image_set: ImageSet, settings: S) -> str:
        """Where this stage's shards record their rows (live progress reads it): the set's ledger by default."""
        return LAYOUT.ledger_dir(image_set)

    # ---- the machinery ---------------------------------------------------------------------------------
    def check_settings(self, settings: object) -> None:
        """Refuse settings of another type: running with defaults instead would hide the caller's bug."""
        if not isinstance(settings, self.settings_type):
            raise SettingsTypeError(
                f"the {self.name} stage runs with {self.settings_type.__name__}, not {type(settings).__name__}"
            )

    def plan_set(
        self, storage: Storage, image_set: ImageSet | str, settings: S, shards: Iterable[int] | None = None
    ) -> SetPlan[S, P]:
        """The unfinished shards of `image_set` (only those in `shards` if given) as tasks; finished shards
        and rows are counted as skipped, never run again."""
        self.check_settings(settings)
        image_set = ImageSet(image_set)
        found = self.shards(storage, image_set, settings)
        wanted = None if shards is None else set(shards)
        mine = [s for s in found.shards if wanted is None or s.shard in wanted]
        tasks = [
            ShardTask(
                self.name,
                image_set,
                s.shard,
                s.start,
                s.stop,
                storage,
                settings if s.settings is None else s.settings,
                s.name,
            )
            for s in mine
            if not s.finished
        ]
        todo = sum(s.todo for s in mine if not s.finished)
        finished = [s for s in mine if s.finished]
        plan = SetPlan(image_set, tasks, len(found.shards), todo, sum(s.done for s in mine), found.detail, finished)
        self.planned(storage, plan)
        return plan

    def run_shard(self, task: ShardTask[S]) -> ShardResult[D]:
        """Run one planned shard; a task carrying another stage's settings is refused."""
        self.check_settings(task.settings)
        return self.run(task)

    def summarise(
        self, storage: Storage, plan: SetPlan[S, P], results: list[ShardResult[D]], elapsed_s: float
    ) -> Summary:
        """The stage's summary of one `run_set` call."""
        return self.summary(storage, plan, results, elapsed_s)

    def aborted(self, message: str) -> Exception:
        """The stage's error for a run that cannot go on (worker processes kept dying)."""
        return self.error(message)

    def interrupt(self) -> None:
        """Stop in-process work promptly (Ctrl-C, or an error elsewhere); nothing for most stages."""


def stored_ledger(
    storage: Storage, image_set: ImageSet, error: type[Exception], columns: Sequence[str] | None = None
) -> pa.Table:
    """The set's ledger (latest row per row), for stages that work on stored images (hash, features); `error`
    with a one-line message when nothing of the set is stored yet."""
    ledger = read_ledger(storage, image_set, columns)
    if ledger.num_rows == 0:
        raise error(
            f"{image_set.value} has no ledger under {storage.root} (nothing is stored yet): "
            "run oiv4 build (or fetch/archives) first"
        )
    return ledger
