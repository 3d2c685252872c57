"""The universe's on-disk cache: where it lives, locks between processes sharing it, and parallel rendering.

Every byte the mirror serves is generated from its spec and cached under `<parent>/oiv4-mirror-<hash of the spec>`,
so a second mirror (or a test, or `oiv4 demo`) with the same spec starts at once. `<parent>` is
`$OIV4_MIRROR_CACHE` when set, else the system temp directory (`$TMPDIR`, usually /tmp): the cache is large
(`make demo`'s is 2.2 GB), regenerable from the spec at any time, and so belongs where a reboot may clear it,
not in a home directory's cache that nothing ever empties. `make clean` removes `<parent>/oiv4-mirror-*`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from oiv4_mirror.spec import ProgressFn, UniverseSpec

#: Names the directory under which mirror caches are made (default: the system temp directory).
CACHE_ENV = "OIV4_MIRROR_CACHE"


def cache_parent() -> Path:
    """The directory holding the mirrors' caches: `$OIV4_MIRROR_CACHE`, else the system temp directory."""
    return Path(os.environ.get(CACHE_ENV) or tempfile.gettempdir())


def default_cache_dir(spec: UniverseSpec) -> Path:
    """Where the bytes of `spec`'s universe are cached when no `cache_dir` is given."""
    return cache_parent() / f"oiv4-mirror-{spec.cache_key()}"


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
