"""Stage 1: fetch the two 2018_04 metadata CSVs, resumably, and check they are what we expect."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from oiv4.contracts.errors import MetadataError
from oiv4.contracts.layout import LAYOUT, METADATA_FILES
from oiv4.contracts.schema import COLUMNS
from oiv4.contracts.setting import group, setting
from oiv4.contracts.transfer import TransferSettings
from oiv4.io.download import download_file
from oiv4.io.storage import Storage

DEFAULT_METADATA_BASE = "https://storage.googleapis.com/openimages/2018_04/"


#: Two files every later stage needs: a download that gives up stops the whole build (a failed image is
#: only one ledger row), so it keeps trying longer than the default.
METADATA_TRANSFER = TransferSettings(attempts=8)


@dataclass(frozen=True)
class MetadataSettings:
    base_url: str = setting(
        DEFAULT_METADATA_BASE,
        help="Where the 2018_04 CSVs live; point it at a mirror (e.g. `oiv4 mirror`) to work offline.",
        flag="--base-url",
    )
    force: bool = setting(False, help="Download again even if complete files are present.", flag="--force/--no-force")
    transfer: TransferSettings = group(METADATA_TRANSFER)


def check_header(path: Path) -> None:
    """Fail loudly unless the first line is exactly the 12 expected columns, in order."""
    with open(path, "rb") as fh:
        first = fh.readline(4096).decode("utf-8-sig", errors="replace").strip()
    got = [c.strip().strip('"') for c in first.split(",")]
    if tuple(got) != COLUMNS:
        raise MetadataError(
            f"{path.name}: unexpected header.\n  expected: {','.join(COLUMNS)}\n  found:    {first[:300]}"
        )


def fetch_metadata(
    storage: Storage,
    settings: MetadataSettings | None = None,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> dict[str, int]:
    """Download both CSVs into `<root>/metadata/` and return {file name: size}.

    Files already present and valid are not downloaded again. A remote root (s3://...) is filled via a
    local staging folder, because resumable appends need a local file.
    """
    settings = settings or MetadataSettings()
    base = settings.base_url if settings.base_url.endswith("/") else settings.base_url + "/"
    sizes: dict[str, int] = {}
    staging: Path | None = None
    for name, remote_rel in METADATA_FILES.items():
        rel = LAYOUT.metadata(name)
        local = storage.local_path(rel)  # None on an object store: download to a staging folder, then upload
        if storage.exists(rel) and not settings.force:
            if local is not None:
                check_header(local)
            sizes[name] = storage.size(rel)
            continue
        if local is None and staging is None:
            staging = Path(tempfile.mkdtemp(prefix="oiv4-metadata-"))
        dest = local if local is not None else staging / name
        if settings.force:
            dest.unlink(missing_ok=True)

        def report(done: int, total: int | None, _name: str = name) -> None:
            if progress:
                progress(_name, done, total)

        # download_file keeps bytes in `<name>.part` until the size matches the remote's length.
        size = download_file(base + remote_rel, dest, settings.transfer, report)
        try:
            check_header(dest)
        except MetadataError:
            bad = dest.with_name(dest.name + ".rejected")
            dest.replace(bad)
            raise
        if local is None:
            storage.upload(dest, rel)
        sizes[name] = size
    return sizes
