"""`oiv4 build`: every stage in order, idempotently.

    metadata -> plan -> archives (targets, validation) -> fetch (train, extended_targets) -> verify -> report

Each stage already skips what is done (complete CSVs, an up-to-date plan, converted archives, rows
with a ledger outcome), so running `build` again after any interruption only does what is left.
The stages keep their own APIs; this module only sequences them and reports to an observer, so the
CLI, the demo and a notebook user all drive the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace

from oiv4.contracts.schema import ImageSet
from oiv4.contracts.setting import setting
from oiv4.io.storage import Storage
from oiv4.report import ReportSettings, build_report
from oiv4.run.executor import ExecutorSettings
from oiv4.stages.archives import ArchiveProgress, ArchiveSetSummary, ArchiveSettings, build_archive_set
from oiv4.stages.fetch import FetchProgress, FetchSettings, FetchSummary, fetch_set
from oiv4.stages.metadata import MetadataSettings, fetch_metadata
from oiv4.stages.plan import PlanSettings, PlanSummary, build_plan
from oiv4.stages.verify import VerifyReport, VerifySettings, verify

STAGES = ("metadata", "plan", "archives", "fetch", "verify", "report")


@dataclass(frozen=True)
class BuildSettings:
    """Settings of every stage, plus which sets to build and which closing stages to run."""

    metadata: MetadataSettings = field(default_factory=MetadataSettings)
    plan: PlanSettings = field(default_factory=PlanSettings)
    archives: ArchiveSettings = field(default_factory=ArchiveSettings)
    fetch: FetchSettings = field(default_factory=FetchSettings)
    executor: ExecutorSettings = field(default_factory=ExecutorSettings)
    #: How the closing verify runs; its `sets` default to `sets` below.
    verification: VerifySettings = field(default_factory=VerifySettings)
    reporting: ReportSettings = field(default_factory=ReportSettings)
    sets: tuple[ImageSet, ...] = setting(
        tuple(ImageSet), help="Only these sets (repeatable).", flag="--set", short="-s", default_text="all four"
    )
    verify: bool = setting(True, help="Verify the sets once they are built.")
    report: bool = setting(True, help="Write the HTML report at the end.")


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
    report_path: str | None = None
    root: str = ""

    @property
    def ok(self) -> bool:
        archives_ok = all(s.ok for s in self.archives.values())
        return archives_ok and (self.verify is None or self.verify.ok)


def run_build(
    storage: Storage, settings: BuildSettings | None = None, observer: BuildObserver | None = None
) -> BuildResult:
    """Run every stage for `settings.sets` under `storage`; stage errors propagate with their own types."""
    settings = settings or BuildSettings()
    obs = observer or BuildObserver()
    result = BuildResult(root=storage.root)

    obs.stage("metadata", settings.metadata.base_url)
    result.metadata = fetch_metadata(storage, settings.metadata)
    obs.done("metadata", result.metadata)

    obs.stage("plan")
    result.plan = build_plan(storage, settings.plan)
    obs.done("plan", result.plan)

    for image_set in (s for s in settings.sets if s.from_archives):
        obs.stage("archives", image_set.value)
        summary = build_archive_set(storage, image_set, settings.archives, obs.archive_progress(image_set.value))
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

    if settings.report:
        obs.stage("report")
        result.report_path = build_report(storage, settings.reporting)
        obs.done("report", result.report_path)
    return result
