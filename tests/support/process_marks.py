"""Finding the processes a test started, by a marker in their environment, and waiting on conditions.

Shared by the tests that kill oiv4 (process hygiene, Dask hygiene, soak): a process that escaped its parent
still carries the marker the test put in the environment of the command it ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path


def marked_processes(marker: str) -> list[int]:
    """PIDs of live (not zombie) processes whose environment carries `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `predicate` until it holds; fail naming `what` after `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
