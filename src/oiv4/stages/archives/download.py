"""Archives in: to a resumable partial file, or streamed in order straight to the converter.

To a file: `oiv4.io.ranged.download_ranged`, the same resumable ranged download (and the same
`<archive>.part` + `<archive>.part.json` state) that metadata uses. The `.part` file plays the role of
`Storage.open_atomic`'s temp file, which cannot be used here because parts arrive out of order.

Streamed: the same parallel parts under the same retry policy, handed to the consumer strictly in order
with at most `connections` parts in memory (RAM about `connections * part_size`), so nothing of the archive touches the disk. The transfers run
in an event loop on a helper thread; the consumer (the converter) stays an ordinary iterator.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from oiv4.contracts.errors import (
    ArchiveError,
    Cancelled,
    ChangedError,
    DiskError,
    NotFoundError,
    SourceChangedError,
    TransferError,
    UnreachableError,
)
from oiv4.contracts.errors import ArchiveSourceError as SourceError
from oiv4.contracts.transfer import TransferSettings
from oiv4.io.ranged import Parts, RangedResult, RemoteObject, download_ranged, fetch_range
from oiv4.io.retry import retry_async
from oiv4.io.storage import Storage
from oiv4.stages.archives.sources import Source

ProgressFn = Callable[[int], None]  # bytes advanced (negative when a failed part is retried)
DownloadResult = RangedResult
T = TypeVar("T")


def archive_error(name: str, source: Source, exc: BaseException) -> ArchiveError:
    """The archive stage's error for a failed transfer of archive `name`."""
    if isinstance(exc, ArchiveError):
        return exc
    if isinstance(exc, ChangedError):
        return SourceChangedError(name, str(exc))
    if isinstance(exc, Cancelled):
        return ArchiveError(name, "download aborted")
    if isinstance(exc, DiskError):
        return ArchiveError(name, str(exc))
    if isinstance(exc, UnreachableError):
        return SourceError(name, f"cannot reach {source.description}: {exc}")
    if isinstance(exc, NotFoundError):
        return SourceError(name, str(exc))
    if isinstance(exc, TransferError):
        return SourceError(name, str(exc))
    return ArchiveError(name, f"{type(exc).__name__}: {exc}")


def _run(name: str, source: Source, coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except (TransferError, ArchiveError) as exc:
        raise archive_error(name, source, exc) from exc


def stat_object(source: Source, name: str, settings: TransferSettings) -> RemoteObject:
    """Size and ETag of `name` at `source`, transient failures retried under the shared policy."""

    async def go() -> RemoteObject:
        async with source.open() as reader:
            return await retry_async(lambda _n: reader.stat(name), settings)

    return _run(name, source, go())


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

    async def go() -> DownloadResult:
        async with source.open() as reader:
            return await download_ranged(reader, obj, storage.local_path(rel), settings, progress, cancel)

    result = _run(obj.name, source, go())
    storage.sync()
    return result


def stream_parts(
    source: Source,
    obj: RemoteObject,
    settings: TransferSettings,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[bytes]:
    """The archive's bytes in order, fetched `connections` parts at a time, never written to disk."""
    ranges = Parts(obj.size, settings.part_size)
    window = max(1, settings.connections)
    loop = asyncio.new_event_loop()
    opened: Future[Any] = Future()
    stop = asyncio.Event()

    async def serve() -> None:
        # The reader lives as long as the stream: opened and closed in the loop that uses it.
        try:
            async with source.open() as reader:
                opened.set_result(reader)
                await stop.wait()
        except BaseException as exc:
            if not opened.done():
                opened.set_exception(exc)

    async def fetch(reader: Any, i: int) -> bytes:
        start, stop_ = ranges[i]
        buf = bytearray(stop_ - start)

        def sink(off: int, chunk: bytes) -> None:
            buf[off - start : off - start + len(chunk)] = chunk

        await fetch_range(reader, obj, start, stop_, settings, sink, progress)
        return bytes(buf)

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), name="oiv4-stream", daemon=True)
    thread.start()
    pending: dict[int, Future[bytes]] = {}
    try:
        reader = opened.result()

        def submit(i: int) -> None:
            pending[i] = asyncio.run_coroutine_threadsafe(fetch(reader, i), loop)

        for i in range(min(window, len(ranges))):
            submit(i)
        for i in range(len(ranges)):
            while True:  # wait in slices, so that Ctrl-C of the run is seen even while a part stalls
                try:
                    data = pending[i].result(timeout=0.2)
                    break
                except TimeoutError:
                    if cancel is not None and cancel.is_set():
                        raise ArchiveError(obj.name, "download aborted") from None
            del pending[i]
            if i + window < len(ranges):
                submit(i + window)
            yield data
    except (TransferError, ArchiveError) as exc:
        raise archive_error(obj.name, source, exc) from exc
    finally:
        for f in pending.values():
            f.cancel()
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
