"""What can go wrong with one archive, as exceptions whose message alone tells the user what to do.

An `ArchiveError` fails one archive (the set carries on with the next one and the command exits
non-zero at the end); it never leaves a half-written zip or a ledger row behind for that archive.
"""

from __future__ import annotations

from oiv4.contracts import errors


class ArchiveError(RuntimeError, errors.Oiv4Error):
    """One archive could not be downloaded, verified or converted; `archive` names it."""

    def __init__(self, archive: str, message: str) -> None:
        super().__init__(f"{archive}: {message}")
        self.archive = archive
        self.detail = message


class SourceError(ArchiveError, errors.SourceError):
    """The source cannot serve the archive (missing object, HTTP error, unreachable endpoint)."""


class SourceChangedError(SourceError):
    """The remote object changed (size or ETag) while we were downloading it."""


class VerificationError(ArchiveError, errors.IntegrityError):
    """Size, SHA-256 or ETag of the archive does not match what it must be."""


class CorruptStreamError(ArchiveError, errors.IntegrityError):
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


class CorruptTarError(ArchiveError, errors.InputError):
    """The decompressed bytes are not a sound tar stream (bad header checksum, truncated member)."""


class ArchiveSetError(RuntimeError, errors.UsageError):
    """The set cannot be built at all (no plan, bad settings, unusable root); nothing was written."""
