"""Live progress of a fetch run, read from the ledger parts the shards write.

Why poll the ledger rather than listen to results: a `ShardResult` arrives only when a whole shard
(10,000 rows, maybe an hour) is done, which is far too coarse; the ledger parts appear every couple of
seconds per shard, on whatever machine runs it, and they are the durable truth anyway. So the same
poller works unchanged for the local process pool and for a Dask cluster writing to a shared root, and
it keeps counting correctly across worker restarts. Each poll reads only files it has not seen.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from oiv4.contracts.errors import DamagedFileError
from oiv4.contracts.schema import ImageSet, Outcome
from oiv4.io.ledger import list_ledger, read_ledger_file
from oiv4.io.storage import Storage


@dataclass
class FetchProgress:
    """A snapshot of the current run (rows finished since it started)."""

    image_set: str
    todo: int  # rows this run set out to finish
    done: int = 0
    bytes_downloaded: int = 0
    elapsed_s: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> int:
        return self.outcomes.get(Outcome.ok.value, 0)

    @property
    def images_per_s(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes_downloaded / 1e6 / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def success_rate(self) -> float:
        return self.ok / self.done if self.done else 0.0

    @property
    def eta_s(self) -> float | None:
        rate = self.images_per_s
        return max(0, self.todo - self.done) / rate if rate > 0 else None

    def top_failures(self, n: int = 3) -> list[tuple[str, int]]:
        return [(o, c) for o, c in self.outcomes.most_common() if o != Outcome.ok][:n]


@dataclass
class _FileCounts:
    outcomes: Counter[str]
    bytes_downloaded: int

    @property
    def rows(self) -> int:
        return sum(self.outcomes.values())


class LedgerPoller:
    """Counts ledger rows started at or after `since` across a set's shard files and parts (of the set's ledger,
    or of `ledger_dir`, another ledger folder kept by the same rules such as a model's features ledger)."""

    def __init__(
        self, storage: Storage, image_set: ImageSet | str, since: datetime, todo: int, ledger_dir: str | None = None
    ) -> None:
        self.storage = storage
        self.image_set = ImageSet(image_set)
        self.since = since
        self.todo = todo
        self.ledger_dir = ledger_dir
        self._t0 = time.monotonic()
        self._cache: dict[tuple[str, int], _FileCounts] = {}

    def _counts(self, rel: str) -> _FileCounts | None:
        try:
            key = (rel, self.storage.size(rel))
            if key not in self._cache:
                t = read_ledger_file(self.storage, rel, ["outcome", "bytes_downloaded", "started_at"])
                if t is None:
                    return None
                t = t.filter(
                    pc.greater_equal(t["started_at"], pa.scalar(self.since, t.schema.field("started_at").type))
                )
                vc = pc.value_counts(t["outcome"])
                self._cache[key] = _FileCounts(
                    Counter(dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True))),
                    int(pc.sum(t["bytes_downloaded"]).as_py() or 0),
                )
            return self._cache[key]
        except (OSError, pa.ArrowInvalid, DamagedFileError):
            return None  # compacted or removed between listing and reading: the next poll sees the result

    def poll(self) -> FetchProgress:
        snap = FetchProgress(self.image_set.value, self.todo, elapsed_s=time.monotonic() - self._t0)
        files = list_ledger(self.storage, self.image_set, ledger_dir=self.ledger_dir)
        # Files not seen yet are read on a few threads (a cluster run adds hundreds of parts between polls).
        seen = {rel for rel, _size in self._cache}
        listed = [*files.compacted.values(), *(p for ps in files.parts.values() for p in ps)]
        fresh = [r for r in listed if r not in seen]
        if len(fresh) > 1:
            with ThreadPoolExecutor(min(8, len(fresh))) as pool:
                list(pool.map(self._counts, fresh))
        for shard in files.shards:
            counted: list[_FileCounts] = []
            compacted = self._counts(files.compacted[shard]) if shard in files.compacted else None
            if compacted is not None and compacted.rows:
                counted.append(compacted)  # compacted during this run: it already holds its parts' rows
            else:
                counted.extend(c for c in (self._counts(p) for p in files.parts.get(shard, [])) if c is not None)
            for c in counted:
                snap.outcomes.update(c.outcomes)
                snap.bytes_downloaded += c.bytes_downloaded
        snap.done = sum(snap.outcomes.values())
        return snap
