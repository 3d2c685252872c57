"""`oiv4 demo`: the whole pipeline, offline, against a generated mirror on 127.0.0.1.

The mirror runs in its own process (so serving does not compete with the build for this process's
GIL) and behaves like the real sources: CSVs in the real schema, Flickr-like originals with their
misbehaviours, CVDF-layout archives. The build code is exactly `oiv4 build`'s, with the mirror's URLs.
It lives in the CLI layer because it starts the mirror and closes with the report (a layer above `run`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from oiv4.contracts.errors import SettingError
from oiv4.contracts.limits import at_least, within
from oiv4.contracts.setting import setting
from oiv4.contracts.transfer import TransferSettings
from oiv4.io.storage import Storage
from oiv4.report import ReportSettings, build_report
from oiv4.run.build import BuildObserver, BuildResult, BuildSettings, run_build
from oiv4.run.executor import ExecutorSettings
from oiv4.stages.archives import ArchiveSettings
from oiv4.stages.fetch import FETCH_TRANSFER, FetchSettings
from oiv4.stages.metadata import METADATA_TRANSFER, MetadataSettings
from oiv4.stages.plan import PlanSettings
from oiv4_mirror import MirrorProcess, UniverseSpec


@dataclass(frozen=True)
class DemoSettings:
    root: str = setting("demo-data", help="Where the demo sets are built.", flag="--root", short="-r")
    images: int = setting(3000, help="Rows in the generated universe (all subsets).", flag="--images")
    seed: int = setting(0, help="Seed of the generated universe.", flag="--seed")
    megapixels: tuple[float, float] = setting(
        (0.5, 3.0), help="Range of the originals' sizes, MIN MAX.", flag="--megapixels"
    )
    #: The demo's train set: the first N URL-set candidates, so both train and extended_targets are non-empty.
    train_size: int = setting(
        1000,
        help="Size of the demo's train set (the rest of the candidates are extended_targets).",
        flag="--train-size",
    )
    workers: int | None = setting(
        None, help="Worker processes for the fetch stage.", flag="--workers", default_text="one per core"
    )
    duplicates: float = setting(
        0.03,
        help="Share of rows planted as copies of other rows (plus a third as many look-alikes) for dedup to find.",
        flag="--duplicates",
    )

    def __post_init__(self) -> None:
        at_least(self, 1, "images", "workers")
        within(self, 0.0, 0.3, "duplicates")
        at_least(self, 0, "seed", "train_size")
        low, high = self.megapixels
        if not 0 < low <= high:
            raise SettingError(f"--megapixels must be MIN MAX with 0 < MIN <= MAX, got {low:g} {high:g}")


def demo_build_settings(settings: DemoSettings, base_url: str) -> BuildSettings:
    """Build settings pointing at a mirror; timeouts shortened so the mirror's slow trickles end quickly.
    The mirror listens on 127.0.0.1, which the network guard refuses unless private networks are allowed."""
    private = {"allow_private_networks": True}
    fetch = replace(FETCH_TRANSFER, **private, deadline_s=6.0, attempts=3, backoff_s=0.5)
    return BuildSettings(
        metadata=MetadataSettings(
            base_url=f"{base_url}/openimages/2018_04/", transfer=replace(METADATA_TRANSFER, **private)
        ),
        plan=PlanSettings(train_size=settings.train_size, shard_rows=250),
        archives=ArchiveSettings(source=f"{base_url}/tar/", transfer=TransferSettings(**private)),
        fetch=FetchSettings(transfer=fetch),
        executor=ExecutorSettings(workers=settings.workers),
    )


def write_report(storage: Storage) -> str:
    """The build's closing step: the HTML run report with default settings (also what `oiv4 build` runs)."""
    return build_report(storage, ReportSettings())


def run_demo(settings: DemoSettings | None = None, observer: BuildObserver | None = None) -> BuildResult:
    """Start a mirror, build every set from it into `settings.root`, stop the mirror."""
    settings = settings or DemoSettings()
    spec = UniverseSpec(
        seed=settings.seed,
        n_images=settings.images,
        megapixels=settings.megapixels,
        trickle_seconds=15.0,
        duplicate_fraction=settings.duplicates,
        hard_negative_fraction=settings.duplicates / 3,
    )
    mirror = MirrorProcess(spec)
    try:
        return run_build(Storage(settings.root), demo_build_settings(settings, mirror.base_url), observer, write_report)
    finally:
        mirror.stop()
