"""Every error oiv4 raises on purpose, under one root and a few categories, each with its exit code.

A caller (the CLI, a notebook, a scheduler) decides what to do from the *category*, never from a list of
concrete classes: the CLI prints `oiv4 <command>: <message>` and exits with `exit_code`. This package is the
one place the tree lives; import every class from here (`from oiv4.contracts.errors import PlanError`).
Concrete classes keep the builtin bases callers already catch (ValueError, KeyError, OSError, RuntimeError).

    Oiv4Error                      exit 1: failed in a way no category describes
    ├── UsageError                 2   SettingError > SettingRangeError; SettingsChangedError, SettingsTypeError,
    │                                  MissingExtraError, RootError, FetchError, HashError, FeaturesError,
    │                                  ArchiveSetError
    ├── InputError                 3   OutcomeError (this image ends in outcome X: a refused download, a damaged
    │                                  JPEG); HostileIdError, JpegLayoutError, MetadataError, PlanError,
    │                                  UnreliableRead, DedupError, NoFeaturesError; ImageNotFoundError,
    │                                  BadLocationError (readers); CorruptTarError (archives)
    ├── SourceError                4   TransientError, UnreachableError, ChangedError, NotFoundError, BlockedError,
    │                                  TlsError, DownloadError (transfers); BodyTooLarge, BlockedAddress;
    │                                  ArchiveSourceError > SourceChangedError (archives)
    ├── StorageError               5   UnwritableRootError, UnsafePath, FetchAborted, WriteFailed,
    │                                  DiskError (transfers)
    ├── IntegrityError             6   DamagedFileError, ChecksumError, DamagedFeaturesError;
    │                                  BadArchiveError, CorruptImageError (readers);
    │                                  VerificationError, CorruptStreamError (archives)
    ├── ExecutionError             7   DaskSetupError
    ├── Incomplete                 8
    ├── Busy                       9   RootLockedError, LedgerChangingError
    └── Interrupted              130   Cancelled (transfers)
    Bases without a category, caught for "this one thing failed": TransferError (`transfer`), ReaderError
    (`data`), ArchiveError (`stages`); each concrete subclass adds its category.

The classes are defined by area: `environment` (settings, extras, root, lock, executor), `data` (IDs,
checksums, stored bytes), `transfer` (the network), `stages` (a stage that cannot start, archives); the
root, the categories and the exit codes (`EXIT_CODES`, which README's table and `oiv4 --help` are generated
from) in `categories`.
"""

from __future__ import annotations

from oiv4.contracts.errors.categories import (
    CATEGORIES,
    COMPLETE_WITH_FAILURES,
    EXIT_CODES,
    INTERNAL_ERROR,
    INTERRUPTED_EXIT_CODE,
    Busy,
    DamagedFileError,
    ExecutionError,
    Incomplete,
    InputError,
    IntegrityError,
    Interrupted,
    Oiv4Error,
    OutcomeError,
    SourceError,
    StorageError,
    UsageError,
    exit_code,
    exit_code_summary,
    exit_code_table,
)
from oiv4.contracts.errors.data import (
    BadArchiveError,
    BadLocationError,
    ChecksumError,
    CorruptImageError,
    HostileIdError,
    ImageNotFoundError,
    JpegLayoutError,
    LedgerChangingError,
    ReaderError,
    UnsafePath,
)
from oiv4.contracts.errors.environment import (
    DaskSetupError,
    MissingExtraError,
    RootError,
    RootLockedError,
    SettingError,
    SettingRangeError,
    SettingsChangedError,
    SettingsTypeError,
    UnwritableRootError,
)
from oiv4.contracts.errors.stages import (
    ArchiveError,
    ArchiveSetError,
    ArchiveSourceError,
    CorruptStreamError,
    CorruptTarError,
    DamagedFeaturesError,
    DedupError,
    FeaturesError,
    FetchAborted,
    FetchError,
    HashError,
    MetadataError,
    NoFeaturesError,
    PlanError,
    SourceChangedError,
    UnreliableRead,
    VerificationError,
    WriteFailed,
)
from oiv4.contracts.errors.transfer import (
    UNRESOLVED,
    BlockedAddress,
    BlockedError,
    BodyTooLarge,
    Cancelled,
    ChangedError,
    DiskError,
    DownloadError,
    NotFoundError,
    TlsError,
    TransferError,
    TransientError,
    UnreachableError,
)

__all__ = [
    "CATEGORIES", "COMPLETE_WITH_FAILURES", "EXIT_CODES", "INTERNAL_ERROR", "INTERRUPTED_EXIT_CODE", "UNRESOLVED",
    "ArchiveError", "ArchiveSetError", "ArchiveSourceError", "BadArchiveError", "BadLocationError",
    "BlockedAddress", "BlockedError", "BodyTooLarge", "Busy", "Cancelled", "ChangedError", "ChecksumError",
    "CorruptImageError", "CorruptStreamError", "CorruptTarError", "DamagedFeaturesError", "DamagedFileError",
    "DaskSetupError", "DedupError", "DiskError", "DownloadError", "ExecutionError", "FeaturesError",
    "FetchAborted", "FetchError", "HashError", "HostileIdError", "ImageNotFoundError", "Incomplete",
    "InputError", "IntegrityError", "Interrupted", "JpegLayoutError", "LedgerChangingError", "MetadataError",
    "MissingExtraError", "NoFeaturesError", "NotFoundError", "Oiv4Error", "OutcomeError", "PlanError", "ReaderError",
    "RootError", "RootLockedError", "SettingError", "SettingRangeError", "SettingsChangedError", "SettingsTypeError",
    "SourceChangedError", "SourceError", "StorageError", "TlsError", "TransferError", "TransientError",
    "UnreachableError", "UnreliableRead", "UnsafePath", "UnwritableRootError", "UsageError",
    "VerificationError", "WriteFailed", "exit_code", "exit_code_summary", "exit_code_table",
]  # fmt: skip
