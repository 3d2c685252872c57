"""What can go wrong with one archive; the classes are defined in `oiv4.contracts.errors` (`stages`).

This module keeps the import path `oiv4.stages.archives.errors` working for code that spells it so
(`SourceError` here is `ArchiveSourceError`).
"""

from __future__ import annotations

from oiv4.contracts.errors import ArchiveError as ArchiveError
from oiv4.contracts.errors import ArchiveSetError as ArchiveSetError
from oiv4.contracts.errors import ArchiveSourceError as SourceError
from oiv4.contracts.errors import CorruptStreamError as CorruptStreamError
from oiv4.contracts.errors import CorruptTarError as CorruptTarError
from oiv4.contracts.errors import SourceChangedError as SourceChangedError
from oiv4.contracts.errors import VerificationError as VerificationError

__all__ = [
    "ArchiveError", "ArchiveSetError", "CorruptStreamError", "CorruptTarError", "SourceChangedError", "SourceError",
    "VerificationError",
]  # fmt: skip
