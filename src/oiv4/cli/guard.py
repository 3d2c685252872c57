"""What every writing command does before its work: check the root, then take the one-run-per-root lock.

The lock is taken here, by the main process only, for the command's whole life; workers and Dask tasks
never lock (they run inside a locked command). A second live run is refused with exit code 9 (`Busy`),
naming the holder.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from oiv4.contracts.errors import UsageError
from oiv4.contracts.schema import Outcome
from oiv4.io.root_check import built_root, named_root, new_or_built_root, writable_root
from oiv4.io.run_lock import RunLock
from oiv4.io.storage import Storage

#: `http_<3 digits>`: statuses without an Outcome member are recorded under this name.
HTTP_OUTCOME = re.compile(r"http_[1-5][0-9][0-9]")


#: The commands that start a root: only they accept a missing (then created) or empty folder.
STARTS_ROOT = frozenset({"oiv4 metadata", "oiv4 build", "oiv4 demo"})


@contextmanager
def writing(root: str | Storage, command: str) -> Iterator[Storage]:
    """`with writing(root, "oiv4 fetch train") as storage:` -- a checked, writable, locked root.

    Every check runs before the lock is taken, so a refused root receives no file, not even the lock.
    The commands in STARTS_ROOT accept a missing or empty folder; every other one needs an oiv4 root.
    """
    storage = root if isinstance(root, Storage) else named_root(root)
    starts = " ".join(command.split()[:2]) in STARTS_ROOT
    if starts:
        new_or_built_root(storage)
    else:
        built_root(storage)
    writable_root(storage, create=starts)
    with RunLock(storage, command):
        yield storage


def report_target(out: str) -> None:
    """`report --out`: the page's folder is created if missing; a folder, or a parent that is a file, is refused."""
    path = Storage(out).local_path("")
    if path is None:  # an object store: only its prefix must answer
        writable_root(Storage(out.rsplit("/", 1)[0]), "the folder of --out", create=True)
        return
    if path.is_dir():
        raise UsageError(f"--out {out} is a folder: name the HTML file, e.g. {path / 'index.html'}")
    writable_root(Storage(str(path.parent)), "the folder of --out", create=True)


def check_outcomes(names: list[str]) -> None:
    """Refuse outcome names that no row can have (a typo would silently retry nothing)."""
    known = {o.value for o in Outcome} | {"all"}
    for name in names:
        if name not in known and not HTTP_OUTCOME.fullmatch(name):
            raise UsageError(
                f"unknown outcome {name!r} for --retry-failed: use train/extended_targets, all, http_<code> or one "
                f"of {', '.join(sorted(o.value for o in Outcome if o is not Outcome.ok))}"
            )
