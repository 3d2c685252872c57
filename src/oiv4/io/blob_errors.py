"""What reading stored bytes can raise on purpose."""

from __future__ import annotations

from oiv4.contracts.errors import InputError, IntegrityError, Oiv4Error


class ReaderError(Oiv4Error):
    """Base class of everything the reader raises on purpose."""


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
