"""Files found at their final path without a ledger row: a run was killed between the rename and the ledger
flush. Such a file is checked (it must decode strictly) and recorded `ok` with source `recovered`, never
rewritten; one that does not decode is replaced by a fresh download.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from oiv4.contracts.errors import OutcomeError, UnsafePath, WriteFailed
from oiv4.contracts.schema import Outcome
from oiv4.io.checksum import checksum
from oiv4.io.memory_budget import MemoryBudget
from oiv4.io.storage import Storage
from oiv4.io.store import ShardWriter
from oiv4.stages.fetch.transform import check_stored

RECOVERED_REASON = "complete file found at its final path after an interrupted run; decodes, kept as is"


@dataclass
class Recovery:
    """Looks for a row's image at its final path, and turns a good one into its ledger fields."""

    storage: Storage
    writer: ShardWriter
    max_pixels: int
    budget: MemoryBudget
    cpu: Executor  # decodes what is found
    probe: Executor  # asks an object store whether a file is there, without queueing behind the decoders

    async def check(self, image_id: str) -> dict[str, Any] | str | None:
        """The ledger fields of a good file at `image_id`'s final path; a str = why the file there is unusable
        (it will be replaced); None = nothing there. Raises WriteFailed when the root cannot be read."""
        # Usually nothing is there: ask without queueing behind the decoders (a local stat is
        # microseconds; an object-store HEAD goes to the probe threads), decode only what exists.
        if not await self._exists(image_id):
            return None
        return await asyncio.get_running_loop().run_in_executor(self.cpu, self._recover, image_id)

    async def _exists(self, image_id: str) -> bool:
        try:
            if not self.storage.round_trips:
                return self.writer.has_staged(image_id)
            return await asyncio.get_running_loop().run_in_executor(self.probe, self.writer.has_staged, image_id)
        except OSError as exc:
            raise WriteFailed(exc) from exc

    def _recover(self, image_id: str) -> dict[str, Any] | str | None:
        try:
            # A symlink at (or above) the final path would make us "recover" a file outside the root.
            self.storage.refuse_symlinks(self.writer.staged_path(image_id))
            if not self.writer.has_staged(image_id):
                return None
            data = self.writer.read_staged(image_id)
        except UnsafePath as exc:
            return str(exc)  # not ours to keep; writing the fetched copy will be refused (unsafe_path) too
        except OSError as exc:
            raise WriteFailed(exc) from exc
        try:
            check = check_stored(data, self.max_pixels, self.budget)
        except OutcomeError as exc:
            return exc.reason
        w, h = check.size
        return {
            "outcome": Outcome.ok.value,
            "reason": RECOVERED_REASON,
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
