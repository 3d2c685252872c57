"""Per-worker memory budgets: decoded pixels in flight, and response bodies that spill to disk when large.

Why: one worker reached 6.6 GB RSS decoding four 196 MP PNGs at once (4 x 196 MP x 4 B RGBA + the RGB copy),
and 16 endless responses reached 1.75 GB because every body was buffered in RAM up to 128 MiB. Concurrency
limits count requests, not bytes; these count bytes.

`MemoryBudget` is a counting semaphore in bytes shared by worker threads *and* asyncio tasks (fetch decodes in
a thread pool fed by an event loop). Waiters are served first come, first served, so a large decode is not
starved by a stream of small ones. A request larger than the whole budget is clamped to it: it waits until
nothing else holds any budget, then runs alone -- never deadlocks, never runs beside others.

`trim_above` makes the budget hold for RSS, not only for the bytes counted: without it a worker that decoded
four 40 MP PNGs one after another (the budget serialising them) still peaked at 2.2 GB instead of the 0.78 GB
of one decode, because glibc raises its mmap threshold after the first big free, so later big buffers come from
per-thread malloc arenas, which keep the memory after free. So when a hold of at least `trim_above` bytes ends,
`malloc_trim(0)` hands every arena's free pages back to the OS *before* the budget is released, so the next
giant decode starts from a trimmed heap. Only giant holds pay for it; a fixed mmap threshold
(glibc's `mallopt(M_MMAP_THRESHOLD)`) bounds RSS as well but costs ~20% CPU on every ordinary image (benchmarks/RESULTS.md).

`spool_body` reads a response body chunk by chunk into a `SpooledTemporaryFile`: up to `spool_above` bytes in
RAM, the rest on disk, refusing past `max_bytes`. RAM per body is then bounded by `spool_above`, whatever the
server sends; digests are computed on the way, so the MD5 check needs no second pass.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import mmap
import tempfile
import threading
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

from oiv4.contracts.errors import BodyTooLarge


class _Waiter:
    """One blocked acquirer: a thread (Event) or a task (Future on its loop)."""

    def __init__(self, amount: int, loop: asyncio.AbstractEventLoop | None) -> None:
        self.amount = amount
        self.granted = False
        self.loop = loop
        self.event = threading.Event() if loop is None else None
        self.future: asyncio.Future[None] | None = loop.create_future() if loop is not None else None

    def wake(self) -> None:
        self.granted = True
        if self.event is not None:
            self.event.set()
        elif self.loop is not None and self.future is not None:
            fut = self.future
            self.loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(None))


#: Holds of at least this many bytes trim the heap when they end: a 16 MP RGBA decode and up (~1% of fetched
#: originals are that big), so ordinary photos never pay for a trim.
TRIM_ABOVE = 256 << 20


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def trim_heap() -> bool:
    """glibc `malloc_trim(0)`: return free memory of every malloc arena to the OS; False when unavailable (musl)."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return False
    trim.argtypes, trim.restype = (ctypes.c_size_t,), ctypes.c_int
    trim(0)
    return True


class MemoryBudget:
    """A byte budget shared by threads and asyncio tasks; FIFO; oversized requests run alone."""

    def __init__(self, capacity: int, trim_above: int | None = TRIM_ABOVE) -> None:
        if capacity < 1:
            raise ValueError(f"a memory budget needs a positive capacity, got {capacity}")
        self.capacity = capacity
        self.trim_above = trim_above  # None: never trim (the benchmarks' and tests' control)
        self._lock = threading.Lock()
        self._queue: deque[_Waiter] = deque()
        self._in_use = 0
        self.peak = 0  # the most ever held at once: what tests and benchmarks check

    @property
    def in_use(self) -> int:
        """Bytes currently held."""
        return self._in_use

    @property
    def waiting(self) -> int:
        """Acquirers currently queued."""
        return len(self._queue)

    def clamp(self, amount: int) -> int:
        """What a request for `amount` actually takes: at least 1, at most the whole budget."""
        return min(max(1, amount), self.capacity)

    def _try_take(self, amount: int) -> bool:  # caller holds the lock
        if not self._queue and self._in_use + amount <= self.capacity:
            self._in_use += amount
            self.peak = max(self.peak, self._in_use)
            return True
        return False

    def _grant_waiters(self) -> None:  # caller holds the lock
        while self._queue and self._in_use + self._queue[0].amount <= self.capacity:
            waiter = self._queue.popleft()
            self._in_use += waiter.amount
            self.peak = max(self.peak, self._in_use)
            waiter.wake()

    def release(self, amount: int) -> None:
        """Give back what `acquire`/`acquire_async` returned."""
        with self._lock:
            self._in_use -= amount
            self._grant_waiters()

    def acquire(self, amount: int) -> int:
        """Block the calling thread until `amount` (clamped) is available; returns what to `release`."""
        amount = self.clamp(amount)
        with self._lock:
            if self._try_take(amount):
                return amount
            waiter = _Waiter(amount, None)
            self._queue.append(waiter)
        assert waiter.event is not None
        waiter.event.wait()
        return amount

    async def acquire_async(self, amount: int) -> int:
        """Wait (without blocking the loop) until `amount` (clamped) is available; returns what to `release`."""
        amount = self.clamp(amount)
        with self._lock:
            if self._try_take(amount):
                return amount
            waiter = _Waiter(amount, asyncio.get_running_loop())
            self._queue.append(waiter)
        assert waiter.future is not None
        try:
            await waiter.future
        except asyncio.CancelledError:
            with self._lock:
                if waiter.granted:  # granted just as we were cancelled: hand it on
                    self._in_use -= amount
                    self._grant_waiters()
                else:
                    self._queue.remove(waiter)
                    self._grant_waiters()  # we may have been the head blocking smaller requests behind us
            raise
        return amount

    @contextmanager
    def hold(self, amount: int) -> Iterator[int]:
        """`with budget.hold(n):` in a thread."""
        taken = self.acquire(amount)
        try:
            yield taken
        finally:
            if self.trim_above is not None and taken >= min(self.trim_above, self.capacity):
                trim_heap()  # while still held: the next giant decode must not start on an untrimmed heap
            self.release(taken)

    @asynccontextmanager
    async def hold_async(self, amount: int) -> AsyncIterator[int]:
        """`async with budget.hold_async(n):` in a task."""
        taken = await self.acquire_async(amount)
        try:
            yield taken
        finally:
            self.release(taken)


def decoded_bytes(width: int, height: int, bands: int = 4) -> int:
    """Bytes a decode of width x height will hold at its peak (Pillow keeps RGBA/RGBX as 4 bytes per pixel)."""
    return width * height * bands


def jpeg_decoded_bytes(width: int, height: int, components: int, multi_scan: bool) -> int:
    """Bytes a JPEG decode holds at its peak: 4 per declared pixel for the (scaled) output and Pillow's copy,
    plus, for a progressive or other multi-scan JPEG, libjpeg's whole-image coefficient buffer (2 bytes per
    coefficient, one coefficient per pixel and component, whatever the output scale)."""
    return width * height * (4 + (2 * components if multi_scan else 0))


@dataclass
class SpooledBody:
    """A downloaded body: in RAM while small, in an anonymous (already unlinked) temp file beyond `spool_above`."""

    size: int = 0
    memory: bytearray | None = field(default_factory=bytearray)  # None once spilled
    file: IO[bytes] | None = None
    digests: dict[str, Any] = field(default_factory=dict)  # name -> hasher, fed with every chunk

    @property
    def on_disk(self) -> bool:
        """True when the body spilled to the temp file."""
        return self.file is not None

    def view(self) -> bytes | mmap.mmap:
        """The whole body as a buffer: the bytes when in RAM, a read-only mmap of the temp file otherwise."""
        if self.file is None:
            return bytes(self.memory or b"")
        self.file.flush()
        return mmap.mmap(self.file.fileno(), 0, access=mmap.ACCESS_READ)

    def close(self) -> None:
        """Delete the temp file (or drop the RAM buffer)."""
        if self.file is not None:
            self.file.close()
        self.memory = None


async def spool_body(
    chunks: AsyncIterable[bytes],
    *,
    max_bytes: int,
    spool_above: int,
    hashers: dict[str, Any] | None = None,
    tmp_dir: str | None = None,
) -> SpooledBody:
    """Read `chunks` (e.g. `response.content.iter_chunked(1 << 16)`) keeping at most `spool_above` bytes in RAM.

    Raises BodyTooLarge as soon as more than `max_bytes` arrived (an endless body stops there, having cost at most
    `spool_above` of RAM).
    """
    body = SpooledBody(digests=dict(hashers or {}))
    try:
        async for chunk in chunks:
            body.size += len(chunk)
            if body.size > max_bytes:
                raise BodyTooLarge(f"body exceeds {max_bytes} bytes (--max-mb); stopped reading")
            for h in body.digests.values():
                h.update(chunk)
            if body.file is None and body.memory is not None and len(body.memory) + len(chunk) > spool_above:
                body.file = tempfile.TemporaryFile(dir=tmp_dir)  # noqa: SIM115 - owned by the SpooledBody
                body.file.write(body.memory)
                body.memory = None
            if body.file is not None:
                body.file.write(chunk)
            elif body.memory is not None:
                body.memory += chunk
    except BaseException:
        body.close()
        raise
    return body
