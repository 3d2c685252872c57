"""The fetch stage as a `Stage`: which shards of a URL set (train, extended_targets) are unfinished, how one
runs, and the summary of a run. `oiv4.run.fetch.fetch_set` runs it through an executor."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from oiv4.contracts.errors import FetchAborted, FetchError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet, Outcome
from oiv4.contracts.shards import shard_bounds
from oiv4.io.damage import damaged, read_json_object
from oiv4.io.ledger import read_set
from oiv4.io.storage import Storage
from oiv4.io.store import remove_stale_temps
from oiv4.stages.base import SetPlan, Shard, ShardResult, Shards, ShardStage, ShardTask, merged_outcomes
from oiv4.stages.fetch.settings import STILL_BLOCKED_REASON, FetchSettings
from oiv4.stages.fetch.shard import run_fetch_shard


@dataclass
class FetchSummary:
    """What one `fetch_set` call did, and where the whole set stands afterwards."""

    image_set: str
    planned: int  # rows in the set's manifest
    shards: int  # shards of the set
    shards_run: int  # shards with work in this run
    outcomes: Counter[str] = field(default_factory=Counter)  # rows finished by this run
    skipped: int = 0  # rows already finished before this run
    bytes_downloaded: int = 0
    elapsed_s: float = 0.0
    totals: dict[str, int] = field(default_factory=dict)  # the set's whole ledger, by outcome

    @property
    def done(self) -> int:
        return sum(self.outcomes.values())

    @property
    def images_per_s(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def remaining(self) -> int:
        """Planned rows without a ledger row (0 after a complete run)."""
        return self.planned - sum(self.totals.values())


def _layouts_in(ledger: pa.Table) -> set[str]:
    """The layouts the set's `ok` rows were stored in (vectorised: a set's ledger has millions of rows)."""
    loc = ledger.filter(pc.equal(ledger["outcome"], Outcome.ok.value))["location"]
    loc = loc.filter(pc.is_valid(loc))
    if len(loc) == 0:
        return set()
    is_zip, is_tar = pc.match_substring(loc, ".zip:"), pc.match_substring(loc, ".tar:")
    kinds = {"zip": pc.any(is_zip).as_py(), "webdataset": pc.any(is_tar).as_py()}
    kinds["folder"] = pc.any(pc.invert(pc.or_(is_zip, is_tar))).as_py()
    return {k for k, present in kinds.items() if present}


def _finished_per_shard(ledger: pa.Table, settings: FetchSettings) -> Counter[int]:
    """Rows per shard that this run leaves alone (recorded, and not an outcome it retries)."""
    outcomes = pc.unique(ledger["outcome"]).to_pylist()
    keep = [o for o in outcomes if not settings.retried(o)]
    finished = pc.is_in(ledger["outcome"], pa.array(keep, pa.string()))
    if Outcome.blocked_address in outcomes and settings.retried(Outcome.blocked_address):
        # blocked rows this run would refuse again (see STILL_BLOCKED_REASON) stay finished
        still = pc.and_(
            pc.equal(ledger["outcome"], Outcome.blocked_address.value),
            pc.fill_null(pc.match_substring(ledger["reason"], STILL_BLOCKED_REASON), False),
        )
        finished = pc.or_(finished, still)
    shards = ledger.filter(finished)["shard"]
    vc = pc.value_counts(shards)
    return Counter(dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True)))


def _plan(storage: Storage, image_set: ImageSet) -> tuple[int, int]:
    rel = LAYOUT.plan_summary()
    if not storage.exists(rel) or not storage.exists(LAYOUT.plan(image_set)):
        raise FetchError(f"no plan under {storage.root}: run `oiv4 plan --root {storage.root}` first")
    summary = read_json_object(storage, rel)
    try:
        return int(summary["counts"][image_set.value]), int(summary["shard_rows"])
    except (KeyError, TypeError, ValueError) as exc:
        raise damaged(storage, rel, f"it has no usable count for {image_set.value} or no shard size") from exc


@dataclass(frozen=True)
class FetchPlan:
    """What planning a fetch found out, for its summary."""

    planned: int  # rows in the set's manifest


class FetchStage(ShardStage[FetchSettings, FetchPlan, None, FetchSummary]):
    """The URL-set fetch: one shard per `shard_rows` rows of the manifest.

    Run it with `oiv4.run.fetch.fetch_set` (or `oiv4.run.stage_runner.run_set`).
    """

    name = "fetch"
    settings_type = FetchSettings
    error = FetchAborted

    def shards(
        self, storage: Storage, image_set: ImageSet, settings: FetchSettings
    ) -> Shards[FetchSettings, FetchPlan]:
        """Every shard with its finished rows; a shard is finished when its ledger is compacted (it ended
        cleanly) and holds every row with an outcome this run does not retry.

        Raises `FetchError` if the fetch cannot start.
        """
        if image_set.from_archives:
            raise FetchError(f"{image_set.value} comes from the CVDF archives, not from URLs: use `oiv4 archives`")
        planned, shard_rows = _plan(storage, image_set)
        ledger = read_set(storage, image_set)
        found = _layouts_in(ledger)
        if found and found != {settings.layout}:
            raise FetchError(
                f"{image_set.value} under {storage.root} was fetched with layout {'/'.join(sorted(found))}; "
                f"re-run with --layout {sorted(found)[0]} (or fetch into another root)"
            )
        finished = _finished_per_shard(ledger, settings)

        def complete(shard: int, start: int, stop: int) -> bool:
            return (
                finished[shard] == stop - start
                and storage.exists(LAYOUT.ledger_shard(image_set, shard))
                and not storage.exists(LAYOUT.ledger_parts_dir(image_set, shard))
            )

        shards = [
            Shard(
                i,
                start,
                stop,
                todo=stop - start - finished[i],
                done=finished[i],
                finished=complete(i, start, stop),
            )
            for i, (start, stop) in enumerate(shard_bounds(planned, shard_rows))
        ]
        return Shards(shards, FetchPlan(planned))

    def planned(self, storage: Storage, plan: SetPlan[FetchSettings, FetchPlan]) -> None:
        """A run with work removes temp files an interrupted one left behind: run one fetch per set at a time."""
        if plan.tasks:
            remove_stale_temps(storage, plan.image_set)

    def run(self, task: ShardTask[FetchSettings]) -> ShardResult[None]:
        return run_fetch_shard(task)

    def summary(
        self,
        storage: Storage,
        plan: SetPlan[FetchSettings, FetchPlan],
        results: list[ShardResult[None]],
        elapsed_s: float,
    ) -> FetchSummary:
        """This run's counts, and where the whole set stands afterwards (read from its ledger)."""
        summary = FetchSummary(
            plan.image_set.value,
            plan.detail.planned,
            plan.shards,
            len(plan.tasks),
            outcomes=merged_outcomes(results),
            skipped=plan.skipped,
            bytes_downloaded=sum(r.bytes_downloaded for r in results),
            elapsed_s=elapsed_s,
        )
        vc = pc.value_counts(read_set(storage, plan.image_set)["outcome"])
        totals = Counter(dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True)))
        summary.totals = dict(totals.most_common())
        return summary


#: The fetch stage (stateless: one instance serves every run).
FETCH = FetchStage()


__all__ = ["FETCH", "FetchAborted", "FetchError", "FetchPlan", "FetchStage", "FetchSummary"]
