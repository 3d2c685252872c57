"""Settings, progress events and reports of the archive stage (targets, validation)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from oiv4.stages.archives.catalog import KnownArchive
from oiv4.stages.archives.download import TransferSettings
from oiv4.stages.archives.gunzip import DEFAULT_DECODERS
from oiv4.stages.archives.members import DEFAULT_MAX_MEMBER_BYTES
from oiv4.stages.archives.sources import CVDF_S3


@dataclass(frozen=True)
class ArchiveSettings:
    """How an archive set is built. Defaults fetch from the public CVDF bucket, anonymously."""

    source: str = CVDF_S3  # s3://bucket/prefix/, http(s)://host/prefix/, or a local folder
    s3_endpoint: str | None = None  # e.g. http://127.0.0.1:5000 for a moto server
    part_size: int = 64 << 20
    connections: int = 8
    attempts: int = 5  # per part
    backoff_s: float = 1.0
    checkpoint_s: float = 2.0  # a killed download loses at most this many seconds of progress
    timeout_s: float = 120.0
    keep_tar: bool = False  # keep `<set>/images/<archive>.tar.gz` (feature extraction reads it)
    stream: bool = False  # network -> zip with no .tar.gz on disk at all
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES
    decoders: tuple[str, ...] = DEFAULT_DECODERS  # tried in order; later ones are fallbacks
    require_published: bool | None = None  # None: required when the source is the real CVDF bucket
    known: Mapping[str, KnownArchive] | None = field(default=None, hash=False)  # None: the packaged table
    only: tuple[str, ...] = ()  # restrict to these archive stems, e.g. ("train_3",)
    #: Resume an archive started with another `max_member_bytes` anyway; the override is recorded.
    force_settings: bool = False

    @property
    def transfer(self) -> TransferSettings:
        return TransferSettings(self.part_size, self.connections, self.attempts, self.backoff_s, self.checkpoint_s)

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
