"""`oiv4 report`: one self-contained HTML page describing a build (`<root>/report/index.html`).

Per set: counts and outcome breakdown, throughput over time (from the ledger's `started_at` +
`elapsed_s`), stored size / dimension / aspect distributions, a contact sheet of sample images and
latency and attempts histograms, rates per URL host, the failure kinds (one row per kind, URLs and
numbers taken out), the first failed images by ImageID and a CSV of all of them; thumbnails open a larger
copy with their ledger row. After `oiv4 dedup`: a Duplicates section (headline, per set pair, by kind, example
pairs side by side at several distances). Everything is inline (CSS, SVG, images as data:
URIs), so the file can be mailed, archived or opened offline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from oiv4.contracts.errors import SettingError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.limits import at_least
from oiv4.contracts.schema import ImageSet
from oiv4.contracts.setting import setting
from oiv4.io.storage import Storage
from oiv4.read.dataset import Dataset
from oiv4.read.set_reader import SetReader
from oiv4.report.data import SetStats, collect
from oiv4.report.duplicates import collect_duplicates, duplicates_section
from oiv4.report.neighbors import neighbors_section
from oiv4.report.page import render


@dataclass(frozen=True)
class ReportSettings:
    """`samples` thumbnails per set on the contact sheet; `out` overrides where the page is written."""

    samples: int = setting(24, help="Thumbnails per set on the contact sheet.", flag="--samples")
    out: str | None = setting(
        None,
        help="Where to write the page: a local path or fsspec URL.",
        flag="--out",
        short="-o",
        default_text="<root>/report/index.html",
    )

    def __post_init__(self) -> None:
        at_least(self, 0, "samples")
        if self.out is not None and (not self.out.strip() or self.out.endswith("/")):
            raise SettingError(f"--out must name a file, got {self.out!r}")


def build_report(
    root: str | Storage,
    settings: ReportSettings | None = None,
    *,
    on_set: Callable[[str], None] | None = None,
    **storage_options: Any,
) -> str:
    """Write the report and return where it went (a local path or URL)."""
    settings = settings or ReportSettings()
    storage = root if isinstance(root, Storage) else Storage(str(root), storage_options)
    html = render_report(storage, settings, on_set=on_set)
    data = html.encode()
    if settings.out is None:
        rel = f"{LAYOUT.report_dir()}/index.html"
        storage.write_bytes(rel, data)
        return storage.path(rel)
    target = Storage(settings.out.rsplit("/", 1)[0] if "/" in settings.out else ".", storage.storage_options)
    name = settings.out.rsplit("/", 1)[-1]
    target.write_bytes(name, data)
    return target.path(name)


def render_report(
    storage: Storage, settings: ReportSettings | None = None, *, on_set: Callable[[str], None] | None = None
) -> str:
    """The report page as a string (what `build_report` writes)."""
    settings = settings or ReportSettings()
    ds = Dataset(storage)
    stats: list[SetStats] = []
    for image_set in ImageSet:
        if image_set.value not in ds.sets:
            continue
        if on_set is not None:
            on_set(image_set.value)
        # A fresh reader per set, dropped after it: a 6M-row set's in-memory ledger must not outlive its section.
        reader = SetReader(storage, image_set, ds.blobs)
        page_dir = LAYOUT.report_dir() if settings.out is None else None
        s = collect(storage, image_set, reader, samples=settings.samples, page_dir=page_dir)
        del reader
        if s is not None:
            stats.append(s)
    dups = duplicates_section(collect_duplicates(storage, ds)) + neighbors_section(storage, ds)
    ds.close()
    return render(storage.root, stats, duplicates=dups)


__all__ = ["ReportSettings", "SetStats", "build_report", "render_report"]
