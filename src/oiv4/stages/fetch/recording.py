"""A fetch shard's ledger rows on their way to disk, driven from the event loop.

Rows go into the shard's `LedgerBuffer` and are counted into its `ShardResult`; a part is written by the
ledger thread when the buffer is full or `flush_seconds` have passed. A part that cannot be written keeps its
rows buffered and stops the shard through its `DiskGuard`, so no row is lost: the next flush (or run) has them.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import Executor

from oiv4.contracts.errors import UnsafePath
from oiv4.contracts.ledger_row import LedgerRow
from oiv4.io.ledger_write import LedgerBuffer
from oiv4.stages.base import ShardResult
from oiv4.stages.fetch.disk import DiskGuard


class ShardRecorder:
    """Records a shard's rows: counts them, buffers them, flushes them as durable ledger parts."""

    def __init__(self, buffer: LedgerBuffer, result: ShardResult, guard: DiskGuard, io: Executor) -> None:
        self.buffer = buffer
        self.result = result
        self.guard = guard
        self._io = io
        self._lock = asyncio.Lock()
        self._flushes: set[asyncio.Task[None]] = set()

    def record(self, row: LedgerRow) -> None:
        """One finished row: counted, buffered, and a flush started when the buffer is full."""
        self.result.outcomes[row.outcome] += 1
        self.result.bytes_downloaded += row.bytes_downloaded or 0
        if self.buffer.add(row):
            t = asyncio.get_running_loop().create_task(self.flush())
            self._flushes.add(t)  # keep a reference until done (the loop only holds weak ones)
            t.add_done_callback(self._flushes.discard)

    def record_failed_write(self, row: LedgerRow) -> None:
        """A row whose image could not be written: recorded if the ledger still can be, never flushed for."""
        self.buffer.add(row)
        self.result.outcomes[row.outcome] += 1

    async def flush(self) -> None:
        """Write buffered rows as one durable ledger part (after syncing the files they describe)."""
        async with self._lock:
            rows = self.buffer.take()
            if not rows:
                return
            try:
                await asyncio.get_running_loop().run_in_executor(self._io, self.buffer.write, rows)
            except OSError as exc:
                self.buffer.restore(rows)
                self.guard.fail(exc, "writing the ledger")
            except UnsafePath as exc:  # a symlinked ledger folder: nothing is written through it
                self.buffer.restore(rows)
                self.guard.refuse(f"refusing to write the ledger under {self.buffer.storage.root}: {exc}")

    async def flush_periodically(self, stop: asyncio.Event) -> None:
        """Flush every `flush_seconds` (checking free space first) until `stop` is set."""
        # Stopped with an event, never cancelled: a cancel landing while `flush` awaits its ledger write
        # would cancel that write and lose the rows it had taken from the buffer.
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=min(0.5, self.buffer.flush_seconds))
            if self.buffer.due():
                self.guard.check_free_space()
                await self.flush()
