"""The archive sets (targets, validation): CVDF `.tar.gz` archives -> random-access zips, in one pass.

    from oiv4.stages.archives import ArchiveSettings, build_archive_set
    summary = build_archive_set(Storage("/data/oi"), "validation", ArchiveSettings(source="s3://open-images-dataset/tar/"))

Modules: `catalog` (which archives, published sizes/SHA-256), `sources` (S3 / https / folder),
`download` (parallel ranged parts, resumable), `gunzip` (decoders, exact error offsets), `tarstream`
(tar headers), `members` (what may be stored), `convert` (the one pass), `build` (the set, the ledger).
"""

from __future__ import annotations

from oiv4.stages.archives.build import (
    ArchiveProgress,
    ArchiveReport,
    ArchiveSetSummary,
    ArchiveSettings,
    archive_done,
    build_archive_set,
    run_archive_shard,
)
from oiv4.stages.archives.catalog import KnownArchive, load_known_archives
from oiv4.stages.archives.convert import negative_row
from oiv4.stages.archives.errors import (
    ArchiveError,
    ArchiveSetError,
    CorruptStreamError,
    CorruptTarError,
    SourceChangedError,
    SourceError,
    VerificationError,
)

__all__ = [
    "ArchiveError",
    "ArchiveProgress",
    "ArchiveReport",
    "ArchiveSetError",
    "ArchiveSetSummary",
    "ArchiveSettings",
    "CorruptStreamError",
    "CorruptTarError",
    "KnownArchive",
    "SourceChangedError",
    "SourceError",
    "VerificationError",
    "archive_done",
    "build_archive_set",
    "load_known_archives",
    "negative_row",
    "run_archive_shard",
]
