"""One shard of a URL set: manifest rows [start, stop) -> stored JPEGs + one ledger row each.

`run_fetch_shard(task)` is a picklable top-level function, so any executor (the local process pool,
Dask) can run it, and re-running it is always safe:

- rows already in the ledger are skipped (failures too, unless `retry_failed` names them);
- a row with a complete file at its final path but no ledger row (the process was killed between the
  rename and the ledger flush) is recorded `ok` with source `recovered` once the file decodes, and the
  file is never rewritten;
- every file is written temp + rename, and ledger parts are written only after the files they
  describe are durable, so no `ok` row ever points at a file that is not complete.

The pieces: `pipeline` turns one manifest row into its ledger row, `recovery` checks a file found at its final
path, `recording` buffers, counts and flushes the rows (`io.ledger_write.LedgerBuffer`), and `disk` stops the
shard when the root cannot take more files. This module reads what is left to do and runs the rows.

Inside the worker: one asyncio loop with one `HttpClient` (keep-alive, per-host limit) keeps up to
`concurrency` downloads in flight; verification, decode, shrink, encode and the write run in a small
thread pool (hashlib and Pillow release the GIL). A semaphore bounds the rows in flight, so memory
stays flat whatever the shard size.
"""

from __future__ import annotations

import asyncio
import gc
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from oiv4.contracts.schema import ImageSet, Outcome
from oiv4.io.ledger import read_shard
from oiv4.io.ledger_write import LedgerBuffer
from oiv4.io.memory_budget import MemoryBudget
from oiv4.io.storage import Storage
from oiv4.io.store import ShardWriter, shard_writer
from oiv4.stages.base import ShardResult, ShardTask
from oiv4.stages.fetch.disk import DiskGuard
from oiv4.stages.fetch.http import HttpClient
from oiv4.stages.fetch.pipeline import RowPipeline
from oiv4.stages.fetch.recording import ShardRecorder
from oiv4.stages.fetch.recovery import Recovery
from oiv4.stages.fetch.rows import read_manifest_slice
from oiv4.stages.fetch.settings import FetchSettings

__all__ = ["run_fetch_shard"]


def run_fetch_shard(task: ShardTask[FetchSettings]) -> ShardResult[None]:
    """Fetch, verify, shrink and store every unfinished row of `task`; returns counts (details in the ledger).

    Raises `FetchAborted` when the root cannot take more files (full disk, write errors): the rows already
    finished are recorded, and a re-run after fixing the cause continues where this one stopped.
    """
    settings, storage = task.settings, task.storage
    # Everything imported so far (pyarrow, aiohttp, Pillow: ~10^5 objects) lives as long as the process.
    # Freezing it keeps the cyclic GC from re-scanning it on every full collection, which the event loop's
    # steady churn of futures and callbacks otherwise triggers often (measured: ~40% of the loop thread).
    # Collect first: cyclic garbage of the worker's previous shard would otherwise be frozen for good.
    gc.collect()
    gc.freeze()
    return asyncio.run(_ShardRun(task, settings, storage).run())


class _ShardRun:
    """One shard in one event loop: what is left to do, the rows in flight, and the shard's ending."""

    def __init__(self, task: ShardTask[FetchSettings], settings: FetchSettings, storage: Storage) -> None:
        self.task = task
        self.settings = settings
        self.storage = storage
        self.image_set = ImageSet(task.image_set)
        self.writer: ShardWriter = shard_writer(settings.layout, storage, self.image_set, task.shard)
        self.result: ShardResult[None] = ShardResult(self.image_set, task.shard)
        self.guard = DiskGuard(storage, settings.min_free_bytes)
        self.buffer = LedgerBuffer(
            storage, self.image_set, task.shard, flush_rows=settings.flush_rows, flush_seconds=settings.flush_seconds
        )
        # Decoded pixels in flight across this worker's decode threads (one shard runs per worker process).
        self.budget = MemoryBudget(settings.decode_budget_bytes)

    async def run(self) -> ShardResult[None]:
        t_start = time.monotonic()
        task, settings = self.task, self.settings
        loop = asyncio.get_running_loop()
        self._io = ThreadPoolExecutor(1, thread_name_prefix="oiv4-ledger")
        self._cpu = ThreadPoolExecutor(max(1, settings.cpu_threads), thread_name_prefix="oiv4-cpu")
        self._probe = ThreadPoolExecutor(8, thread_name_prefix="oiv4-probe")  # existence checks on object stores
        self.recorder = ShardRecorder(self.buffer, self.result, self.guard, self._io)
        try:
            rows = await loop.run_in_executor(
                self._io, read_manifest_slice, self.storage, self.image_set, task.start, task.stop
            )
            pending, done = await self._pending(rows)
            self.result.skipped = len(rows) - len(pending)
            self.guard.check_free_space()
            if pending and not self.guard.stopped:
                await self._run_rows(pending, done)
            await self.recorder.flush()
            if self.guard.abort is not None:
                raise self.guard.abort
            if settings.layout != "folder":
                await loop.run_in_executor(self._io, self._finalize, rows)
            await loop.run_in_executor(self._io, self.buffer.close)
        except OSError as exc:
            # Reading the plan/ledger or packing the archive failed: same rule, never a traceback per row.
            self.guard.fail(exc, "finishing the shard")
            raise self.guard.abort from exc  # type: ignore[misc]
        finally:
            self._cpu.shutdown(wait=True, cancel_futures=True)
            self._io.shutdown(wait=True)
            self._probe.shutdown(wait=True, cancel_futures=True)
        self.result.elapsed_s = time.monotonic() - t_start
        return self.result

    async def _pending(self, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[int, str]]:
        """The rows still to do (no ledger row, a failure `retry_failed` names, or lost bytes), and every row's
        recorded outcome."""
        loop = asyncio.get_running_loop()
        settings = self.settings
        ledger = await loop.run_in_executor(self._io, read_shard, self.storage, self.image_set, self.task.shard)
        done: dict[int, str] = dict(zip(ledger["row"].to_pylist(), ledger["outcome"].to_pylist(), strict=True))
        reasons = dict(zip(ledger["row"].to_pylist(), ledger["reason"].to_pylist(), strict=True))
        pending = [r for r in rows if r["row"] not in done or settings.retried(done[r["row"]], reasons[r["row"]])]
        if settings.layout != "folder":
            # Archive layouts: an `ok` row whose bytes are neither packed nor staged any more is fetched again.
            ok_ids = {r["ImageID"] for r in rows if done.get(r["row"]) == Outcome.ok}
            lost = ok_ids - await loop.run_in_executor(self._io, self.writer.available, ok_ids)
            if lost:
                pending = sorted(pending + [r for r in rows if r["ImageID"] in lost], key=lambda r: r["row"])
        return pending, done

    def _finalize(self, rows: list[dict[str, Any]]) -> None:
        ledger = read_shard(self.storage, self.image_set, self.task.shard)
        ok = {r for r, o in zip(ledger["row"].to_pylist(), ledger["outcome"].to_pylist(), strict=True) if o == "ok"}
        self.writer.finalize([r for r in rows if r["row"] in ok])

    async def _run_rows(self, pending: list[dict[str, Any]], prior: dict[int, str]) -> None:
        settings = self.settings
        recovery = Recovery(
            self.storage, self.writer, settings.transform.max_pixels, self.budget, self._cpu, self._probe
        )
        pipeline = RowPipeline(
            settings, self.image_set, self.task.shard, self.writer, self.guard, self.recorder, recovery, self._cpu,
            self.budget,
        )  # fmt: skip
        sem = asyncio.Semaphore(settings.http.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        async with HttpClient(settings.transfer, settings.http) as client:
            stop_flusher = asyncio.Event()
            flusher = asyncio.create_task(self.recorder.flush_periodically(stop_flusher))
            try:
                for row in pending:
                    await sem.acquire()
                    if self.guard.stopped:
                        sem.release()
                        break
                    t = asyncio.create_task(pipeline.run(client, row, prior.get(row["row"])))
                    tasks.add(t)
                    t.add_done_callback(lambda t: (tasks.discard(t), sem.release()))
                while tasks:
                    await asyncio.wait(set(tasks), timeout=0.2)
                    if self.guard.stopped:
                        # The root cannot take more files: stop the rows in flight instead of letting each
                        # discover it. They stay unrecorded, so the next run does them (a file one of them
                        # managed to write meanwhile is recovered then).
                        for t in tasks:
                            t.cancel()
                        await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                stop_flusher.set()
                await flusher
