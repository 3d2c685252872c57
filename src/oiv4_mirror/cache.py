"""Plumbing for the universe's on-disk cache: locks between processes sharing it, and parallel rendering."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from oiv4_mirror.spec import ProgressFn


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock between processes (no-op where fcntl does not exist)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: duplicated work, still correct (atomic writes)
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def stage(progress: ProgressFn | None, stage: str, total: int) -> Callable[[int], None] | None:
    if progress is None:
        return None
    return lambda done: progress(stage, done, total)


def parallel(
    fn: Callable[[str], object], items: list[str], workers: int | None, tick: Callable[[int], None] | None = None
) -> None:
    if not items:
        return
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        for done, _ in enumerate(pool.map(fn, items), 1):
            if tick is not None:
                tick(done)
