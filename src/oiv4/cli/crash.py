"""What the one error handler (`oiv4.cli.app`) does with an exception oiv4 did not raise on purpose.

- A library's read error (pyarrow, DuckDB, json) that a damaged file under the command's `--root` explains
  becomes that file's `DamagedFileError`: the file, what is wrong, what to do; exit 6. The root is searched
  only after such a failure (`oiv4.io.damage.find_damage_in_root`), so no command pays for it otherwise.
- Anything else is a bug: its full traceback goes to a new file in the temp folder (`$TMPDIR`, else `/tmp`),
  never under the root (it may be read-only, an object store, a foreign folder, or the very thing that is
  broken), and the user sees one line naming that file; exit 70.
- A closed stdout (`oiv4 sql ... | head`) is not an error: output stops, exit 0, nothing printed.
- Exit 130 (interrupted) with worker threads still alive ends the process at once after flushing: a
  transfer thread blocked in a socket read must not keep a stopped command alive (shutdown would join it).
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import threading
import traceback
from datetime import UTC, datetime

from oiv4.cli.version import installed_version
from oiv4.contracts.errors import INTERNAL_ERROR, Interrupted


def passes_through(exc: BaseException) -> bool:
    """click's and typer's own control flow (exit, abort, usage) is theirs to handle, not a crash."""
    module = type(exc).__module__ or ""
    return module.startswith(("click", "typer"))


def _root_in(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg in ("--root", "-r") and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--root="):
            return arg.split("=", 1)[1]
    return None


def explain(exc: BaseException, argv: list[str]) -> tuple[int, str]:
    """The exit code and the one line for an unexpected exception (see the module docstring)."""
    damage = _damage_behind(exc, argv)
    if damage is not None:
        return damage.exit_code, str(damage)
    path = save_traceback(exc, argv)
    where = f"the traceback is in {path}" if path else "the traceback could not be saved"
    summary = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    return INTERNAL_ERROR, f"internal error (a bug in oiv4): {summary}; {where}. Please report it with that file"


def _damage_behind(exc: BaseException, argv: list[str]) -> Exception | None:
    from oiv4.io.damage import find_damage_in_root, is_read_error

    root = _root_in(argv)
    if not root or not is_read_error(exc):
        return None
    try:
        from oiv4.io.storage import Storage

        return find_damage_in_root(Storage(root))
    except Exception:  # the search is a courtesy: if it fails too, report the original exception
        return None


def save_traceback(exc: BaseException, argv: list[str]) -> str | None:
    """Write `exc`'s traceback (with the command line and versions) to a new temp file; its path, or None."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = (
        f"oiv4 {installed_version()} on Python {platform.python_version()} ({platform.platform()})\n"
        f"command: oiv4 {' '.join(sys.argv[1:]) or ' '.join(argv)}\n\n"
        + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    )
    try:
        fd, path = tempfile.mkstemp(prefix=f"oiv4-crash-{stamp}-", suffix=".txt")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
    except OSError:
        return None
    return path


def quiet_stdout() -> None:
    """Point stdout at /dev/null: the reader is gone, and Python's final flush must not fail loudly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a real file (a test runner's capture)
        pass


def stdout_is_devnull() -> bool:
    """Is file descriptor 1 /dev/null (what rich, click and `quiet_stdout` point a closed stdout at)?"""
    try:
        out, null = os.fstat(1), os.stat(os.devnull)
    except OSError:
        return False
    return (out.st_dev, out.st_ino) == (null.st_dev, null.st_ino)


#: Whether stdout was /dev/null from the start (`oiv4 ... > /dev/null`): then it says nothing about a pipe.
_STDOUT_WAS_DEVNULL = stdout_is_devnull()


def finish(code: int | str | None) -> None:
    """End the process with `code`: a closed stdout is not an error, and an interrupt does not wait for threads."""
    if stdout_is_devnull() and not _STDOUT_WAS_DEVNULL:
        code = 0  # rich and click met a closed stdout (EPIPE), pointed it at /dev/null and said 1
    elif code == 1 and type(sys.stdout).__name__.endswith("PacifyFlushWrapper"):  # click < 8.2: no underscore
        # click's own EPIPE handling (e.g. the newline it echoes after `--help` once the reader has gone)
        # wraps stdout in this and says 1, without pointing stdout anywhere.
        quiet_stdout()
        code = 0
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        quiet_stdout()
        code = 0
    if code == Interrupted.exit_code and _threads_left():
        # Interpreter shutdown would join them, and one may be blocked in a socket read for minutes;
        # everything on disk is already consistent (atomic renames, checkpointed sidecars).
        sys.stderr.flush()
        os._exit(Interrupted.exit_code)
    sys.exit(code)


def _threads_left() -> bool:
    main = threading.main_thread()
    return any(t is not main and t.is_alive() and not t.daemon for t in threading.enumerate())
