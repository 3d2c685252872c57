"""The one resumable download: parallel ranged parts into `<name>.part`, state in `<name>.part.json`.

Metadata CSVs and CVDF archives both come in through `download_ranged`. The object is cut into
`part_size` parts fetched `connections` at a time (each retried under the stage's `TransferSettings`) and written
with `pwrite` at their offsets into `<name>.part`. Finished parts are made durable, then listed in the
sidecar (written atomically), which also records the remote's url, size, ETag and Last-Modified. A
re-run fetches only the parts not listed, and starts from zero when the remote's size, ETag,
Last-Modified or the part size changed. Only a complete file is renamed to its final name.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from oiv4.contracts.errors import Cancelled, DiskError, TransferError, TransientError
from oiv4.contracts.transfer import TransferSettings
from oiv4.io.retry import retry_async
from oiv4.io.storage import Storage

ProgressFn = Callable[[int], None]  # bytes advanced (negative when a failed part's bytes will come again)
STATE_SUFFIX = ".part.json"


@dataclass(frozen=True)
class RemoteObject:
    """One remote file as a `stat` saw it."""

    name: str
    url: str
    size: int
    etag: str | None
    last_modified: str | None = None

    @property
    def etag_md5(self) -> str | None:
        """The ETag when it is a plain MD5 of the content (single-part S3 uploads), else None."""
        e = (self.etag or "").strip('"').lower()
        if e.startswith("w/"):
            return None
        return e if len(e) == 32 and all(c in "0123456789abcdef" for c in e) else None


class RangeReader(Protocol):
    def iter_range(self, obj: RemoteObject, start: int, stop: int) -> AsyncIterator[bytes]:
        """Bytes `[start, stop)`; raises `TransientError` for failures worth retrying."""
        ...


@dataclass
class RangedResult:
    bytes_fetched: int  # this run only: a resumed download fetches just the missing parts
    parts_total: int
    parts_resumed: int  # parts already on disk from an earlier run
    note: str = ""


class Parts:
    """The byte ranges `[start, stop)` of an object cut into `part_size` parts, computed on demand
    (a server announcing an absurd size must not make us build a list of billions of ranges)."""

    def __init__(self, size: int, part_size: int) -> None:
        self.size, self.part_size = size, part_size
        self.n = max(1, -(-size // part_size))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[int, int]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        start = i * self.part_size
        return start, min(start + self.part_size, self.size)

    def bytes_of(self, parts: set[int]) -> int:
        return sum(stop - start for start, stop in map(self.__getitem__, parts))


def state_path(dest: Path) -> Path:
    """The sidecar of a download to `dest`."""
    return dest.with_name(dest.name + STATE_SUFFIX)


def read_state(dest: Path) -> dict | None:
    """The sidecar of an interrupted download to `dest` (None if absent or unreadable)."""
    try:
        state = json.loads(state_path(dest).read_bytes())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _identity(obj: RemoteObject, part_size: int) -> dict:
    return {"size": obj.size, "etag": obj.etag, "last_modified": obj.last_modified, "part_size": part_size}


def _disk_error(path: Path, exc: OSError) -> DiskError:
    if exc.errno == errno.ENOSPC:
        free = shutil.disk_usage(path.parent).free
        return DiskError(f"disk full while writing {path} ({free:,} bytes free); free space and re-run (it resumes)")
    return DiskError(f"cannot write {path}: {exc}")


async def fetch_range(
    reader: RangeReader,
    obj: RemoteObject,
    start: int,
    stop: int,
    policy: TransferSettings,
    sink: Callable[[int, bytes], None],
    progress: ProgressFn | None = None,
) -> int:
    """Fetch `[start, stop)` into `sink(offset, chunk)`, each attempt within `policy.deadline_s` and retried
    under `policy`; returns bytes fetched over all attempts."""
    fetched = 0

    async def attempt(_n: int) -> int:
        nonlocal fetched
        off = start
        try:
            async with asyncio.timeout(policy.deadline_s):
                async for chunk in reader.iter_range(obj, start, stop):
                    sink(off, chunk)
                    off += len(chunk)
                    fetched += len(chunk)
                    if progress:
                        progress(len(chunk))
        except TimeoutError as exc:
            if progress and off > start:
                progress(start - off)
            if policy.deadline_s is None:
                raise
            raise TransientError(f"{obj.url}: part not complete within the {policy.deadline_s:g}s deadline") from exc
        except BaseException:
            if progress and off > start:
                progress(start - off)  # these bytes will come again (or never)
            raise
        return fetched

    try:
        return await retry_async(attempt, policy)
    except TransferError as exc:
        if isinstance(exc, Cancelled | DiskError):
            raise
        raise type(exc)(f"bytes {start:,}-{stop - 1:,}: {exc}", exc.attempts) from exc


async def watch_cancel(cancel: threading.Event | None) -> None:
    """Raise `Cancelled` soon after `cancel` is set; run beside the transfers in a TaskGroup."""
    if cancel is None:
        return
    while not cancel.is_set():
        await asyncio.sleep(0.1)
    raise Cancelled("cancelled")


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The error to report from a TaskGroup's failures: a real failure before a cancellation."""
    flat: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for sub in e.exceptions:
                walk(sub)
        else:
            flat.append(e)

    walk(group)
    real = [e for e in flat if not isinstance(e, Cancelled)]
    return (real or flat)[0]


# Kept long: the part file's descriptor, the fetched/recorded part sets and the checkpoint lock are shared by
# the sink, the workers and the checkpoint closures; the order that makes a resume safe (bytes fdatasync'ed before
# the sidecar records them) can be read top to bottom only while they live in one scope.
async def download_ranged(
    reader: RangeReader,
    obj: RemoteObject,
    dest: Path,
    settings: TransferSettings,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> RangedResult:
    """Download `obj` to local `dest`, resuming from the sidecar of an interrupted run."""
    part = dest.with_name(dest.name + ".part")
    ranges = Parts(obj.size, settings.part_size)
    if dest.exists() and dest.stat().st_size == obj.size:
        return RangedResult(0, len(ranges), len(ranges), "already on disk")
    dest.parent.mkdir(parents=True, exist_ok=True)
    folder = Storage(str(dest.parent))
    wanted = _identity(obj, settings.part_size)
    done: set[int] = set()
    note = ""
    state = read_state(dest)
    if state is not None and part.exists():
        if {k: state.get(k) for k in wanted} == wanted and part.stat().st_size == obj.size:
            done = {int(i) for i in state.get("done", []) if 0 <= int(i) < len(ranges)}
        else:
            note = "the remote object or part size changed since the interrupted download: starting over"
    if not done:
        part.unlink(missing_ok=True)
    need = obj.size - ranges.bytes_of(done)
    free = shutil.disk_usage(dest.parent).free
    if need > free:
        raise DiskError(f"{obj.name} needs {need:,} more bytes of disk at {dest.parent}, only {free:,} free")

    def save_state() -> None:
        body = {"url": obj.url, **wanted, "done": sorted(done)}
        folder.write_bytes(state_path(dest).name, json.dumps(body).encode(), fsync=True)

    try:
        fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise _disk_error(part, exc) from exc
    finished: set[int] = set()  # fetched, not yet made durable / recorded
    last_checkpoint = time.monotonic()
    sync_lock = asyncio.Lock()

    async def checkpoint() -> None:
        nonlocal last_checkpoint
        async with sync_lock:
            ready = set(finished)
            finished.difference_update(ready)
            await asyncio.to_thread(os.fdatasync, fd)  # the parts' bytes are durable before the sidecar says so
            done.update(ready)
            save_state()
            last_checkpoint = time.monotonic()

    def sink(off: int, chunk: bytes) -> None:
        try:
            view = memoryview(chunk)
            while view:  # pwrite may write less than asked
                n = os.pwrite(fd, view, off)
                view, off = view[n:], off + n
        except OSError as exc:
            raise _disk_error(part, exc) from exc

    todo = [i for i in range(len(ranges)) if i not in done]
    queue = list(reversed(todo))
    fetched = 0

    async def worker() -> None:
        nonlocal fetched
        while queue:
            i = queue.pop()
            start, stop = ranges[i]
            n = await fetch_range(reader, obj, start, stop, settings, sink, progress)
            fetched += n  # not `fetched += await ...`: that reads `fetched` before the await and loses updates
            finished.add(i)
            # fdatasync per part would make a download as slow as the disk's sync path; checkpoints
            # every `checkpoint_s` cost a kill at most that many seconds of progress.
            if time.monotonic() - last_checkpoint >= settings.checkpoint_s:
                await checkpoint()

    try:
        os.ftruncate(fd, obj.size)
        if progress:
            progress(ranges.bytes_of(done))
        if todo:
            save_state()
        try:
            async with asyncio.TaskGroup() as group:
                watcher = group.create_task(watch_cancel(cancel))
                workers = [group.create_task(worker()) for _ in range(max(1, min(settings.connections, len(todo))))]
                await asyncio.gather(*workers)
                watcher.cancel()
        except BaseExceptionGroup as eg:
            await checkpoint()  # keep what did arrive for the next run
            raise first_error(eg) from None
        os.fsync(fd)
        done.update(finished)
    except OSError as exc:
        raise _disk_error(part, exc) from exc
    finally:
        os.close(fd)
    if part.stat().st_size != obj.size:
        raise TransferError(f"{obj.name}: downloaded file is {part.stat().st_size:,} bytes, expected {obj.size:,}")
    os.replace(part, dest)
    state_path(dest).unlink(missing_ok=True)
    return RangedResult(fetched, len(ranges), len(ranges) - len(todo), note)
