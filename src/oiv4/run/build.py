"""`oiv4 build`: every stage in order, idempotently.

    metadata -> plan -> archives (targets, validation) -> fetch (train, extended_targets) -> verify
    -> hash (phash/checksum for rows stored without them: archive sets) -> dedup -> report

Each stage already skips what is done (complete CSVs, an up-to-date plan, converted archives, rows
with a ledger outcome), so running `build` again after any interruption only does what is left.
The stages keep their own APIs; this module only sequences them and reports to an observer, so the
CLI, the demo and a notebook user all drive the same code. The report is a layer above this one, so
its step is handed in by the caller (`run_build(..., report=...)`: the CLI and the demo pass one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace

from oiv4.contracts.errors import DedupError
from oiv4.contracts.schema import ImageSet
from oiv4.contracts.setting import group, setting
from oiv4.io.ledger import sets_with_ledger
from oiv4.io.storage import Storage
from oiv4.run.archives import build_archive_set
from oiv4.run.executor import ExecutorSettings
from oiv4.run.fetch import fetch_set
from oiv4.run.hash import hash_set
from oiv4.stages.archives import ArchiveProgress, ArchiveSetSummary, ArchiveSettings
from oiv4.stages.dedup import DedupSettings, DedupSummary, run_dedup
from oiv4.stages.fetch import FetchProgress, FetchSettings, FetchSummary
from oiv4.stages.hash import HashSummary
from oiv4.stages.metadata import MetadataSettings, fetch_metadata
from oiv4.stages.plan import PlanSettings, PlanSummary, build_plan
from oiv4.stages.verify import VerifyReport, VerifySettings, verify

STAGES = ("metadata", "plan", "archives", "fetch", "verify", "hash", "dedup", "report")


@dataclass(frozen=True)
class BuildSettings:
    """Settings of every stage, plus which sets to build and which closing stages to run.

    Each stage that downloads keeps its own `transfer` settings (their defaults differ per stage, see
    `TransferSettings`); `oiv4 build` spells them per stage, and one `--allow-private-networks` /
    `--ca-bundle` sets them for all.
    """

    metadata: MetadataSettings = field(default_factory=MetadataSettings)
    plan: PlanSettings = field(default_factory=PlanSettings)
    archives: ArchiveSettings = field(default_factory=ArchiveSettings)
    fetch: FetchSettings = field(default_factory=FetchSettings)
    executor: ExecutorSettings = field(default_factory=ExecutorSettings)
    #: How the closing verify runs; it checks the sets below.
    verification: VerifySettings = group(VerifySettings(), unused={"sets": "verify checks the sets chosen with --set"})
    sets: tuple[ImageSet, ...] = setting(
        tuple(ImageSet), help="Only these sets (repeatable).", flag="--set", short="-s", default_text="all four"
    )
    verify: bool = setting(True, help="Verify the sets once they are built.", flag="--verify/--no-verify")
    hash: bool = setting(
        True,
        help="Record phash + checksum for stored images lacking them (archive sets) once verified.",
        flag="--hash/--no-hash",
    )
    dedup: bool = setting(
        True,
        help="Find duplicates within and across the sets (dedup/summary.json) at the end.",
        flag="--dedup/--no-dedup",
    )
    report: bool = setting(
        True,
        help="Write the HTML report at the end (the `report` step given to run_build).",
        flag="--report/--no-report",
    )
    archive_executor: ExecutorSettings | None = field(
        default=None,
        metadata={
            "help": "Where archive shards run.",
            "cli": False,
            "why": "derived from --executor: on the cluster with Dask, else threads of this process (progress shown)",
        },
    )


class BuildObserver:
    """What a build tells the outside world. The default is silent; the CLI renders it with rich."""

    def stage(self, name: str, detail: str = "") -> None:
        pass

    def fetch_view(self, image_set: str) -> AbstractContextManager[Callable[[FetchProgress], None] | None]:
        return _null_view()

    def archive_progress(self, image_set: str) -> ArchiveProgress:
        return ArchiveProgress()

    def done(self, name: str, result: object) -> None:
        pass


@contextmanager
def _null_view() -> Iterator[None]:
    yield None


@dataclass
class BuildResult:
    """What each stage returned; `ok` is False if an archive failed or verify found damage."""

    metadata: dict[str, int] = field(default_factory=dict)
    plan: PlanSummary | None = None
    archives: dict[str, ArchiveSetSummary] = field(default_factory=dict)
    fetch: dict[str, FetchSummary] = field(default_factory=dict)
    verify: VerifyReport | None = None
    hash: dict[str, HashSummary] = field(default_factory=dict)
    dedup: DedupSummary | None = None
    dedup_error: str | None = None  # why dedup could not compare (e.g. images left unhashed as unreadable)
    report_path: str | None = None
    root: str = ""

    @property
    def ok(self) -> bool:
        archives_ok = all(s.ok for s in self.archives.values())
        return archives_ok and (self.verify is None or self.verify.ok)


#: The closing report step: writes the run report under the root, returns where it is.
ReportStep = Callable[[Storage], str]


def run_build(
    storage: Storage,
    settings: BuildSettings | None = None,
    observer: BuildObserver | None = None,
    report: ReportStep | None = None,
) -> BuildResult:
    """Run every stage for `settings.sets` under `storage`; stage errors propagate with their own types.

    `report` is the last step (e.g. `lambda s: oiv4.report.build_report(s, ReportSettings())`); it runs
    when given and `settings.report` is on.
    """
    settings = settings or BuildSettings()
    obs = observer or BuildObserver()
    result = BuildResult(root=storage.root)

    obs.stage("metadata", settings.metadata.base_url)
    result.metadata = fetch_metadata(storage, settings.metadata)
    obs.done("metadata", result.metadata)

    obs.stage("plan")
    result.plan = build_plan(storage, settings.plan)
    obs.done("plan", result.plan)

    archive_executor = settings.archive_executor or (settings.executor if settings.executor.kind == "dask" else None)
    for image_set in (s for s in settings.sets if s.from_archives):
        obs.stage("archives", image_set.value)
        summary = build_archive_set(
            storage, image_set, settings.archives, obs.archive_progress(image_set.value), archive_executor
        )
        result.archives[image_set.value] = summary
        obs.done("archives", summary)

    for image_set in (s for s in settings.sets if not s.from_archives):
        obs.stage("fetch", image_set.value)
        with obs.fetch_view(image_set.value) as on_progress:
            summary = fetch_set(storage, image_set, settings.fetch, settings.executor, progress=on_progress)
        result.fetch[image_set.value] = summary
        obs.done("fetch", summary)

    if settings.verify:
        obs.stage("verify")
        checks = settings.verification
        if checks.sets is None:
            checks = replace(checks, sets=tuple(s.value for s in settings.sets))
        result.verify = verify(storage, checks)
        obs.done("verify", result.verify)

    _hash_and_dedup(storage, settings, obs, result)

    if settings.report and report is not None:
        obs.stage("report")
        result.report_path = report(storage)
        obs.done("report", result.report_path)
    return result


def _hash_and_dedup(storage: Storage, settings: BuildSettings, obs: BuildObserver, result: BuildResult) -> None:
    """Hash what is stored without phash/checksum (archive sets; sets stored before), then find duplicates."""
    built = sets_with_ledger(storage, settings.sets)
    if settings.hash:
        for image_set in built:
            obs.stage("hash", image_set.value)
            result.hash[image_set.value] = hash_set(storage, image_set, executor=settings.executor)
            obs.done("hash", result.hash[image_set.value])
    if settings.dedup and built:
        obs.stage("dedup")
        try:
            result.dedup = run_dedup(storage, DedupSettings(sets=tuple(s.value for s in built)))
        except DedupError as exc:  # a set with unhashed images: say so, the build itself is done
            result.dedup_error = str(exc)
        obs.done("dedup", result.dedup or result.dedup_error)
