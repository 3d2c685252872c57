"""The archive sets (targets, validation): CVDF `.tar.gz` archives -> random-access zips, in one pass.

    from oiv4.run.archives import build_archive_set
    from oiv4.stages.archives import ArchiveSettings
    summary = build_archive_set(Storage("/data/oi"), "validation", ArchiveSettings(source="s3://open-images-dataset/tar/"))

Modules: `catalog` (which archives, published sizes/SHA-256), `sources` (S3 / https / folder),
`download` (parallel ranged parts, resumable), `gunzip` (decoders, exact error offsets), `tarstream`
(tar headers), `members` (what may be stored), `convert` (the one pass), `settings` (settings, progress
events, reports), `checks` (verification policy, done-ness), `builder` (one archive, end to end),
`stage` (`ArchiveStage`: one shard per archive, run by the run layer's `build_archive_set`).
"""

from __future__ import annotations

from oiv4.contracts.errors import (
    ArchiveError,
    ArchiveSetError,
    CorruptStreamError,
    CorruptTarError,
    SourceChangedError,
    VerificationError,
)
from oiv4.contracts.errors import ArchiveSourceError as SourceError
from oiv4.stages.archives.catalog import KnownArchive, load_known_archives
from oiv4.stages.archives.checks import archive_done
from oiv4.stages.archives.convert import negative_row
from oiv4.stages.archives.settings import ArchiveProgress, ArchiveReport, ArchiveSetSummary, ArchiveSettings
from oiv4.stages.archives.stage import ArchiveStage, run_archive_shard

__all__ = [
    "ArchiveError",
    "ArchiveProgress",
    "ArchiveReport",
    "ArchiveSetError",
    "ArchiveSetSummary",
    "ArchiveSettings",
    "ArchiveStage",
    "CorruptStreamError",
    "CorruptTarError",
    "KnownArchive",
    "SourceChangedError",
    "SourceError",
    "VerificationError",
    "archive_done",
    "load_known_archives",
    "negative_row",
    "run_archive_shard",
]
