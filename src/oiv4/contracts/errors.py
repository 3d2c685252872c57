"""Every error oiv4 raises on purpose, under one root and a few categories, each with its exit code.

A caller (the CLI, a notebook, a scheduler) decides what to do from the *category*, never from a list of
concrete classes: the CLI prints `oiv4 <command>: <message>` and exits with `exit_code`. Concrete classes
live next to the code that raises them and keep their other bases (ValueError, KeyError, OSError, ...)
where callers rely on them, e.g. `class PlanError(RuntimeError, InputError)`.

Exit codes (`oiv4 ...; echo $?`):

| code | category        | meaning                                                                  |
|------|-----------------|--------------------------------------------------------------------------|
| 0    | -               | the command did what it was asked                                       |
| 1    | `Oiv4Error`     | something failed that no category below describes (e.g. one archive)     |
| 2    | `UsageError`    | bad options or arguments, or a stage run before the one it depends on    |
| 3    | `InputError`    | malformed metadata, hostile IDs or archive members, undecodable images    |
| 4    | `SourceError`   | a remote source is unreachable or misbehaves (HTTP errors, S3, mirror)   |
| 5    | `StorageError`  | the root cannot be written (unwritable, disk full, write failed)         |
| 6    | `IntegrityError`| checksums or sizes do not match, stored data is damaged                  |
| 7    | `ExecutionError`| the machinery running the work failed (workers died, cluster unusable)    |
| 8    | `Incomplete`    | the run ended but some planned rows have no outcome yet: run it again    |
| 9    | `Busy`          | another live run holds the root (one run per root); wait, then run again |
| 10   | -               | complete, with recorded failures (dead URLs, refused members): normal    |
| 130  | `Interrupted`   | stopped by Ctrl-C, SIGTERM or a stop request; finished work is kept      |

Code 10 is not an error: every row has its outcome and the command did its job, but some outcomes are
failures (a fetch where some Flickr URLs are dead is normal). Scripts that only care whether the run
finished treat 0 and 10 alike; `status` and `verify` never return it.
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

#: Exit code for KeyboardInterrupt, which is not an Oiv4Error (Python raises it).
INTERRUPTED_EXIT_CODE = Interrupted.exit_code


def exit_code(exc: BaseException) -> int | None:
    """The exit code for `exc`: its category's for an Oiv4Error, 130 for Ctrl-C, None for a bug."""
    if isinstance(exc, Oiv4Error):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED_EXIT_CODE
    return None
