"""When a fetch shard must stop because the root cannot take more files (full disk, write errors, a symlinked
ledger folder): retrying rows then would only burn through them, each recorded as a failure it did not cause.

`DiskGuard` holds the shard's one abort: the first cause found wins, the rows already finished stay recorded,
and a re-run after fixing the cause continues where this one stopped.
"""

from __future__ import annotations

from oiv4.contracts.errors import FetchAborted, WriteFailed
from oiv4.contracts.schema import Outcome
from oiv4.io.storage import SPACE_ERRNOS, Storage


def write_outcome(failed: WriteFailed) -> Outcome:
    """The ledger outcome of a row whose image could not be written."""
    return Outcome.disk_full if failed.exc.errno in SPACE_ERRNOS else Outcome.write_error


class DiskGuard:
    """The shard's abort: set once, by the first storage failure or by too little free space."""

    def __init__(self, storage: Storage, min_free_bytes: int) -> None:
        self.storage = storage
        self.min_free_bytes = min_free_bytes
        self.abort: FetchAborted | None = None

    @property
    def stopped(self) -> bool:
        """True once the shard must stop taking new work."""
        return self.abort is not None

    def refuse(self, message: str) -> None:
        """Stop the shard for `message`, unless an earlier cause already stopped it."""
        if self.abort is None:
            self.abort = FetchAborted(message)

    def fail(self, exc: OSError, doing: str) -> None:
        """Stop the shard because writing under the root failed while `doing`."""
        where = self.storage.root
        if exc.errno in SPACE_ERRNOS:
            self.refuse(f"disk full while {doing} under {where}: free some space and re-run; finished rows are kept")
        else:
            self.refuse(f"cannot write under {where} while {doing}: {exc}; fix it and re-run, finished rows are kept")

    def check_free_space(self) -> None:
        """Stop the shard when a local root has less than `min_free_bytes` free (`--min-free-mb`)."""
        need = self.min_free_bytes
        if not need or self.abort is not None:
            return
        try:
            free = self.storage.free_bytes()
        except OSError:
            return
        if free is not None and free < need:
            self.refuse(
                f"only {free / 2**20:,.0f} MiB free under {self.storage.root} (the run stops below "
                f"{need / 2**20:,.0f} MiB, see --min-free-mb): free some space and re-run; finished rows are kept"
            )
