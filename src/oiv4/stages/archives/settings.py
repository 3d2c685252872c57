"""Settings, progress events and reports of the archive stage (targets, validation)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from oiv4.contracts.errors import SettingError
from oiv4.contracts.limits import above
from oiv4.contracts.setting import group, setting
from oiv4.contracts.transfer import TransferSettings
from oiv4.stages.archives.catalog import KnownArchive
from oiv4.stages.archives.gunzip import DECODERS, DEFAULT_DECODERS
from oiv4.stages.archives.members import DEFAULT_MAX_MEMBER_BYTES
from oiv4.stages.archives.sources import CVDF_S3


@dataclass(frozen=True)
class ArchiveSettings:
    """How an archive set is built. Defaults fetch from the public CVDF bucket, anonymously."""

    source: str = setting(
        CVDF_S3,
        help="Where the .tar.gz archives are: an s3:// prefix (read anonymously), an https:// prefix, "
        "or a local folder that already holds them (read in place, never modified).",
        flag="--source",
    )
    s3_endpoint: str | None = setting(
        None,
        help="S3 endpoint URL for an s3:// source, e.g. http://127.0.0.1:5000.",
        flag="--s3-endpoint",
        default_text="AWS us-east-1",
    )
    keep_tar: bool = setting(
        False,
        help="Keep <set>/images/<archive>.tar.gz after conversion (feature extraction reads it).",
        flag="--keep-tar/--no-keep-tar",
    )
    stream: bool = setting(
        False,
        help="Network straight into the zip: no .tar.gz on disk at all (a retry re-downloads).",
        flag="--stream/--no-stream",
    )
    max_member_bytes: int = setting(
        DEFAULT_MAX_MEMBER_BYTES,
        help="Members larger than this are refused (hostile_member), MB.",
        flag="--max-member-mb",
        scale=1_000_000,
        cli_type=float,
    )
    decoders: tuple[str, ...] = setting(
        DEFAULT_DECODERS,
        help="gzip decoder, repeatable, tried in order (later ones are fallbacks). Choices: zlib-ng, isal, zlib.",
        flag="--decoder",
    )
    require_published: bool | None = setting(
        None,
        help="Demand the published size and SHA-256 of every archive (other sources are verified by size and "
        "ETag, and the summary says so).",
        flag="--require-published/--allow-unpublished",
        default_text="only for the real CVDF bucket",
    )
    known: Mapping[str, KnownArchive] | None = field(
        default=None,
        hash=False,
        metadata={
            "help": "Published size and SHA-256 per archive (None: the packaged table).",
            "cli": False,
            "why": "a table, not a value: tests and benchmarks pass their own",
        },
    )
    #: 16 GB archives from one bucket: the defaults (long silences allowed, no deadline per attempt,
    #: parallel ranged parts) are chosen for them.
    transfer: TransferSettings = group(TransferSettings())
    only: tuple[str, ...] = setting((), help="Only these archives, repeatable, e.g. --only train_3.", flag="--only")
    force_settings: bool = setting(
        False,
        help="Resume archives started with other settings (max member size) anyway; the override is recorded.",
        flag="--force-settings/--no-force-settings",
    )

    def __post_init__(self) -> None:
        above(self, 0, "max_member_bytes")
        unknown = [d for d in self.decoders if d not in DECODERS]
        if unknown:
            raise SettingError(f"unknown --decoder {unknown[0]!r}: use {', '.join(DECODERS)}")

    def output_settings(self) -> dict[str, str | int | float | bool | None]:
        """What decides the stored bytes, recorded with each archive's shard. Members are copied byte for
        byte (zip STORED), so only the member size limit matters: it decides which members are stored."""
        return {"container": "zip, members stored", "max_member_bytes": self.max_member_bytes}


class ArchiveProgress:
    """Progress events; the CLI renders them with rich, the API default ignores them.

    Methods are called from download and conversion threads: implementations must be thread-safe.
    """

    def begin(self, stage: str, name: str, total: int | None) -> None:
        """`stage` is "download" or "convert"; `total` in bytes (compressed)."""

    def advance(self, stage: str, name: str, n: int) -> None:
        pass

    def end(self, stage: str, name: str) -> None:
        pass

    def message(self, text: str) -> None:
        pass


@dataclass
class ArchiveReport:
    """What happened to one archive."""

    name: str
    shard: int
    status: str  # "converted", "done_before" or "failed"
    verification: str = ""  # how the archive's bytes were verified, in a sentence
    verified_by: str = ""  # the same in two words; "published SHA-256" only for the real archives
    outcomes: dict[str, int] = field(default_factory=dict)
    members: int = 0
    bytes_downloaded: int = 0
    parts_resumed: int = 0
    compressed_bytes: int = 0
    sha256: str = ""  # of the .tar.gz as read (always computed: it is the archive's identity)
    zip_bytes: int = 0
    decoder: str = ""
    elapsed_s: float = 0.0
    error: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class ArchiveSetSummary:
    """What `build_archive_set` did; details per image are in the ledger."""

    image_set: str
    source: str
    archives: list[ArchiveReport] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def failed(self) -> list[ArchiveReport]:
        return [a for a in self.archives if a.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def outcomes(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for a in self.archives:
            total.update(a.outcomes)
        return total

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "outcomes": dict(self.outcomes)}
