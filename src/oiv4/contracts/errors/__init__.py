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
categories and the exit codes are defined here.

Exit codes (`oiv4 ...; echo $?`): `EXIT_CODES` below, the one table README and `oiv4 --help` are generated
from (`exit_code_table()`).

Code 10 is not an error: every row has its outcome and the command did its job, but some outcomes are
failures (a fetch where some Flickr URLs are dead is normal). Scripts that only care whether the run
finished treat 0 and 10 alike; `status` and `verify` never return it. Code 70 is a bug in oiv4: the
one-line message names a file holding the traceback.
"""

from __future__ import annotations


class Oiv4Error(Exception):
    """Root of every error oiv4 raises on purpose; `exit_code` is what the CLI exits with."""

    exit_code: int = 1
    #: Short name of the category, for logs and the exit-code table.
    category: str = "error"


class UsageError(Oiv4Error):
    """Bad options or arguments, or a stage run before the stage it depends on."""

    exit_code = 2
    category = "usage"


class InputError(Oiv4Error):
    """The data handed to oiv4 is wrong: malformed metadata, hostile IDs or archive members, bad images."""

    exit_code = 3
    category = "input"


class OutcomeError(InputError):
    """This image ends in ledger outcome `outcome` (an `Outcome` value), for `reason` (one line, the ledger's reason).

    Raised where a check or decode refuses one image's bytes; the stage records the row and goes on.
    """

    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


class SourceError(Oiv4Error):
    """A remote source (HTTP server, S3 bucket, mirror) is unreachable or misbehaves."""

    exit_code = 4
    category = "source"


class StorageError(Oiv4Error):
    """The root cannot take the output: unwritable, disk full, a write failed."""

    exit_code = 5
    category = "storage"


class IntegrityError(Oiv4Error):
    """Checksums or sizes do not match what they must be, or stored data is damaged."""

    exit_code = 6
    category = "integrity"


class DamagedFileError(IntegrityError):
    """A file oiv4 wrote under the root cannot be read back (truncated, garbage, empty, not what it must be).

    The message names the file, what is wrong with it and what to do; nothing is changed on disk.
    `path` is the file as the user would type it, `problem` what is wrong, `advice` what to do.
    """

    def __init__(self, path: str, problem: str, advice: str) -> None:
        self.path = path
        self.problem = problem
        self.advice = advice
        super().__init__(f"damaged file {path}: {problem}. {advice}")


class ExecutionError(Oiv4Error):
    """The machinery running the work failed: worker processes died, a cluster cannot run the shards."""

    exit_code = 7
    category = "execution"


class Incomplete(Oiv4Error):
    """The run ended without an outcome for every planned row (a shard gave up, rows were left); re-run."""

    exit_code = 8
    category = "incomplete"


class Busy(Oiv4Error):
    """Another live run holds the root; the message names it (pid, host, command, start)."""

    exit_code = 9
    category = "busy"


class Interrupted(Oiv4Error):
    """Stopped on request (Ctrl-C, SIGTERM, a stop event); everything finished so far is kept."""

    exit_code = 130
    category = "interrupted"


#: Every category, most specific first; `Oiv4Error` itself is the catch-all.
CATEGORIES: tuple[type[Oiv4Error], ...] = (
    UsageError,
    InputError,
    SourceError,
    StorageError,
    IntegrityError,
    ExecutionError,
    Incomplete,
    Busy,
    Interrupted,
)

#: Exit code of a run that finished every row but recorded failures among them (not an error).
COMPLETE_WITH_FAILURES = 10

#: Exit code of a bug: an exception oiv4 did not raise on purpose (BSD sysexits' EX_SOFTWARE).
INTERNAL_ERROR = 70

#: Every exit code: (code, short label for `--help`, meaning for README). Both are generated from this.
EXIT_CODES: tuple[tuple[int, str, str], ...] = (
    (0, "done", "complete"),
    (Oiv4Error.exit_code, "failed (e.g. an archive)",
     "failed in a way no category below describes (e.g. an archive failed)"),
    (UsageError.exit_code, "usage", "usage: a bad option or value, a root that is a file, read-only, missing or not "
     "an oiv4 root, unreachable object store"),
    (InputError.exit_code, "bad input data", "bad input data (metadata, archive members)"),
    (SourceError.exit_code, "source unreachable or misbehaving", "a source is unreachable or misbehaves"),
    (StorageError.exit_code, "storage (unwritable, disk full)", "storage: unwritable, disk full"),
    (IntegrityError.exit_code, "integrity (checksum, damaged image or root file)",
     "integrity: checksums, damaged images, or a damaged file under the root (ledger, plan, summary, settings "
     "record): the message names the file and says what to do"),
    (ExecutionError.exit_code, "execution (workers, cluster)", "execution: workers kept dying, cluster unusable"),
    (Incomplete.exit_code, "incomplete (rows left without an outcome: run again)",
     "incomplete: the run ended with planned rows still without an outcome; run again"),
    (Busy.exit_code, "busy (another run holds the root)", "busy: another live run holds the root"),
    (COMPLETE_WITH_FAILURES, "complete with recorded failures (e.g. dead URLs)",
     "complete with recorded failures (dead URLs, refused members): normal for a fetch"),
    (INTERNAL_ERROR, "internal error (a bug; the traceback is saved to the file named)",
     "internal error, a bug in oiv4: one line naming the file that holds the traceback"),
    (Interrupted.exit_code, "interrupted (Ctrl-C, SIGTERM)",
     "interrupted (Ctrl-C or SIGTERM); finished work is kept, run the same command again"),
)  # fmt: skip


def exit_code_table() -> str:
    """`EXIT_CODES` as the Markdown table README carries between its exit-code markers."""
    lines = ["| code | meaning |", "|------|---------|"]
    lines += [f"| {code:<4} | {meaning} |" for code, _short, meaning in EXIT_CODES]
    return "\n".join(lines)


def exit_code_summary() -> str:
    """`EXIT_CODES` as the one paragraph `oiv4 --help` ends its description with."""
    return "Exit codes: " + ", ".join(f"{code} {short}" for code, short, _meaning in EXIT_CODES) + "."


#: Exit code for KeyboardInterrupt, which is not an Oiv4Error (Python raises it).
INTERRUPTED_EXIT_CODE = Interrupted.exit_code


def exit_code(exc: BaseException) -> int | None:
    """The exit code for `exc`: its category's for an Oiv4Error, 130 for Ctrl-C, None for a bug."""
    if isinstance(exc, Oiv4Error):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED_EXIT_CODE
    return None


# The concrete classes subclass the categories above, so they are imported after them.
from oiv4.contracts.errors.data import (  # noqa: E402
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
from oiv4.contracts.errors.environment import (  # noqa: E402
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
from oiv4.contracts.errors.stages import (  # noqa: E402
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
from oiv4.contracts.errors.transfer import (  # noqa: E402
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
