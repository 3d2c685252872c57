"""The archive sets (targets, validation) as a `Stage`: one shard per CVDF archive.

`plan_set` groups the set's plan rows by archive and leaves out archives already done; `run_shard`
builds one archive (`builder`); `summarise` lists every archive's report. The run layer's
`build_archive_set` runs it through an executor: threads of this process by default (progress events
keep working, one download overlaps another archive's conversion), or a process pool / Dask cluster.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

import pyarrow.compute as pc

from oiv4.contracts.errors import ArchiveError, ArchiveSetError, SettingError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.contracts.shards import SetPlan, ShardResult, ShardTask
from oiv4.io.ledger import read_shard
from oiv4.io.storage import Storage
from oiv4.stages.archives.builder import ArchiveBuilder, Fetched
from oiv4.stages.archives.catalog import all_stems, archive_name, rows_by_stem, shard_of
from oiv4.stages.archives.checks import archive_done
from oiv4.stages.archives.gunzip import DECODERS
from oiv4.stages.archives.settings import ArchiveProgress, ArchiveReport, ArchiveSetSummary, ArchiveSettings
from oiv4.stages.archives.sources import make_source


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


class ArchiveStage:
    """Builds the archives of targets / validation, one shard per archive.

    `progress` receives download/convert events from shards run in this process (thread executor);
    it is not pickled: shards in worker processes run silently and report when done.
    """

    name = "archives"

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

    def plan_set(
        self,
        root: str,
        storage_options: Mapping[str, Any],
        image_set: ImageSet,
        settings: ArchiveSettings,
        shards: Iterable[int] | None,
    ) -> SetPlan:
        """Only the archives the plan needs (targets: `train_<x>` for each hex digit starting a boxable
        ID), minus those already done. Raises ArchiveSetError when nothing can be done (no plan, bad source)."""
        storage = Storage(root, dict(storage_options))
        image_set = ImageSet(image_set)
        _check_settings(image_set, settings)
        groups = _PlanRows(storage, image_set)
        for stem in settings.only:
            if stem not in all_stems(image_set):
                raise ArchiveSetError(f"--only {stem!r}: not an archive of {image_set.value}")
            if stem not in groups:
                self.progress.message(
                    f"{archive_name(stem)}: no image of the {image_set.value} plan is in it, nothing to do"
                )
        wanted = None if shards is None else set(shards)
        stems = [
            s
            for s in sorted(groups.groups)
            if (not settings.only or s in settings.only) and (wanted is None or shard_of(s) in wanted)
        ]
        try:
            source = make_source(settings.source, settings.s3_endpoint, settings.transfer)
        except SettingError as exc:
            raise ArchiveSetError(str(exc)) from exc
        notes: list[Mapping[str, object]] = [{"set": image_set.value, "source": source.description}]
        tasks, todo = [], 0
        for stem in stems:
            if archive_done(storage, image_set, stem):
                done = ArchiveReport(archive_name(stem), shard_of(stem), "done_before")
                vc = pc.value_counts(read_shard(storage, image_set, shard_of(stem))["outcome"]).to_pylist()
                done.outcomes = {d["values"]: d["counts"] for d in vc}
                notes.append(asdict(done))
            else:
                tasks.append(
                    ShardTask(self.name, image_set, shard_of(stem), 0, 0, root, dict(storage_options), settings, stem)
                )
                todo += len(groups.groups[stem])
        self._order = [t.name for t in tasks]
        return SetPlan(tasks, len(groups.groups), todo, skipped=0, notes=notes)

    def _fetch(self, builder: ArchiveBuilder, task: ShardTask) -> Fetched:
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

    def run_shard(self, task: ShardTask) -> ShardResult:
        """Build archive `task.name`. A failing archive is reported (status "failed", `error` says why and
        what to do) rather than raised, so the other archives of the set still run."""
        settings = task.settings if isinstance(task.settings, ArchiveSettings) else ArchiveSettings()
        storage = Storage(task.root, task.storage_options)
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
        result = ShardResult(task.image_set, task.shard, bytes_downloaded=report.bytes_downloaded)
        result.outcomes.update(report.outcomes)
        result.elapsed_s = report.elapsed_s
        result.detail = asdict(report)
        return result

    def summarise(
        self, root: str, storage_options: Mapping[str, Any], plan: SetPlan, results: list[ShardResult], elapsed_s: float
    ) -> ArchiveSetSummary:
        """Every planned archive's report (done before, converted or failed), by name."""
        head, done_before = plan.notes[0], plan.notes[1:]
        summary = ArchiveSetSummary(str(head["set"]), str(head["source"]))
        summary.archives = [ArchiveReport(**d) for d in (*done_before, *(r.detail for r in results))]  # type: ignore[arg-type]
        summary.archives.sort(key=lambda a: a.name)
        summary.elapsed_s = round(elapsed_s, 3)
        return summary

    def aborted(self, message: str) -> Exception:
        return ArchiveSetError(message)

    def interrupt(self) -> None:
        """Stop this process's in-flight downloads within a chunk (their finished parts are kept)."""
        self._cancel.set()
        with self._lock:
            if self._pool is not None:
                # Do not wait for a transfer blocked in a socket read: it ends at its next chunk.
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None


def run_archive_shard(task: ShardTask) -> ShardResult:
    """Executor entry point: build one archive (`task.name`, e.g. "train_3") of `task.image_set`; raises
    `ArchiveError` if it fails."""
    result = ArchiveStage().run_shard(task)
    if result.detail.get("status") == "failed":
        raise ArchiveError(str(result.detail["name"]), str(result.detail.get("error") or "failed"))
    return result
