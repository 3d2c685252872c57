"""The archive sets (targets, validation) as a `Stage`: one shard per CVDF archive.

`shards` groups the set's plan rows by archive and marks archives already done; `run` builds one
archive (`builder`); `summary` lists every archive's report. The run layer's
`build_archive_set` runs it through an executor: threads of this process by default (progress events
keep working, one download overlaps another archive's conversion), or a process pool / Dask cluster.
"""

from __future__ import annotations

import errno
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow.compute as pc

from oiv4.contracts.errors import ArchiveError, ArchiveSetError, SettingError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.io.ledger import read_shard
from oiv4.io.storage import Storage
from oiv4.stages.archives.builder import ArchiveBuilder, Fetched
from oiv4.stages.archives.catalog import all_stems, archive_name, rows_by_stem, shard_of
from oiv4.stages.archives.checks import archive_done
from oiv4.stages.archives.gunzip import DECODERS
from oiv4.stages.archives.settings import ArchiveProgress, ArchiveReport, ArchiveSetSummary, ArchiveSettings
from oiv4.stages.archives.sources import make_source
from oiv4.stages.base import SetPlan, Shard, ShardResult, Shards, ShardStage, ShardTask


class _PlanRows:
    """The set's plan rows grouped by archive; the per-archive ImageID -> row maps are built on demand
    (1.7M targets rows: no point building sixteen dicts when fifteen archives are already done)."""

    def __init__(self, storage: Storage, image_set: ImageSet) -> None:
        from oiv4.io.manifest import read_manifest

        if not storage.exists(LAYOUT.plan(image_set)):
            raise ArchiveSetError(
                f"no plan for {image_set.value} at {storage.path(LAYOUT.plan(image_set))}: run `oiv4 plan` first"
            )
        table = read_manifest(storage, image_set, columns=["ImageID", "row"])
        self._ids = table["ImageID"]
        self._rows = table["row"].to_numpy()
        self.groups = rows_by_stem(image_set, self._ids, self._rows)

    def __contains__(self, stem: str) -> bool:
        return stem in self.groups

    def __getitem__(self, stem: str) -> dict[str, int]:
        idx = self.groups[stem]
        ids = self._ids.take(idx).to_pylist()
        return dict(zip(ids, self._rows[idx].tolist(), strict=True))


def _check_settings(image_set: ImageSet, settings: ArchiveSettings) -> None:
    if not image_set.from_archives:
        raise ArchiveSetError(f"{image_set.value} is not an archive set: use targets or validation")
    unknown = [d for d in settings.decoders if d not in DECODERS]
    if unknown or not settings.decoders:
        raise ArchiveSetError(f"unknown decoder(s) {unknown}; choose from {', '.join(DECODERS)}")
    if settings.stream and settings.keep_tar:
        raise ArchiveSetError("--stream and --keep-tar exclude each other: streaming writes no .tar.gz at all")


@dataclass(frozen=True)
class ArchivePlan:
    """What planning an archive set found out, for its summary."""

    source: str  # where the archives come from, in words


def _done_before(storage: Storage, image_set: ImageSet, stem: str) -> ArchiveReport:
    """The report of an archive an earlier run finished: its outcomes, from its ledger."""
    done = ArchiveReport(archive_name(stem), shard_of(stem), "done_before")
    vc = pc.value_counts(read_shard(storage, image_set, shard_of(stem))["outcome"]).to_pylist()
    done.outcomes = {d["values"]: d["counts"] for d in vc}
    return done


class ArchiveStage(ShardStage[ArchiveSettings, ArchivePlan, ArchiveReport, ArchiveSetSummary]):
    """Builds the archives of targets / validation, one shard per archive.

    `progress` receives download/convert events from shards run in this process (thread executor);
    it is not pickled: shards in worker processes run silently and report when done.
    """

    name = "archives"
    settings_type = ArchiveSettings
    error = ArchiveSetError

    def __init__(self, progress: ArchiveProgress | None = None) -> None:
        self.progress = progress or ArchiveProgress()
        self._cancel = threading.Event()
        # In this process only: the planned archives in order, and downloads started ahead of their turn.
        self._order: list[str] = []
        self._ahead: dict[str, Future[Fetched]] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {}  # the progress callback and the cancel event belong to this process

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]

    def shards(
        self, storage: Storage, image_set: ImageSet, settings: ArchiveSettings
    ) -> Shards[ArchiveSettings, ArchivePlan]:
        """Only the archives the plan needs (targets: `train_<x>` for each hex digit starting a boxable
        ID), those already done marked finished. Raises ArchiveSetError when nothing can be done (no plan,
        bad source)."""
        _check_settings(image_set, settings)
        groups = _PlanRows(storage, image_set)
        for stem in settings.only:
            if stem not in all_stems(image_set):
                raise ArchiveSetError(f"--only {stem!r}: not an archive of {image_set.value}")
            if stem not in groups:
                self.progress.message(
                    f"{archive_name(stem)}: no image of the {image_set.value} plan is in it, nothing to do"
                )
        try:
            source = make_source(settings.source, settings.s3_endpoint, settings.transfer)
        except SettingError as exc:
            raise ArchiveSetError(str(exc)) from exc
        shards = []
        for stem in sorted(groups.groups):
            if settings.only and stem not in settings.only:
                continue
            rows = len(groups.groups[stem])
            if archive_done(storage, image_set, stem):
                shards.append(Shard(shard_of(stem), name=stem, done=rows, finished=True))
            else:
                shards.append(Shard(shard_of(stem), name=stem, todo=rows))
        return Shards(shards, ArchivePlan(source.description))

    def planned(self, storage: Storage, plan: SetPlan[ArchiveSettings, ArchivePlan]) -> None:
        """Remember the order of the archives to build: each one's download starts while the one before converts."""
        self._order = [t.name for t in plan.tasks]

    def _fetch(self, builder: ArchiveBuilder, task: ShardTask[ArchiveSettings]) -> Fetched:
        """This archive's download, with the next planned one started in the background: network and CPU
        overlap, and at most two .tar.gz files are on disk at once (shards run in this process, in order)."""
        with self._lock:
            mine = self._ahead.pop(task.name, None)
            i = self._order.index(task.name) if task.name in self._order else -1
            nxt = self._order[i + 1] if 0 <= i < len(self._order) - 1 else None
            if nxt is not None and nxt not in self._ahead:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="oiv4-fetch")
                self._ahead[nxt] = self._pool.submit(builder.fetch, nxt)
            if nxt is None and self._pool is not None and not self._ahead:
                self._pool.shutdown(wait=False)
                self._pool = None
        return mine.result() if mine is not None else builder.fetch(task.name)

    def run(self, task: ShardTask[ArchiveSettings]) -> ShardResult[ArchiveReport]:
        """Build archive `task.name`. A failing archive is reported (status "failed", `error` says why and
        what to do) rather than raised, so the other archives of the set still run."""
        settings, storage = task.settings, task.storage
        stem = task.name
        report = ArchiveReport(archive_name(stem), shard_of(stem), "converted")
        t = time.monotonic()
        try:
            builder = ArchiveBuilder(storage, task.image_set, settings, self.progress, self._cancel)
            fetched = self._fetch(builder, task)
            report.verification = fetched.check.description
            report.verified_by = fetched.check.short
            if fetched.downloaded is not None:
                report.bytes_downloaded = fetched.downloaded.bytes_fetched
                report.parts_resumed = fetched.downloaded.parts_resumed
                if fetched.downloaded.note:
                    report.notes.append(fetched.downloaded.note)
            builder.convert(stem, fetched, _PlanRows(storage, task.image_set)[stem], report)
            if settings.stream:
                report.bytes_downloaded = report.compressed_bytes
        except ArchiveError as exc:
            report.status = "failed"
            report.error = str(exc)
            self.progress.message(str(exc))
        except OSError as exc:  # disk full, permissions: this archive fails, the message says where
            report.status = "failed"
            why = "disk full" if exc.errno == errno.ENOSPC else "I/O error"
            report.error = f"{archive_name(stem)}: {why}: {exc}"
            self.progress.message(report.error)
        report.elapsed_s = round(time.monotonic() - t, 3)
        result = ShardResult(task.image_set, task.shard, bytes_downloaded=report.bytes_downloaded, detail=report)
        result.outcomes.update(report.outcomes)
        result.elapsed_s = report.elapsed_s
        return result

    def summary(
        self,
        storage: Storage,
        plan: SetPlan[ArchiveSettings, ArchivePlan],
        results: list[ShardResult[ArchiveReport]],
        elapsed_s: float,
    ) -> ArchiveSetSummary:
        """Every planned archive's report (done before, converted or failed), by name."""
        summary = ArchiveSetSummary(plan.image_set.value, plan.detail.source)
        done_before = [_done_before(storage, plan.image_set, s.name) for s in plan.finished]
        summary.archives = [*done_before, *(r.detail for r in results if r.detail is not None)]
        summary.archives.sort(key=lambda a: a.name)
        summary.elapsed_s = round(elapsed_s, 3)
        return summary

    def interrupt(self) -> None:
        """Stop this process's in-flight downloads within a chunk (their finished parts are kept)."""
        self._cancel.set()
        with self._lock:
            if self._pool is not None:
                # Do not wait for a transfer blocked in a socket read: it ends at its next chunk.
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None


def run_archive_shard(task: ShardTask[ArchiveSettings]) -> ShardResult[ArchiveReport]:
    """Executor entry point: build one archive (`task.name`, e.g. "train_3") of `task.image_set`; raises
    `ArchiveError` if it fails."""
    result = ArchiveStage().run_shard(task)
    report = result.detail
    if report is not None and report.status == "failed":
        raise ArchiveError(report.name, report.error or "failed")
    return result
