"""The one sweep for temp files a killed writer left behind (`<final name>.oiv4tmp-<pid>-<random>`).

Every atomic write goes through a temp name carrying the writer's pid (`oiv4.io.storage`). A temp whose
writer is still running is work in progress and is left alone; one whose writer is gone is litter and is
removed. Object stores have no temp files (a PUT is all-or-nothing): their backend lists none.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from oiv4.io.storage import TMP_MARK, Storage


def temp_owner(name: str) -> int | None:
    """The pid in a temp file's name, or None if `name` is not one of our temp names."""
    if TMP_MARK not in name:
        return None
    pid = name.rsplit(TMP_MARK, 1)[1].split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (ours counts as alive; so does one we may not signal)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_temps(storage: Storage, patterns: Iterable[str]) -> int:
    """Remove temp files matching `patterns` (globs relative to the root) whose writer is dead; returns
    how many. A temp name without a readable pid is kept: it is not ours to judge."""
    removed = 0
    for pattern in patterns:
        for rel in storage.leftover_temps(pattern):
            pid = temp_owner(rel.rsplit("/", 1)[-1])
            if pid is not None and not pid_alive(pid):
                storage.remove(rel)
                removed += 1
    return removed
