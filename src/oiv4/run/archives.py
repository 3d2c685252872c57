"""`build_archive_set`: run the archive stage over targets or validation through an executor."""

from __future__ import annotations

from oiv4.contracts.schema import ImageSet
from oiv4.io.storage import Storage
from oiv4.run.executor import ExecutorSettings
from oiv4.run.stage_runner import run_set
from oiv4.stages.archives import ArchiveProgress, ArchiveSetSummary, ArchiveSettings, ArchiveStage

#: Archives run in this process, in order, unless told otherwise: the stage downloads the next archive
#: while this one converts (network and CPU overlap, at most two .tar.gz on disk), and progress events
#: need no pickling. A process pool or a Dask cluster converts more archives at once (one core each).
IN_PROCESS = ExecutorSettings(kind="thread", workers=1)


def build_archive_set(
    storage: Storage,
    image_set: ImageSet | str,
    settings: ArchiveSettings | None = None,
    progress: ArchiveProgress | None = None,
    executor: ExecutorSettings | None = None,
) -> ArchiveSetSummary:
    """Download, verify and convert the archives of `targets` or `validation` under `storage`.

    Only the archives the plan needs are touched (targets: `train_<x>` for each hex digit starting a
    boxable ID); archives already done are skipped. A failing archive is reported in the summary (its
    `error` says why and what to do) and the others still run. Raises ArchiveSetError when nothing can
    be done at all (no plan, bad source), `SettingsChangedError` when an archive started with another
    `max_member_bytes` would be resumed (unless `settings.force_settings`).
    `executor` defaults to `IN_PROCESS`; `progress` events come only from shards run in this process.
    """
    stage = ArchiveStage(progress)
    return run_set(stage, storage, image_set, settings or ArchiveSettings(), executor or IN_PROCESS)
