"""`fetch_set`: run the shards of one URL set (train or extended_targets) and summarise the run."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from oiv4.contracts.errors import UsageError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet, Outcome
from oiv4.contracts.shards import ShardResult, ShardTask, shard_bounds
from oiv4.io.ledger import now_utc, read_set
from oiv4.io.storage import Storage
from oiv4.io.store import remove_stale_temps
from oiv4.run.executor import ExecutorSettings, run_shards
from oiv4.stages.fetch.progress import FetchProgress, LedgerPoller
from oiv4.stages.fetch.settings import FetchSettings
from oiv4.stages.fetch.shard import FetchAborted, run_fetch_shard


class FetchError(RuntimeError, UsageError):
    """The fetch cannot start (no plan, wrong set, layout conflict); the message says what to do."""


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
    shards = ledger.filter(pc.is_in(ledger["outcome"], pa.array(keep, pa.string())))["shard"]
    vc = pc.value_counts(shards)
    return Counter(dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True)))


def _plan(storage: Storage, image_set: ImageSet) -> tuple[int, int]:
    rel = LAYOUT.plan_summary()
    if not storage.exists(rel) or not storage.exists(LAYOUT.plan(image_set)):
        raise FetchError(f"no plan under {storage.root}: run `oiv4 plan --root {storage.root}` first")
    summary = json.loads(storage.read_bytes(rel))
    return int(summary["counts"][image_set.value]), int(summary["shard_rows"])


def fetch_set(
    storage: Storage,
    image_set: ImageSet | str,
    settings: FetchSettings | None = None,
    executor: ExecutorSettings | None = None,
    *,
    shards: Iterable[int] | None = None,
    progress: Callable[[FetchProgress], None] | None = None,
    progress_interval: float = 1.0,
) -> FetchSummary:
    """Fetch, verify, shrink and store every unfinished row of a URL set; resumable and idempotent.

    Shards whose ledger is complete are not even submitted. `progress`, if given, is called about every
    `progress_interval` seconds from a background thread with a `FetchProgress` snapshot.
    Raises `FetchError` if the fetch cannot start and `FetchAborted` if the disk filled up or the root
    became unwritable (what is finished stays finished; re-run after fixing the cause).
    Run one fetch per set at a time: a starting run removes temp files an interrupted one left behind.
    """
    settings = settings or FetchSettings()
    image_set = ImageSet(image_set)
    if image_set.from_archives:
        raise FetchError(f"{image_set.value} comes from the CVDF archives, not from URLs: use `oiv4 archives`")
    planned, shard_rows = _plan(storage, image_set)
    bounds = shard_bounds(planned, shard_rows)
    wanted = set(range(len(bounds))) if shards is None else set(shards)

    started = now_utc()
    t0 = time.monotonic()
    ledger = read_set(storage, image_set)
    found = _layouts_in(ledger)
    if found and found != {settings.layout}:
        raise FetchError(
            f"{image_set.value} under {storage.root} was fetched with layout {'/'.join(sorted(found))}; "
            f"re-run with --layout {sorted(found)[0]} (or fetch into another root)"
        )
    finished = _finished_per_shard(ledger, settings)

    def complete(shard: int, start: int, stop: int) -> bool:
        # Compacted ledger, no parts left (the shard ended cleanly) and nothing to retry.
        return (
            finished[shard] == stop - start
            and storage.exists(LAYOUT.ledger_shard(image_set, shard))
            and not storage.exists(LAYOUT.ledger_parts_dir(image_set, shard))
        )

    tasks = [
        ShardTask("fetch", image_set, i, start, stop, storage.root, dict(storage.storage_options), settings)
        for i, (start, stop) in enumerate(bounds)
        if i in wanted and not complete(i, start, stop)
    ]
    todo = sum(t.stop - t.start - finished[t.shard] for t in tasks)
    summary = FetchSummary(
        image_set.value, planned, len(bounds), len(tasks), skipped=sum(finished[i] for i in wanted & set(finished))
    )
    if tasks:
        remove_stale_temps(storage, image_set)

    stop_polling = threading.Event()
    poller_thread = None
    if progress is not None and tasks:
        poller = LedgerPoller(storage, image_set, started, todo)

        def poll() -> None:
            while not stop_polling.wait(progress_interval):
                progress(poller.poll())
            progress(poller.poll())

        poller_thread = threading.Thread(target=poll, name="oiv4-fetch-progress", daemon=True)
        poller_thread.start()

    def on_result(r: ShardResult) -> None:
        summary.outcomes.update(r.outcomes)
        summary.bytes_downloaded += r.bytes_downloaded

    try:
        run_shards(tasks, run_fetch_shard, executor or ExecutorSettings(), on_result=on_result)
    except BrokenProcessPool as exc:
        raise FetchAborted(
            "worker processes kept dying (out of memory? killed?); finished rows are kept: re-run to resume, "
            "with fewer --workers or a lower --concurrency if memory is short"
        ) from exc
    finally:
        stop_polling.set()
        if poller_thread is not None:
            poller_thread.join()
        summary.elapsed_s = time.monotonic() - t0
    vc = pc.value_counts(read_set(storage, image_set)["outcome"])
    totals = Counter(dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True)))
    summary.totals = dict(totals.most_common())
    return summary


__all__ = ["FetchAborted", "FetchError", "FetchSummary", "Outcome", "fetch_set"]
