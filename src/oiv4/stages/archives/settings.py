"""Settings, progress events and reports of the archive stage (targets, validation)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from oiv4.contracts.errors import SettingError
from oiv4.contracts.limits import above, at_least
from oiv4.contracts.setting import setting
from oiv4.io.http import NetworkSettings
from oiv4.stages.archives.catalog import KnownArchive
from oiv4.stages.archives.download import TransferSettings
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
    )
    s3_endpoint: str | None = setting(
        None, help="S3 endpoint URL for an s3:// source, e.g. http://127.0.0.1:5000.", default_text="AWS us-east-1"
    )
    part_size: int = setting(64 << 20, help="Size of each ranged request, MiB.", flag="--part-size-mb", scale=1 << 20)
    connections: int = setting(8, help="Ranged requests in flight at once.")
    attempts: int = setting(5, help="Attempts per ranged request.")
    backoff_s: float = setting(
        1.0, help="Base of the exponential backoff between attempts, in seconds.", flag="--backoff"
    )
    checkpoint_s: float = setting(
        2.0, help="Seconds between download checkpoints (what a kill can lose).", flag="--checkpoint"
    )
    timeout_s: float = setting(120.0, help="Seconds a ranged request may stay silent.", flag="--timeout")
    keep_tar: bool = setting(
        False, help="Keep <set>/images/<archive>.tar.gz after conversion (feature extraction reads it)."
    )
    stream: bool = setting(
        False, help="Network straight into the zip: no .tar.gz on disk at all (a retry re-downloads)."
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
    allow_private_networks: bool = setting(
        False, help="Also download from loopback, private and link-local addresses (an https mirror on your network)."
    )
    ca_bundle: str | None = setting(
        None, help="PEM file of extra CA certificates, e.g. for corporate TLS interception.", default_text="none"
    )
    only: tuple[str, ...] = setting((), help="Only these archives, repeatable, e.g. --only train_3.")
    force_settings: bool = setting(
        False,
        help="Resume archives started with other settings (max member size) anyway; the override is recorded.",
    )

    def __post_init__(self) -> None:
        at_least(self, 1, "connections", "attempts")
        above(self, 0, "part_size", "timeout_s", "max_member_bytes")
        at_least(self, 0, "backoff_s", "checkpoint_s")  # checkpoint 0: after every chunk
        unknown = [d for d in self.decoders if d not in DECODERS]
        if unknown:
            raise SettingError(f"unknown --decoder {unknown[0]!r}: use {', '.join(DECODERS)}")

    @property
    def network(self) -> NetworkSettings:
        """What the https source's connections may reach and trust."""
        return NetworkSettings(self.allow_private_networks, self.ca_bundle)

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
