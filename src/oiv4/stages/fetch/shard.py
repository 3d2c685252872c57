"""One shard of a URL set: manifest rows [start, stop) -> stored JPEGs + one ledger row each.

`run_fetch_shard(task)` is a picklable top-level function, so any executor (the local process pool,
Dask) can run it, and re-running it is always safe:

- rows already in the ledger are skipped (failures too, unless `retry_failed` names them);
- a row with a complete file at its final path but no ledger row (the process was killed between the
  rename and the ledger flush) is recorded `ok` with source `recovered` once the file decodes, and the
  file is never rewritten;
- every file is written temp + rename, and ledger parts are written only after the files they
  describe are durable, so no `ok` row ever points at a file that is not complete.

Inside the worker: one asyncio loop with one `HttpClient` (keep-alive, per-host limit) keeps up to
`concurrency` downloads in flight; verification, decode, shrink, encode and the write run in a small
thread pool (hashlib and Pillow release the GIL). A semaphore bounds the rows in flight, so memory
stays flat whatever the shard size.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import shutil
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from oiv4.contracts.errors import FetchAborted, HostileIdError, Interrupted, StorageError, UnsafePath
from oiv4.contracts.schema import ImageSet, Outcome
from oiv4.contracts.shards import ShardResult, ShardTask
from oiv4.io.checksum import checksum
from oiv4.io.ledger import read_shard
from oiv4.io.ledger_write import ShardLedger, append_rows, now_utc
from oiv4.io.memory_budget import MemoryBudget
from oiv4.io.safe_paths import safe_target
from oiv4.io.storage import Storage
from oiv4.io.store import ShardWriter, shard_writer
from oiv4.stages.fetch.http import Fetched, HttpClient
from oiv4.stages.fetch.rows import check_original, merge_fallback, read_manifest_slice, stored_fields
from oiv4.stages.fetch.settings import GONE_OUTCOMES, FetchSettings
from oiv4.stages.fetch.transform import TransformError, check_stored, transform_image

_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class _AbortedBeforeWrite(Interrupted):
    """The shard began to stop while this row waited for a decode thread: it is left for the next run."""


class _WriteFailed(StorageError):
    def __init__(self, exc: OSError) -> None:
        super().__init__(str(exc))
        self.exc = exc


def run_fetch_shard(task: ShardTask) -> ShardResult:
    """Fetch, verify, shrink and store every unfinished row of `task`; returns counts (details in the ledger).

    Raises `FetchAborted` when the root cannot take more files (full disk, write errors): the rows already
    finished are recorded, and a re-run after fixing the cause continues where this one stopped.
    """
    settings = task.settings if isinstance(task.settings, FetchSettings) else FetchSettings()
    storage = Storage(task.root, dict(task.storage_options))
    # Everything imported so far (pyarrow, aiohttp, Pillow: ~10^5 objects) lives as long as the process.
    # Freezing it keeps the cyclic GC from re-scanning it on every full collection, which the event loop's
    # steady churn of futures and callbacks otherwise triggers often (measured: ~40% of the loop thread).
    # Collect first: cyclic garbage of the worker's previous shard would otherwise be frozen for good.
    gc.collect()
    gc.freeze()
    return asyncio.run(_ShardRun(task, settings, storage).run())


class _ShardRun:
    def __init__(self, task: ShardTask, settings: FetchSettings, storage: Storage) -> None:
        self.task = task
        self.settings = settings
        self.storage = storage
        self.image_set = ImageSet(task.image_set)
        self.writer: ShardWriter = shard_writer(settings.layout, storage, self.image_set, task.shard)
        self.result = ShardResult(self.image_set, task.shard)
        self._buffer: list[dict[str, Any]] = []
        self._flush_lock = asyncio.Lock()
        self._abort: FetchAborted | None = None
        self._last_flush = time.monotonic()
        self._flushes: set[asyncio.Task[None]] = set()
        # Decoded pixels in flight across this worker's decode threads (one shard runs per worker process).
        self.budget = MemoryBudget(settings.decode_budget_bytes)

    # ---- bookkeeping ---------------------------------------------------------------------------
    def _record(self, row: Mapping[str, Any], t0: float, **fields: Any) -> None:
        fields.setdefault("url", row.get("OriginalURL"))
        fields["outcome"] = str(fields["outcome"])  # plain strings in the ledger and the counts, not enum members
        rec = {
            "image_id": row["ImageID"],
            "set": self.image_set.value,
            "shard": self.task.shard,
            "row": row["row"],
            "elapsed_s": round(time.monotonic() - t0, 4),
            **fields,
        }
        self._buffer.append(rec)
        self.result.outcomes[rec["outcome"]] += 1
        self.result.bytes_downloaded += rec.get("bytes_downloaded") or 0
        if len(self._buffer) >= self.settings.flush_rows:
            t = asyncio.get_running_loop().create_task(self._flush())
            self._flushes.add(t)  # keep a reference until done (the loop only holds weak ones)
            t.add_done_callback(self._flushes.discard)

    async def _flush(self) -> None:
        """Write buffered rows as one durable ledger part (after syncing the files they describe)."""
        async with self._flush_lock:
            rows, self._buffer = self._buffer, []
            self._last_flush = time.monotonic()
            if not rows:
                return
            try:
                await asyncio.get_running_loop().run_in_executor(
                    self._io, append_rows, self.storage, self.image_set, self.task.shard, rows
                )
            except OSError as exc:
                self._buffer = rows + self._buffer
                self._fail_storage(exc, "writing the ledger")
            except UnsafePath as exc:  # a symlinked ledger folder: nothing is written through it
                self._buffer = rows + self._buffer
                if self._abort is None:
                    self._abort = FetchAborted(f"refusing to write the ledger under {self.storage.root}: {exc}")

    async def _flush_periodically(self, stop: asyncio.Event) -> None:
        # Stopped with an event, never cancelled: a cancel landing while `_flush` awaits its ledger write
        # cancelled that write and lost the rows it had taken from the buffer (seen in ~1 run in 8).
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=min(0.5, self.settings.flush_seconds))
            if time.monotonic() - self._last_flush >= self.settings.flush_seconds:
                self._check_free_space()
                await self._flush()

    def _fail_storage(self, exc: OSError, doing: str) -> None:
        if self._abort is None:
            where = self.storage.root
            if exc.errno in _SPACE_ERRNOS:
                msg = f"disk full while {doing} under {where}: free some space and re-run; finished rows are kept"
            else:
                msg = f"cannot write under {where} while {doing}: {exc}; fix it and re-run, finished rows are kept"
            self._abort = FetchAborted(msg)

    def _check_free_space(self) -> None:
        need = self.settings.min_free_bytes
        if not need or not self.storage.local or self._abort is not None:
            return
        try:
            free = shutil.disk_usage(self.storage.root).free
        except OSError:
            return
        if free < need:
            self._abort = FetchAborted(
                f"only {free / 2**20:,.0f} MiB free under {self.storage.root} (the run stops below "
                f"{need / 2**20:,.0f} MiB, see --min-free-mb): free some space and re-run; finished rows are kept"
            )

    # ---- the shard -------------------------------------------------------------------------------
    async def run(self) -> ShardResult:
        t_start = time.monotonic()
        task, settings = self.task, self.settings
        loop = asyncio.get_running_loop()
        self._io = ThreadPoolExecutor(1, thread_name_prefix="oiv4-ledger")
        self._cpu = ThreadPoolExecutor(max(1, settings.cpu_threads), thread_name_prefix="oiv4-cpu")
        self._probe = ThreadPoolExecutor(8, thread_name_prefix="oiv4-probe")  # existence checks on object stores
        try:
            rows = await loop.run_in_executor(
                self._io, read_manifest_slice, self.storage, self.image_set, task.start, task.stop
            )
            ledger = await loop.run_in_executor(self._io, read_shard, self.storage, self.image_set, task.shard)
            done: dict[int, str] = dict(zip(ledger["row"].to_pylist(), ledger["outcome"].to_pylist(), strict=True))
            reasons = dict(zip(ledger["row"].to_pylist(), ledger["reason"].to_pylist(), strict=True))
            pending = [r for r in rows if r["row"] not in done or settings.retried(done[r["row"]], reasons[r["row"]])]
            if settings.layout != "folder":
                # Archive layouts: an `ok` row whose bytes are neither packed nor staged any more is fetched again.
                ok_ids = {r["ImageID"] for r in rows if done.get(r["row"]) == Outcome.ok}
                lost = ok_ids - await loop.run_in_executor(self._io, self.writer.available, ok_ids)
                if lost:
                    pending = sorted(pending + [r for r in rows if r["ImageID"] in lost], key=lambda r: r["row"])
            self.result.skipped = len(rows) - len(pending)
            self._check_free_space()
            if pending and self._abort is None:
                await self._run_rows(pending, done)
            await self._flush()
            if self._abort is not None:
                raise self._abort
            if settings.layout != "folder":
                await loop.run_in_executor(self._io, self._finalize, rows)
            await loop.run_in_executor(self._io, ShardLedger(self.storage, self.image_set, task.shard).close)
        except OSError as exc:
            # Reading the plan/ledger or packing the archive failed: same rule, never a traceback per row.
            self._fail_storage(exc, "finishing the shard")
            raise self._abort from exc  # type: ignore[misc]
        finally:
            self._cpu.shutdown(wait=True, cancel_futures=True)
            self._io.shutdown(wait=True)
            self._probe.shutdown(wait=True, cancel_futures=True)
        self.result.elapsed_s = time.monotonic() - t_start
        return self.result

    def _finalize(self, rows: list[dict[str, Any]]) -> None:
        ledger = read_shard(self.storage, self.image_set, self.task.shard)
        ok = {r for r, o in zip(ledger["row"].to_pylist(), ledger["outcome"].to_pylist(), strict=True) if o == "ok"}
        self.writer.finalize([r for r in rows if r["row"] in ok])

    async def _run_rows(self, pending: list[dict[str, Any]], prior: dict[int, str]) -> None:
        sem = asyncio.Semaphore(self.settings.http.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        async with HttpClient(self.settings.transfer, self.settings.http) as client:
            stop_flusher = asyncio.Event()
            flusher = asyncio.create_task(self._flush_periodically(stop_flusher))
            try:
                for row in pending:
                    await sem.acquire()
                    if self._abort is not None:
                        sem.release()
                        break
                    t = asyncio.create_task(self._row(client, row, prior.get(row["row"])))
                    tasks.add(t)
                    t.add_done_callback(lambda t: (tasks.discard(t), sem.release()))
                while tasks:
                    await asyncio.wait(set(tasks), timeout=0.2)
                    if self._abort is not None:
                        # The root cannot take more files: stop the rows in flight instead of letting each
                        # discover it. They stay unrecorded, so the next run does them (a file one of them
                        # managed to write meanwhile is recovered then).
                        for t in tasks:
                            t.cancel()
                        await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                stop_flusher.set()
                await flusher

    # ---- one row ---------------------------------------------------------------------------------
    async def _row(self, client: HttpClient, row: dict[str, Any], prior: str | None) -> None:
        t0 = time.monotonic()
        started = now_utc()
        image_id = row["ImageID"]
        try:
            self.writer.location(image_id)  # LAYOUT.image(): the only way an ImageID becomes a path
        except HostileIdError as exc:
            self._record(row, t0, outcome=Outcome.invalid_id, reason=str(exc), attempts=0, started_at=started)
            return
        loop = asyncio.get_running_loop()
        note = ""
        if prior == Outcome.verify_failed:
            # `oiv4 verify --requeue` found the stored file broken: fetch again and replace it.
            note = "; replaced the stored file verify found broken"
        else:
            try:
                found = None
                # Usually nothing is there: ask without queueing behind the decoders (a local stat is
                # microseconds; an object-store HEAD goes to the probe threads), decode only what exists.
                if await self._exists(image_id):
                    found = await loop.run_in_executor(self._cpu, self._recover, image_id)
            except _WriteFailed as exc:
                self._fail_storage(exc.exc, f"checking {image_id}")
                return
            if isinstance(found, dict):
                self._record(row, t0, started_at=started, **found)
                return
            if found:
                note = f"; replaced an undecodable file found at the final path ({found})"

        fetched = await client.fetch(row["OriginalURL"], row.get("OriginalSize"))
        rec = await self._store(row, fetched, original=True)
        if rec is None:
            return  # storage failed: the run is aborting, the row stays unrecorded and is retried next run
        if rec["outcome"] in GONE_OUTCOMES and self.settings.fallback_thumbnail:
            rec = await self._fallback(client, row, rec)
            if rec is None:
                return
        if note:
            rec["reason"] = (rec.get("reason") or "") + note
        self._record(row, t0, started_at=started, **rec)

    async def _exists(self, image_id: str) -> bool:
        try:
            if self.storage.local:
                return self.writer.has_staged(image_id)
            return await asyncio.get_running_loop().run_in_executor(self._probe, self.writer.has_staged, image_id)
        except OSError as exc:
            raise _WriteFailed(exc) from exc

    def _recover(self, image_id: str) -> dict[str, Any] | str | None:
        """A complete file already at the final path: its ledger fields (never rewritten); a str = why it is
        unusable (it will be replaced); None = nothing there."""
        try:
            if self.storage.local:
                # A symlink at (or above) the final path would make us "recover" a file outside the root.
                safe_target(self.storage.root, self.writer.staged_path(image_id))
            if not self.writer.has_staged(image_id):
                return None
            data = self.writer.read_staged(image_id)
        except UnsafePath as exc:
            return str(exc)  # not ours to keep; writing the fetched copy will be refused (unsafe_path) too
        except OSError as exc:
            raise _WriteFailed(exc) from exc
        try:
            check = check_stored(data, self.settings.transform.max_pixels, self.budget)
        except TransformError as exc:
            return exc.reason
        w, h = check.size
        return {
            "outcome": Outcome.ok.value,
            "reason": "complete file found at its final path after an interrupted run; decodes, kept as is",
            "attempts": 0,
            "source": "recovered",
            "bytes_downloaded": 0,
            "stored_width": w,
            "stored_height": h,
            "stored_bytes": len(data),
            "location": self.writer.location(image_id),
            "checksum": checksum(data),
            "phash": check.phash,
        }

    async def _store(self, row: dict[str, Any], fetched: Fetched, *, original: bool) -> dict[str, Any] | None:
        """Verify (originals only), transform and write a download; returns the ledger fields."""
        base = {
            "attempts": fetched.attempts,
            "bytes_downloaded": fetched.bytes_downloaded,
            "url": fetched.url,
            "source": "original" if original else "thumbnail",
        }
        if not fetched.ok:
            return {**base, "outcome": fetched.outcome, "reason": fetched.reason}
        loop = asyncio.get_running_loop()
        try:
            fields = await loop.run_in_executor(self._cpu, self._verify_and_write, row, fetched, original)
        except _AbortedBeforeWrite:
            return None
        except _WriteFailed as exc:
            self._fail_storage(exc.exc, f"writing {row['ImageID']}")
            outcome = Outcome.disk_full if exc.exc.errno in _SPACE_ERRNOS else Outcome.write_error
            # Recorded if the ledger can still be written; either way the next run retries it.
            self._buffer.append(
                {
                    "image_id": row["ImageID"],
                    "set": self.image_set.value,
                    "shard": self.task.shard,
                    "row": row["row"],
                    "outcome": outcome.value,
                    "reason": f"{exc.exc}; retried automatically by the next run",
                    "started_at": now_utc(),
                    **base,
                }
            )
            self.result.outcomes[outcome.value] += 1
            return None
        return {**base, **fields}

    def _verify_and_write(self, row: dict[str, Any], fetched: Fetched, original: bool) -> dict[str, Any]:
        body = fetched.body or b""
        verified = "unverified thumbnail (Thumbnail300KURL has no checksum)"
        if original:
            if (refused := check_original(row, body)) is not None:
                return refused
            verified = "size and MD5 verified"
        ts = self.settings.transform
        try:
            stored = transform_image(body, row.get("Rotation"), ts, fetched.content_type, self.budget)
        except TransformError as exc:
            return {"outcome": exc.outcome, "reason": exc.reason}
        if self._abort is not None:  # a write now would fail again and blame a row that never caused it
            raise _AbortedBeforeWrite
        try:
            location = self.writer.put(row["ImageID"], stored.data)
        except UnsafePath as exc:
            return {"outcome": Outcome.unsafe_path.value, "reason": f"{verified}; not stored: {exc}"}
        except OSError as exc:
            raise _WriteFailed(exc) from exc
        return stored_fields(stored, verified, location)

    async def _fallback(self, client: HttpClient, row: dict[str, Any], rec: dict[str, Any]) -> dict[str, Any] | None:
        """The original is gone: store the (unverifiable) Thumbnail300KURL copy instead, if there is one."""
        url = row.get("Thumbnail300KURL") or ""
        if not url:
            rec["reason"] = f"{rec['reason']}; no Thumbnail300KURL to fall back to"
            return rec
        thumb = await client.fetch(url)
        trec = await self._store(row, thumb, original=False)
        return None if trec is None else merge_fallback(rec, trec)
