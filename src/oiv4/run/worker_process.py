"""What every executor's worker processes share: the shard function's type, how many workers a machine gets, and
the initializer that makes a worker die with the process that started it.

Kept apart from `executor` (which picks the executor) so `dask_executor` can use them without importing the
module that imports it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable
from typing import Protocol

from oiv4.stages.base import ShardResult, ShardTask

ShardFn = Callable[[ShardTask], ShardResult]

#: prctl(2) option: the signal this process gets when the thread that created it dies.
PR_SET_PDEATHSIG = 1


class PoolSettings(Protocol):
    """What a pool of worker processes is sized and retried by (`ExecutorSettings` has these fields)."""

    @property
    def workers(self) -> int | None: ...

    @property
    def scheduler(self) -> str | None: ...

    @property
    def max_pool_restarts(self) -> int: ...


def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: SIGKILL this process when its parent dies, even by SIGKILL (Linux).

    Without it a `kill -9` of `oiv4 fetch` would leave the workers running under PID 1: writing to the root,
    holding the caller's pipe open, and racing with the next run. The parent may already have died
    between our fork and the prctl call, so the parent PID is checked right after it (closing the race).
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:
        os._exit(1)


def default_workers() -> int:
    """One worker per core this process may run on."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
