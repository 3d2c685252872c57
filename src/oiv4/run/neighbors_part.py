"""One part of `oiv4 neighbors`: a block of queries searched against the whole database, written as one file.

A part is a pure unit: the run's settings, the sizes planned once from `--memory-gb` and a range of query
positions in; `<name>.parts/part-NNNNN.parquet` out (written to a temp name and renamed into place) and the
search's counts (`SearchStats`) back. Nothing else is shared, so any executor runs it: a thread of this
process, the local process pool, or a Dask worker that sees the root (a shared folder or an object store).
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from oiv4.contracts.errors import InputError, Interrupted
from oiv4.contracts.extras import require
from oiv4.contracts.layout import LAYOUT
from oiv4.io.storage import Storage
from oiv4.stages.base import ShardResult, ShardTask
from oiv4.stages.neighbors import FeatureStore, NeighborsSettings, SearchSizes, SearchStats, knn_block, open_features

#: `ShardTask.stage` of a part (also the first word of its Dask key).
STAGE = "neighbors"

SCHEMA = pa.schema(
    [
        ("query_id", pa.string()),
        ("rank", pa.int32()),
        ("neighbor_id", pa.string()),
        ("neighbor_set", pa.string()),
        ("distance", pa.float64()),
    ]
)


@dataclass(frozen=True)
class PartSettings:
    """What every part of one run is computed from: the run's settings and the sizes planned once by the
    main process, so whichever process runs a part cuts the database into the same blocks."""

    run: NeighborsSettings
    sizes: SearchSizes
    # OpenMP threads of faiss (and of the BLAS it brings) in the process running the part; None: as that
    # process's environment says. Speed only: the answer does not depend on them.
    threads: int | None = None


def open_stores(storage: Storage, s: NeighborsSettings) -> tuple[FeatureStore, list[FeatureStore]]:
    """The query set's and the database sets' memory-mapped features (nothing read but ids and headers)."""
    return open_features(storage, s.model, s.queries), [open_features(storage, s.model, name) for name in s.database]


def query_positions(s: NeighborsSettings, n: int) -> np.ndarray:
    """Plan positions of the queries, in output order: all `n`, or the seeded sample (the same in every process)."""
    if s.sample is None:
        return np.arange(n)
    if s.sample > n:
        raise InputError(f"{s.queries}:{s.sample} asks for more queries than {s.queries} has ({n:,})")
    return np.sort(np.random.default_rng(s.seed).choice(n, s.sample, replace=False))


def exclusions(storage: Storage, s: NeighborsSettings, qids: np.ndarray, dbs: list[FeatureStore]) -> tuple:
    """(query index, database position) pairs never returned: the query itself, and dedup pairs if asked."""
    # Matched in Arrow (hash lookups over the id arrays), never as Python objects: a database of millions
    # of ids as str objects or a dict would cost more than a --memory-gb of a few hundred MB allows.
    query_ids = pa.array(qids, pa.string())
    pairs_q, pairs_p, offset = [], [], 0
    for db in dbs:
        pos = pc.index_in(query_ids, value_set=db.ids)
        hit = pos.is_valid().to_numpy(zero_copy_only=False)
        pairs_q.append(np.flatnonzero(hit))
        pairs_p.append(pos.to_numpy(zero_copy_only=False)[hit].astype(np.int64) + offset)
        offset += len(db)
    if s.exclude_duplicates:
        rel = LAYOUT.dedup_pairs()
        if not storage.exists(rel):
            raise InputError(f"--exclude-duplicates needs {storage.path(rel)}: run `oiv4 dedup --root {storage.root}`")
        with storage.open(rel) as fh:
            t = pq.ParquetFile(fh).read(columns=["id_a", "set_a", "id_b", "set_b"])
        both = [(t["id_a"], t["set_a"], t["id_b"], t["set_b"]), (t["id_b"], t["set_b"], t["id_a"], t["set_a"])]
        offset = 0
        for db in dbs:
            for qa, qs, da, ds in both:
                m = pc.and_(pc.equal(qs, s.queries), pc.equal(ds, db.image_set))
                qi = pc.index_in(pc.filter(qa, m), value_set=query_ids)
                pi = pc.index_in(pc.filter(da, m), value_set=db.ids)
                hit = pc.and_(qi.is_valid(), pi.is_valid())
                pairs_q.append(pc.filter(qi, hit).to_numpy().astype(np.int64))
                pairs_p.append(pc.filter(pi, hit).to_numpy().astype(np.int64) + offset)
            offset += len(db)
    return np.concatenate(pairs_q).astype(np.int64), np.concatenate(pairs_p).astype(np.int64)


def query_ids(store: FeatureStore, positions: np.ndarray) -> np.ndarray:
    """The ids at `positions` as a numpy string array."""
    return np.asarray(store.ids.take(pa.array(positions)).to_pylist(), dtype=str)


class PartRunner:
    """The task function every executor runs: `runner(task)` computes the part `task.shard`, covering query
    positions [task.start, task.stop), and returns its `SearchStats` as the result's detail.

    Pickles without state (a process pool or Dask sends it to workers); `interrupt` stops a part running in
    this process (the thread executor) at its next database block, so Ctrl-C never waits for a whole pass.
    """

    def __init__(self) -> None:
        self._stop = threading.Event()

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._stop = threading.Event()

    def interrupt(self) -> None:
        """Stop parts running in this process at their next database block."""
        self._stop.set()

    def __call__(self, task: ShardTask[PartSettings]) -> ShardResult[SearchStats]:
        """Write the part file (unless an earlier attempt did) and return what the search did."""
        t0 = time.monotonic()
        s, sizes, storage = task.settings.run, task.settings.sizes, task.storage
        stats = SearchStats()
        rel = LAYOUT.neighbors_part(s.model, s.file_name, task.shard)
        if storage.exists(rel):  # a retried task whose first attempt got as far as the rename
            return ShardResult(task.image_set, task.shard, skipped=task.stop - task.start, detail=stats)
        if task.settings.threads:
            faiss = require("faiss", extra="neighbors", feature="the exact kNN search")
            faiss.omp_set_num_threads(task.settings.threads)
        qstore, dbs = open_stores(storage, s)
        qpos = query_positions(s, len(qstore))[task.start : task.stop]
        qids = query_ids(qstore, qpos)
        ex_q, ex_p = exclusions(storage, s, qids, dbs)
        offsets = np.cumsum([0] + [len(db) for db in dbs])

        def database_block(start: int, stop: int) -> np.ndarray:
            if self._stop.is_set():
                raise Interrupted(f"query block {task.shard} stopped")
            parts = []
            for i, db in enumerate(dbs):
                lo, hi = max(start, offsets[i]), min(stop, offsets[i + 1])
                if hi > lo:
                    parts.append(db.block(int(lo - offsets[i]), int(hi - offsets[i])))
            return parts[0] if len(parts) == 1 else np.concatenate(parts)

        pos, dist = knn_block(
            qstore.take(qpos),
            database_block,
            int(offsets[-1]),
            s.k,
            s.metric,
            sizes.db_rows,
            (ex_q, ex_p),
            sizes.rerank_pairs,
            stats=stats,
            tile_queries=sizes.tile_queries,
        )
        names = np.concatenate([np.full(len(db), i, dtype=np.int8) for i, db in enumerate(dbs)])
        all_ids = pa.concat_arrays([db.ids for db in dbs])
        flat, n = pos.ravel(), len(qpos)
        # Columns built in Arrow, not as Python strings: k rows per query would cost ~70 bytes each.
        table = pa.table(
            {
                "query_id": pa.array(qids, pa.string()).take(np.repeat(np.arange(n), s.k)),
                "rank": pa.array(np.tile(np.arange(1, s.k + 1, dtype=np.int32), n)),
                "neighbor_id": all_ids.take(pa.array(flat)),
                "neighbor_set": pa.array(s.database, pa.string()).take(names[flat]),
                "distance": pa.array(dist.ravel()),
            },
            schema=SCHEMA,
        )
        buf = io.BytesIO()
        pq.write_table(table, buf)
        storage.write_bytes(rel, buf.getvalue(), fsync=True)
        return ShardResult(task.image_set, task.shard, elapsed_s=time.monotonic() - t0, detail=stats)
