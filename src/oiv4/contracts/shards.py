"""The unit of work, a shard, and what a stage provides so that any executor can run its shards.

A shard only reads its manifest slice and writes its own files and ledger, so any executor can run it
(this process, a local process pool, a Dask cluster) and re-running it is always safe: the ledger tells
it which rows are already finished. A stage (fetch, archives) implements `Stage`; the run layer's
`run_set` plans, checks, runs and summarises any stage the same way. Stages never import the run layer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from oiv4.contracts.schema import ImageSet

#: Rows per URL-set shard. 7.27M URLs -> ~727 shards: enough to balance 100 workers, few enough
#: that the scheduler and the ledger directory stay small. Recorded in the plan so resume is stable.
DEFAULT_SHARD_ROWS = 10_000

#: A JSON-able value of a recorded setting.
SettingValue = str | int | float | bool | None


class ShardSettings(Protocol):
    """What every stage's settings dataclass offers the run layer (it travels inside each `ShardTask`)."""

    @property
    def force_settings(self) -> bool:
        """Resume shards recorded with different `output_settings` anyway (the override is recorded)."""
        ...

    def output_settings(self) -> dict[str, SettingValue]:
        """The settings that shape the stored bytes, by name; recorded with each shard when it starts.

        A resumed shard must not mix images made two ways, so a change here is refused unless forced.
        """
        ...


@dataclass(frozen=True)
class ShardTask:
    """Everything a worker needs to run one shard, picklable and self-contained."""

    stage: str  # "fetch" or "archives"
    image_set: ImageSet
    shard: int
    start: int  # first manifest row (inclusive)
    stop: int  # last manifest row (exclusive)
    root: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    settings: ShardSettings | None = None  # the stage's settings dataclass; None: the stage's defaults
    name: str = ""  # archive stem for archive shards, e.g. "train_3"

    @property
    def key(self) -> str:
        return f"{self.stage}-{self.image_set.value}-{self.shard:05d}"


@dataclass
class ShardResult:
    """What a finished shard reports back: counts, plus a small stage-specific record (the details are
    in its ledger)."""

    image_set: ImageSet
    shard: int
    outcomes: Counter[str] = field(default_factory=Counter)
    skipped: int = 0  # rows already finished by an earlier run
    bytes_downloaded: int = 0
    elapsed_s: float = 0.0
    #: Stage-specific, picklable, JSON-like facts about the shard (archives: the archive's report).
    detail: Mapping[str, object] = field(default_factory=dict)

    @property
    def done(self) -> int:
        return sum(self.outcomes.values())


@dataclass
class SetPlan:
    """What a stage plans to do for one set: the shards to run and the counts to report progress against."""

    tasks: list[ShardTask]
    shards: int  # shards of the set (run or not)
    todo: int  # rows the tasks will (re)do
    skipped: int = 0  # rows already finished, left alone
    #: Stage-private facts carried from `plan_set` to `summarise` (e.g. archives already done).
    notes: list[Mapping[str, object]] = field(default_factory=list)


SettingsT = TypeVar("SettingsT", bound=ShardSettings, contravariant=True)
SummaryT = TypeVar("SummaryT", covariant=True)


class Stage(Protocol[SettingsT, SummaryT]):
    """What a stage provides to be run as shards by `oiv4.run.stage_runner.run_set`.

    Instances must pickle (Dask and the process pool send them to workers); in-process state such as a
    progress callback must be dropped on pickling.
    """

    name: str  # "fetch" or "archives", also `ShardTask.stage`

    def plan_set(
        self,
        root: str,
        storage_options: Mapping[str, Any],
        image_set: ImageSet,
        settings: SettingsT,
        shards: Iterable[int] | None,
    ) -> SetPlan:
        """The unfinished shards of `image_set` (only those in `shards` if given); raises the stage's
        own error with a one-line message when the set cannot be run (no plan, wrong set, ...)."""
        ...

    def run_shard(self, task: ShardTask) -> ShardResult:
        """Run one shard: manifest rows in, files + ledger rows out. Safe to re-run."""
        ...

    def summarise(
        self, root: str, storage_options: Mapping[str, Any], plan: SetPlan, results: list[ShardResult], elapsed_s: float
    ) -> SummaryT:
        """The stage's summary of one `run_set` call."""
        ...

    def aborted(self, message: str) -> Exception:
        """The stage's error for a run that cannot go on (worker processes kept dying)."""
        ...

    def interrupt(self) -> None:
        """Stop in-process work promptly (Ctrl-C, or an error elsewhere); a no-op for most stages."""
        ...


def shard_bounds(n_rows: int, shard_rows: int) -> list[tuple[int, int]]:
    """[(start, stop), ...] covering `n_rows` in order."""
    return [(s, min(s + shard_rows, n_rows)) for s in range(0, n_rows, shard_rows)]
