"""Errors the stages raise: a stage that cannot start, bad metadata, and what can go wrong with one archive.

A stage that cannot start as asked (no plan, no ledger, unknown model) raises its usage error before writing
anything. An `ArchiveError` fails one archive: the set carries on with the next one and the command exits
non-zero at the end; it never leaves a half-written zip or a ledger row behind for that archive.
"""

from __future__ import annotations

from typing import Any

from oiv4.contracts.errors import InputError, IntegrityError, Oiv4Error, SourceError, StorageError, UsageError


class MetadataError(RuntimeError, InputError):
    """A metadata file is missing, truncated or not in the 2018_04 schema."""


class PlanError(RuntimeError, InputError):
    """The metadata cannot be planned; `problems` lists the `RowProblem` (file, line, reason) of each bad row."""

    def __init__(self, message: str, problems: list[Any] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class UnreliableRead(InputError):
    """A fast reader failed or disagreed with the record count: read the file again with the exact reader."""


class FetchError(RuntimeError, UsageError):
    """The fetch cannot start (no plan, wrong set, layout conflict); the message says what to do."""


class FetchAborted(RuntimeError, StorageError):
    """The run cannot go on (disk full, unwritable root): retrying rows would only burn through them."""


class WriteFailed(StorageError):
    """An OSError `exc` from the root itself (not from an image's bytes), carried from a fetch worker thread to
    the shard's disk policy, which stops the shard with `FetchAborted` instead of blaming the row."""

    def __init__(self, exc: OSError) -> None:
        super().__init__(str(exc))
        self.exc = exc


class HashError(RuntimeError, UsageError):
    """The hash cannot run (no ledger for the set); the message says what to do."""


class DedupError(ValueError, InputError):
    """Duplicates cannot be searched: a set has no plan or unhashed images, or a table lacks a column.

    The message says which command to run first (`oiv4 hash`, `oiv4 plan`).
    """


class FeaturesError(RuntimeError, UsageError):
    """`oiv4 features` cannot run as asked (unknown model, no weights, set not built, ...); one line says why."""


class NoFeaturesError(KeyError, InputError):
    """A model/set pair without any finished feature shard."""

    def __str__(self) -> str:
        return str(self.args[0])


class DamagedFeaturesError(RuntimeError, IntegrityError):
    """A finished shard whose `.npy` is missing or disagrees with its metadata."""


class ArchiveSetError(RuntimeError, UsageError):
    """The archive set cannot be built at all (no plan, bad settings, unusable root); nothing was written."""


class ArchiveError(RuntimeError, Oiv4Error):
    """One archive could not be downloaded, verified or converted; `archive` names it."""

    def __init__(self, archive: str, message: str) -> None:
        super().__init__(f"{archive}: {message}")
        self.archive = archive
        self.detail = message


class ArchiveSourceError(ArchiveError, SourceError):
    """The source cannot serve the archive (missing object, HTTP error, unreachable endpoint)."""


class SourceChangedError(ArchiveSourceError):
    """The remote object changed (size or ETag) while we were downloading it."""


class VerificationError(ArchiveError, IntegrityError):
    """Size, SHA-256 or ETag of the archive does not match what it must be."""


class CorruptStreamError(ArchiveError, IntegrityError):
    """The gzip/deflate stream cannot be decoded; `offset` is where in the compressed bytes it broke.

    `offset` is the first compressed byte of the input block that the decoder rejected and
    `span` that block's length, so the damage lies in `[offset, offset + span)`.
    """

    def __init__(self, archive: str, decoder: str, offset: int, span: int, detail: str) -> None:
        self.where = f"compressed byte {offset:,}" if span <= 1 else f"compressed bytes {offset:,}..{offset + span:,}"
        super().__init__(archive, f"corrupt gzip stream at {self.where} (decoder {decoder}: {detail})")
        self.decoder = decoder
        self.offset = offset
        self.span = span
        self.detail = detail  # the decoder's own words (ArchiveError.detail would be the whole sentence)


class CorruptTarError(ArchiveError, InputError):
    """The decompressed bytes are not a sound tar stream (bad header checksum, truncated member)."""
