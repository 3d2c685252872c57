"""`oiv4 neighbors`: exact kNN ground truth, resumable per block of queries, each block a task for an executor.

Output `neighbors/<model>/<queries>-<database>.parquet` where <queries> is the set name, or
`<set>.<N>s<seed>` for a seeded sample of N, and <database> joins several sets with `+`; a metric other
than l2 adds `.<metric>`, `--exclude-duplicates` adds `.nodup`. The queries are cut into parts (each one
search over the whole database, sized from `--memory-gb`); each part is a task (`neighbors_part.PartRunner`) that any
executor runs, this process by default, and writes `<name>.parts/part-NNNNN.parquet` atomically. When all
are there they are joined, in part order, into the final file: the same bytes whatever ran the parts.
"""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from oiv4.contracts.errors import ExecutionError, InputError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.contracts.setting import setting
from oiv4.io.storage import Storage
from oiv4.run.executor import ExecutorSettings, default_workers, run_shards
from oiv4.run.neighbors_part import (
    SCHEMA,
    STAGE,
    NeighborsSettings,
    PartRunner,
    PartSettings,
    exclusions,
    open_stores,
    query_ids,
    query_positions,
)
from oiv4.stages.base import ShardTask
from oiv4.stages.neighbors import SearchSizes, SearchStats, plan_sizes

__all__ = ["SCHEMA", "NeighborsExecutor", "NeighborsSettings", "faiss_threads", "parts_executor", "run_neighbors"]


@dataclass(frozen=True)
class NeighborsExecutor(ExecutorSettings):
    """`ExecutorSettings` as `oiv4 neighbors` defaults them: one part at a time, in this process (each worker
    holds its own --memory-gb, so more of them is asked for, never assumed from the cores)."""

    kind: str = setting(
        "local",
        help="local: worker processes on this machine (with --workers 2 or more). dask: one Dask task per block of "
        "queries; each worker memory-maps the vectors under --root and writes its part file there (a folder "
        "mounted at the same path everywhere). See docs/similarity.md.",
        flag="--executor",
        choices=("local", "dask"),
    )
    workers: int | None = setting(
        1,
        help="Query blocks searched at once, each in its own worker process within --memory-gb: the local "
        "pool's, or the LocalCluster's with --executor dask and no --scheduler (a running cluster brings its "
        "own workers). 1 with --executor local searches in this process.",
        flag="--workers",
    )
    scheduler: str | None = setting(
        None,
        help="Dask scheduler address, e.g. tcp://10.0.0.5:8786 (implies --executor dask).",
        flag="--scheduler",
        default_text="a LocalCluster of --workers processes",
    )


@dataclass(frozen=True)
class _Plan:
    queries: int
    q_rows: int
    sizes: SearchSizes


def _plan(storage: Storage, s: NeighborsSettings) -> _Plan:
    """Check the input and size the search; the ids and exclusions read for it are dropped on return."""
    qstore, dbs = open_stores(storage, s)
    for db in dbs:
        if db.dim != qstore.dim:
            raise InputError(
                f"{s.model} features of {db.image_set} are {db.dim}-d but those of {s.queries} are {qstore.dim}-d"
            )
    total = sum(len(db) for db in dbs)
    if s.k > total - (1 if s.queries in s.database else 0) or s.k < 1:
        raise InputError(f"--k {s.k} is larger than the database ({total:,} vectors)")
    qpos = query_positions(s, len(qstore))
    ex_q, _ = exclusions(storage, s, query_ids(qstore, qpos), dbs)
    # Every buffer of the search is sized from --memory-gb (the search decides how; the largest stored
    # itemsize, since sets of one model may differ in dtype). Sized here once, so every part, whichever
    # process runs it, uses the same sizes.
    extra = int(np.bincount(ex_q).max()) if len(ex_q) else 0
    itemsize = max(x.dtype.itemsize for x in [qstore, *dbs])
    sizes = plan_sizes(s.memory_gb, qstore.dim, itemsize, s.k, extra, total)
    return _Plan(len(qpos), max(1, min(sizes.query_rows, s.part_queries or len(qpos), len(qpos))), sizes)


def parts_executor(executor: ExecutorSettings | None) -> ExecutorSettings:
    """Where the parts run. One worker (the default) searches in this process: no process to spawn, and its
    memory is this process's, within --memory-gb. More workers, or Dask, run that many parts at once, each
    in its own process within --memory-gb; a LocalCluster also defaults to one worker, since every worker
    holds its own --memory-gb."""
    executor = executor or ExecutorSettings()
    if executor.kind == "local" and (executor.workers or 1) == 1:
        return dataclasses.replace(executor, kind="thread", workers=1)
    if executor.kind == "dask" and not executor.scheduler and executor.workers is None:
        return dataclasses.replace(executor, workers=1)
    return executor


def faiss_threads(executor: ExecutorSettings) -> int | None:
    """OpenMP threads for faiss in each worker process this machine starts: its cores shared among them (a
    Dask nanny starts every worker with OMP_NUM_THREADS=1, and a pool of N would run N x cores threads).
    None for this process and for a running cluster's workers: their own environment decides
    (docs/similarity.md says how to give a Dask worker its machine's cores)."""
    if executor.kind == "thread" or executor.scheduler:
        return None
    return max(1, default_workers() // (executor.workers or default_workers()))


# Kept together: the checks, the resume stamp, the parts and the join share one set of sizes and names; the
# resume rule (a part is reused only under the same stamp) is visible only while they sit together.
def run_neighbors(
    storage: Storage,
    s: NeighborsSettings,
    stats: SearchStats | None = None,
    executor: ExecutorSettings | None = None,
) -> tuple[str, int]:
    """Compute (or finish) the ground truth; returns (output path relative to the root, query blocks reused).

    `stats`, when given, counts what the searches did (queries widened, GPU or not), summed over the parts
    wherever they ran. `executor` says where the parts run (see `parts_executor`); the output is the same bytes.
    """
    plan = _plan(storage, s)
    # The Parquet reads of the plan leave freed buffers in Arrow's pool: give them back before a part sizes itself.
    pa.default_memory_pool().release_unused()
    out_rel = LAYOUT.neighbors_file(s.model, s.file_name)
    stamp_rel = LAYOUT.neighbors_parts_settings(s.model, s.file_name)
    stamp = json.dumps({"k": s.k, "queries": plan.queries, "q_rows": plan.q_rows}, sort_keys=True)
    if storage.exists(out_rel):
        with storage.open(out_rel) as fh:
            meta = pq.read_schema(fh).metadata or {}
        if meta.get(b"oiv4") == stamp.encode():
            return out_rel, 0
    if storage.exists(stamp_rel) and storage.read_bytes(stamp_rel) != stamp.encode():
        for p in storage.glob(LAYOUT.neighbors_parts_glob(s.model, s.file_name)):
            storage.remove(p)
    storage.write_bytes(stamp_rel, stamp.encode())
    executor = parts_executor(executor)
    part = PartSettings(s, plan.sizes, faiss_threads(executor))
    part_rels, tasks = [], []
    for b, start in enumerate(range(0, plan.queries, plan.q_rows)):
        rel = LAYOUT.neighbors_part(s.model, s.file_name, b)
        part_rels.append(rel)
        if not storage.exists(rel):
            stop = min(start + plan.q_rows, plan.queries)
            tasks.append(ShardTask(STAGE, ImageSet(s.queries), b, start, stop, storage, part))
    runner = PartRunner()
    try:
        results = run_shards(tasks, runner, executor, interrupt=runner.interrupt)
    except BrokenProcessPool:
        raise ExecutionError(
            "worker processes kept dying (out of memory? killed?); finished query blocks are kept: re-run to "
            "resume, with fewer --workers or a lower --memory-gb"
        ) from None
    if stats is not None:
        for r in results:
            stats.widened += r.detail.widened if r.detail else 0
            stats.gpu = stats.gpu or bool(r.detail and r.detail.gpu)
    # Streamed a part at a time (one row group each), so the whole ground truth is never held in memory.
    # ParquetFile rather than read_table: the latter imports pandas (~50 MB of the --memory-gb budget).
    with storage.open_atomic(out_rel) as out, pq.ParquetWriter(out, SCHEMA.with_metadata({"oiv4": stamp})) as w:
        for rel in part_rels:
            with storage.open(rel) as fh:
                w.write_table(pq.ParquetFile(fh).read())
    for rel in part_rels:
        storage.remove(rel)
    return out_rel, len(part_rels) - len(tasks)
