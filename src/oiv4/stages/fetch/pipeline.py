"""One manifest row of a fetch shard -> its one ledger row: the ImageID check, a file left at the final path
(`recovery`), the download, the checks of an original (size, MD5), the transform and the write, and the
thumbnail fallback when the original is gone.

Everything that refuses an image raises `OutcomeError` and ends as that outcome; only a root that cannot take
the file (`WriteFailed`) stops the shard instead (`DiskGuard`), leaving the row for the next run.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from oiv4.contracts.errors import HostileIdError, Interrupted, OutcomeError, UnsafePath, WriteFailed
from oiv4.contracts.ledger_row import LedgerRow
from oiv4.contracts.schema import ImageSet, Outcome
from oiv4.io.ledger_write import now_utc
from oiv4.io.memory_budget import MemoryBudget
from oiv4.io.store import ShardWriter
from oiv4.stages.fetch.disk import DiskGuard, write_outcome
from oiv4.stages.fetch.http import Fetched, HttpClient
from oiv4.stages.fetch.recording import ShardRecorder
from oiv4.stages.fetch.recovery import Recovery
from oiv4.stages.fetch.rows import check_original, merge_fallback, stored_fields
from oiv4.stages.fetch.settings import GONE_OUTCOMES, FetchSettings
from oiv4.stages.fetch.transform import transform_image


class _AbortedBeforeWrite(Interrupted):
    """The shard began to stop while this row waited for a decode thread: it is left for the next run."""


@dataclass
class RowPipeline:
    """Turns each manifest row into its ledger row and hands it to the shard's `ShardRecorder`."""

    settings: FetchSettings
    image_set: ImageSet
    shard: int
    writer: ShardWriter
    guard: DiskGuard
    recorder: ShardRecorder
    recovery: Recovery
    cpu: Executor  # the shard's decode threads
    budget: MemoryBudget

    def _ledger_row(self, row: dict[str, Any], **fields: Any) -> LedgerRow:
        fields.setdefault("url", row.get("OriginalURL"))
        return LedgerRow(image_id=row["ImageID"], set=self.image_set.value, shard=self.shard, row=row["row"], **fields)

    async def run(self, client: HttpClient, row: dict[str, Any], prior: str | None) -> None:
        """Finish one row (unless the shard stops first); `prior` is its outcome in the ledger, if any."""
        t0 = time.monotonic()
        started = now_utc()
        image_id = row["ImageID"]
        try:
            self.writer.location(image_id)  # LAYOUT.image(): the only way an ImageID becomes a path
        except HostileIdError as exc:
            rec = self._ledger_row(row, outcome=Outcome.invalid_id, reason=str(exc), attempts=0)
            self._finish(rec, t0, started)
            return
        note = ""
        if prior == Outcome.verify_failed:
            # `oiv4 verify --requeue` found the stored file broken: fetch again and replace it.
            note = "; replaced the stored file verify found broken"
        else:
            try:
                found = await self.recovery.check(image_id)
            except WriteFailed as exc:
                self.guard.fail(exc.exc, f"checking {image_id}")
                return
            if isinstance(found, dict):
                self._finish(self._ledger_row(row, **found), t0, started)
                return
            if found:
                note = f"; replaced an undecodable file found at the final path ({found})"

        fetched = await client.fetch(row["OriginalURL"], row.get("OriginalSize"))
        rec = await self._store(row, fetched, original=True)
        if rec is None:
            return  # storage failed: the run is aborting, the row stays unrecorded and is retried next run
        if rec.outcome in GONE_OUTCOMES and self.settings.fallback_thumbnail:
            rec = await self._fallback(client, row, rec)
            if rec is None:
                return
        if note:
            rec = replace(rec, reason=(rec.reason or "") + note)
        self._finish(rec, t0, started)

    def _finish(self, rec: LedgerRow, t0: float, started: datetime) -> None:
        self.recorder.record(replace(rec, started_at=started, elapsed_s=round(time.monotonic() - t0, 4)))

    async def _store(self, row: dict[str, Any], fetched: Fetched, *, original: bool) -> LedgerRow | None:
        """Verify (originals only), transform and write a download; returns its ledger row (not yet timed)."""
        base = {
            "attempts": fetched.attempts,
            "bytes_downloaded": fetched.bytes_downloaded,
            "url": fetched.url,
            "source": "original" if original else "thumbnail",
        }
        if not fetched.ok:
            return self._ledger_row(row, **base, outcome=fetched.outcome, reason=fetched.reason)
        loop = asyncio.get_running_loop()
        try:
            fields = await loop.run_in_executor(self.cpu, self._verify_and_write, row, fetched, original)
        except OutcomeError as exc:
            return self._ledger_row(row, **base, outcome=exc.outcome, reason=exc.reason)
        except _AbortedBeforeWrite:
            return None
        except WriteFailed as exc:
            self.guard.fail(exc.exc, f"writing {row['ImageID']}")
            # Recorded if the ledger can still be written; either way the next run retries it.
            reason = f"{exc.exc}; retried automatically by the next run"
            rec = self._ledger_row(row, **base, outcome=write_outcome(exc), reason=reason, started_at=now_utc())
            self.recorder.record_failed_write(rec)
            return None
        return self._ledger_row(row, **base, **fields)

    def _verify_and_write(self, row: dict[str, Any], fetched: Fetched, original: bool) -> dict[str, Any]:
        """The `ok` row's fields of a download verified, transformed and written; raises OutcomeError when it is
        refused, WriteFailed when the root cannot take it."""
        body = fetched.body or b""
        verified = "unverified thumbnail (Thumbnail300KURL has no checksum)"
        if original:
            check_original(row, body)
            verified = "size and MD5 verified"
        ts = self.settings.transform
        stored = transform_image(body, row.get("Rotation"), ts, fetched.content_type, self.budget)
        if self.guard.stopped:  # a write now would fail again and blame a row that never caused it
            raise _AbortedBeforeWrite
        try:
            location = self.writer.put(row["ImageID"], stored.data)
        except UnsafePath as exc:
            raise OutcomeError(Outcome.unsafe_path.value, f"{verified}; not stored: {exc}") from None
        except OSError as exc:
            raise WriteFailed(exc) from exc
        return stored_fields(stored, verified, location)

    async def _fallback(self, client: HttpClient, row: dict[str, Any], rec: LedgerRow) -> LedgerRow | None:
        """The original is gone: store the (unverifiable) Thumbnail300KURL copy instead, if there is one."""
        url = row.get("Thumbnail300KURL") or ""
        if not url:
            return replace(rec, reason=f"{rec.reason}; no Thumbnail300KURL to fall back to")
        thumb = await client.fetch(url)
        trec = await self._store(row, thumb, original=False)
        return None if trec is None else merge_fallback(rec, trec)
