"""Parallel ranged downloads: to a resumable partial file, or streamed in order straight to the converter.

To a file: the archive is cut into `part_size` parts fetched `connections` at a time and written with
`pwrite` at their offsets into `<archive>.part`; each finished part is made durable, then recorded in
the sidecar `<archive>.part.json` (written atomically). A kill loses at most the parts in flight; a
re-run fetches only the parts the sidecar does not list, and restarts from zero if the remote's size
or ETag changed. Only a complete file is renamed to its final name (the `.part` file plays the role of
`Storage.open_atomic`'s temp file, which cannot be used here because parts arrive out of order).

Streamed: the same parallel parts, handed to the consumer strictly in order with at most
`connections` parts in memory, so nothing of the archive touches the disk.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from oiv4.contracts.errors import Interrupted
from oiv4.io.storage import Storage
from oiv4.stages.archives.errors import ArchiveError, SourceError
from oiv4.stages.archives.sources import RemoteObject, Source, TransientSourceError

ProgressFn = Callable[[int], None]  # bytes advanced (negative when a failed part is retried)


@dataclass(frozen=True)
class TransferSettings:
    """How archives are fetched. RAM in `--stream` mode is about `connections * part_size`."""

    part_size: int = 64 << 20
    connections: int = 8
    attempts: int = 5  # per part
    backoff_s: float = 1.0
    checkpoint_s: float = 2.0  # how often finished parts are synced and recorded in the sidecar (0: every part)


@dataclass
class DownloadResult:
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


class Abort:
    """Stop signal for one transfer, also raised by an outer `cancel` event (Ctrl-C of the whole run)."""

    def __init__(self, cancel: threading.Event | None = None) -> None:
        self._own = threading.Event()
        self._cancel = cancel

    def set(self) -> None:
        self._own.set()

    def is_set(self) -> bool:
        return self._own.is_set() or (self._cancel is not None and self._cancel.is_set())

    def wait(self, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while not self.is_set() and (left := end - time.monotonic()) > 0:
            self._own.wait(min(left, 0.2))
        return self.is_set()


def _fetch_with_retries(
    source: Source,
    obj: RemoteObject,
    start: int,
    stop: int,
    settings: TransferSettings,
    abort: Abort,
    sink: Callable[[int, bytes], None],
    progress: ProgressFn | None,
) -> int:
    """Fetch [start, stop) into `sink(offset, chunk)`, retrying transient failures; returns bytes fetched."""
    fetched = 0
    last: Exception | None = None
    for attempt in range(settings.attempts):
        if abort.is_set():
            raise _Aborted()
        off = start
        try:
            for chunk in source.iter_range(obj, start, stop):
                if abort.is_set():
                    raise _Aborted()
                sink(off, chunk)
                off += len(chunk)
                fetched += len(chunk)
                if progress:
                    progress(len(chunk))
            return fetched
        except TransientSourceError as exc:
            last = exc
            if progress and off > start:
                progress(start - off)  # these bytes will come again
            if abort.wait(settings.backoff_s * (2**attempt)):
                raise _Aborted() from exc
    raise SourceError(obj.name, f"bytes {start}-{stop - 1} failed {settings.attempts} times; last error: {last}")


class _Aborted(Interrupted):
    """Another part failed: stop this one quietly."""


def _disk_error(name: str, path: Path, exc: OSError) -> ArchiveError:
    if exc.errno == errno.ENOSPC:
        free = shutil.disk_usage(path.parent).free
        return ArchiveError(
            name, f"disk full while writing {path} ({free:,} bytes free); free space and re-run (it resumes)"
        )
    return ArchiveError(name, f"cannot write {path}: {exc}")


def download_to_storage(
    source: Source,
    obj: RemoteObject,
    storage: Storage,
    rel: str,
    settings: TransferSettings,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> DownloadResult:
    """Download `obj` to `rel` under a local root, resuming from the sidecar of an interrupted run."""
    final = storage.local_path(rel)
    part = final.with_name(final.name + ".part")
    sidecar_rel = rel + ".part.json"
    ranges = Parts(obj.size, settings.part_size)
    if final.exists() and final.stat().st_size == obj.size:
        return DownloadResult(0, len(ranges), len(ranges), "already on disk")
    final.parent.mkdir(parents=True, exist_ok=True)

    wanted = {"name": obj.name, "size": obj.size, "etag": obj.etag, "part_size": settings.part_size}
    done: set[int] = set()
    note = ""
    if storage.exists(sidecar_rel) and part.exists():
        try:
            state = json.loads(storage.read_bytes(sidecar_rel))
        except ValueError:
            state = {}
        if {k: state.get(k) for k in wanted} == wanted and part.stat().st_size == obj.size:
            done = {int(i) for i in state.get("done", []) if 0 <= int(i) < len(ranges)}
        else:
            note = "the remote object or part size changed since the interrupted download: starting over"
    if not done:
        part.unlink(missing_ok=True)
    need = obj.size - ranges.bytes_of(done)
    free = shutil.disk_usage(final.parent).free
    if need > free:
        raise ArchiveError(obj.name, f"needs {need:,} more bytes of disk at {final.parent}, only {free:,} free")

    lock = threading.Lock()
    abort = Abort(cancel)

    def save_state() -> None:
        storage.write_bytes(sidecar_rel, json.dumps({**wanted, "done": sorted(done)}).encode(), fsync=True)

    try:
        fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise _disk_error(obj.name, part, exc) from exc
    fetched = 0
    try:
        os.ftruncate(fd, obj.size)
        if progress:
            progress(ranges.bytes_of(done))

        def sink(off: int, chunk: bytes) -> None:
            try:
                view = memoryview(chunk)
                while view:  # pwrite may write less than asked
                    n = os.pwrite(fd, view, off)
                    view, off = view[n:], off + n
            except OSError as exc:
                raise _disk_error(obj.name, part, exc) from exc

        finished: set[int] = set()  # fetched, not yet made durable / recorded
        last_checkpoint = [time.monotonic()]

        def checkpoint() -> None:
            """Make finished parts durable, then record them (caller holds `lock`)."""
            os.fdatasync(fd)  # the parts' bytes are durable before the sidecar says so
            done.update(finished)
            finished.clear()
            save_state()
            last_checkpoint[0] = time.monotonic()

        def fetch(i: int) -> int:
            start, stop = ranges[i]
            n = _fetch_with_retries(source, obj, start, stop, settings, abort, sink, progress)
            with lock:
                finished.add(i)
                # fdatasync per part would make a download as slow as the disk's sync path; checkpoints
                # every `checkpoint_s` cost a kill at most that many seconds of progress.
                if time.monotonic() - last_checkpoint[0] >= settings.checkpoint_s:
                    checkpoint()
            return n

        todo = [i for i in range(len(ranges)) if i not in done]
        if todo:
            save_state()
        with ThreadPoolExecutor(max_workers=max(1, settings.connections), thread_name_prefix="oiv4-dl") as pool:
            futures: list[Future[int]] = [pool.submit(fetch, i) for i in todo]
            completed, _ = wait(futures, return_when=FIRST_EXCEPTION)
            errors = [f.exception() for f in completed if f.exception() is not None]
            if errors:
                abort.set()
                wait(futures)
                with lock:
                    checkpoint()  # keep what did arrive for the next run
                real = [e for e in errors if not isinstance(e, _Aborted)]
                raise real[0] if real else ArchiveError(obj.name, "download aborted")
            fetched = sum(f.result() for f in futures)
        os.fsync(fd)
        done.update(finished)
    finally:
        os.close(fd)
    if part.stat().st_size != obj.size:
        raise ArchiveError(obj.name, f"downloaded file is {part.stat().st_size:,} bytes, expected {obj.size:,}")
    os.replace(part, final)
    storage.remove(sidecar_rel)
    storage.sync()
    return DownloadResult(fetched, len(ranges), len(ranges) - len(todo), note)


def stream_parts(
    source: Source,
    obj: RemoteObject,
    settings: TransferSettings,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[bytes]:
    """The archive's bytes in order, fetched `connections` parts at a time, never written to disk."""
    ranges = Parts(obj.size, settings.part_size)
    abort = Abort(cancel)

    def fetch(i: int) -> bytes:
        start, stop = ranges[i]
        buf = bytearray(stop - start)

        def sink(off: int, chunk: bytes) -> None:
            buf[off - start : off - start + len(chunk)] = chunk

        _fetch_with_retries(source, obj, start, stop, settings, abort, sink, progress)
        return bytes(buf)

    pool = ThreadPoolExecutor(max_workers=max(1, settings.connections), thread_name_prefix="oiv4-stream")
    try:
        window = max(1, settings.connections)
        pending: dict[int, Future[bytes]] = {i: pool.submit(fetch, i) for i in range(min(window, len(ranges)))}
        for i in range(len(ranges)):
            data = pending.pop(i).result()
            nxt = i + window
            if nxt < len(ranges):
                pending[nxt] = pool.submit(fetch, nxt)
            yield data
    finally:
        abort.set()
        pool.shutdown(wait=True, cancel_futures=True)
