"""Errors about the data oiv4 reads: IDs, checksums, JPEG layouts and the bytes stored under the root.

`ReaderError` is the base a caller of the read API catches for "this stored image cannot be served"; each
concrete class also keeps the builtin base Python code already catches (KeyError for a missing image,
OSError for damaged bytes, ValueError for a malformed value).
"""

from __future__ import annotations

from oiv4.contracts.errors import Busy, InputError, IntegrityError, Oiv4Error, StorageError


class HostileIdError(ValueError, InputError):
    """An ImageID that is not 16 lowercase hex characters was about to become a path."""


class UnsafePath(ValueError, StorageError):
    """A relative path that would leave the root or pass through a symlink; ledger outcome `unsafe_path`."""


class ChecksumError(ValueError, IntegrityError):
    """A checksum string is malformed or names an algorithm we do not know; the message says which."""


class JpegLayoutError(ValueError, InputError):
    """The marker layout is broken; the message says where (one line)."""


class ReaderError(Oiv4Error):
    """Base class of everything reading stored bytes raises on purpose."""


class ImageNotFoundError(ReaderError, KeyError, InputError):
    """The ImageID is not stored in this set (never planned, or planned but its outcome is not ok)."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else "image not found"


class BadArchiveError(ReaderError, OSError, IntegrityError):
    """A zip or tar container cannot be indexed (truncated, not an archive, unsound central directory)."""


class CorruptImageError(ReaderError, OSError, IntegrityError):
    """The stored bytes of one image are damaged (missing member data, CRC mismatch, short file)."""


class BadLocationError(ReaderError, ValueError, InputError):
    """A ledger `location` that cannot name a stored image (absolute, `..`, unknown container type)."""


class LedgerChangingError(RuntimeError, Busy):
    """A set's ledger kept changing under the reader: another run is writing it; read again when it is done."""
