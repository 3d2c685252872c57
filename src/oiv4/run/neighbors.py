"""`oiv4 neighbors`: exact kNN ground truth, resumable per block of queries.

Output `neighbors/<model>/<queries>-<database>.parquet` where <queries> is the set name, or
`<set>.<N>s<seed>` for a seeded sample of N, and <database> joins several sets with `+`; a metric other
than l2 adds `.<metric>`, `--exclude-duplicates` adds `.nodup`. Each block of queries is written atomically
as `<name>.parts/part-NNNNN.parquet`; when all are there they are joined into the final file.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from oiv4.contracts.errors import InputError
from oiv4.contracts.layout import LAYOUT
from oiv4.io.storage import Storage
from oiv4.stages.neighbors import FeatureStore, SearchStats, knn_block, open_features, plan_sizes

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
class NeighborsSettings:
    """What `oiv4 neighbors` computes."""

    model: str
    queries: str
    sample: int | None
    database: tuple[str, ...]
    k: int = 100
    metric: str = "l2"
    memory_gb: float = 2.0
    exclude_duplicates: bool = False
    seed: int = 0

    @property
    def file_name(self) -> str:
        q = self.queries if self.sample is None else f"{self.queries}.{self.sample}s{self.seed}"
        name = f"{q}-{'+'.join(self.database)}"
        if self.metric != "l2":
            name += f".{self.metric}"
        if self.exclude_duplicates:
            name += ".nodup"
        return name


def _exclusions(storage: Storage, s: NeighborsSettings, qids: np.ndarray, dbs: list[FeatureStore]) -> tuple:
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


# Kept long: the checks, block sizes, resume stamp and per-block parts share one set of sizes and names; the
# resume rule (a part is reused only under the same stamp) is visible only while they sit together.
def run_neighbors(storage: Storage, s: NeighborsSettings, stats: SearchStats | None = None) -> tuple[str, int]:
    """Compute (or finish) the ground truth; returns (output path relative to the root, query blocks reused).

    `stats`, when given, counts what the searches did (queries widened, GPU or not).
    """
    qstore = open_features(storage, s.model, s.queries)
    dbs = [open_features(storage, s.model, name) for name in s.database]
    for db in dbs:
        if db.dim != qstore.dim:
            raise InputError(
                f"{s.model} features of {db.image_set} are {db.dim}-d but those of {s.queries} are {qstore.dim}-d"
            )
    total = sum(len(db) for db in dbs)
    if s.k > total - (1 if s.queries in s.database else 0) or s.k < 1:
        raise InputError(f"--k {s.k} is larger than the database ({total:,} vectors)")
    qpos = np.arange(len(qstore))
    if s.sample is not None:
        if s.sample > len(qstore):
            raise InputError(f"{s.queries}:{s.sample} asks for more queries than {s.queries} has ({len(qstore):,})")
        qpos = np.sort(np.random.default_rng(s.seed).choice(len(qstore), s.sample, replace=False))
    qids = np.asarray(qstore.ids.take(pa.array(qpos)).to_pylist(), dtype=str)
    # The Parquet reads above leave freed buffers in Arrow's pool: give them back before the search sizes itself.
    pa.default_memory_pool().release_unused()
    ex_q, ex_p = _exclusions(storage, s, qids, dbs)
    offsets = np.cumsum([0] + [len(db) for db in dbs])

    def database_block(start: int, stop: int) -> np.ndarray:
        parts = []
        for i, db in enumerate(dbs):
            lo, hi = max(start, offsets[i]), min(stop, offsets[i + 1])
            if hi > lo:
                parts.append(db.block(int(lo - offsets[i]), int(hi - offsets[i])))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    # Every buffer of the search is sized from --memory-gb (the search decides how; the largest stored
    # itemsize, since sets of one model may differ in dtype).
    extra = int(np.bincount(ex_q).max()) if len(ex_q) else 0
    itemsize = max(x.dtype.itemsize for x in [qstore, *dbs])
    sizes = plan_sizes(s.memory_gb, qstore.dim, itemsize, s.k, extra, total)
    q_rows = max(1, min(sizes.query_rows, len(qpos)))
    out_rel = LAYOUT.neighbors_file(s.model, s.file_name)
    stamp_rel = LAYOUT.neighbors_parts_settings(s.model, s.file_name)
    stamp = json.dumps({"k": s.k, "queries": len(qpos), "q_rows": q_rows}, sort_keys=True)
    if storage.exists(out_rel):
        with storage.open(out_rel) as fh:
            meta = pq.read_schema(fh).metadata or {}
        if meta.get(b"oiv4") == stamp.encode():
            return out_rel, 0
    if storage.exists(stamp_rel) and storage.read_bytes(stamp_rel) != stamp.encode():
        for p in storage.glob(LAYOUT.neighbors_parts_glob(s.model, s.file_name)):
            storage.remove(p)
    storage.write_bytes(stamp_rel, stamp.encode())
    names = np.concatenate([np.full(len(db), i, dtype=np.int8) for i, db in enumerate(dbs)])
    set_names = pa.array(s.database, pa.string())
    all_ids = pa.concat_arrays([db.ids for db in dbs])
    part_rels, reused = [], 0
    for b, start in enumerate(range(0, len(qpos), q_rows)):
        rel = LAYOUT.neighbors_part(s.model, s.file_name, b)
        part_rels.append(rel)
        if storage.exists(rel):
            reused += 1
            continue
        stop = min(start + q_rows, len(qpos))
        sel = (ex_q >= start) & (ex_q < stop)
        queries = qstore.take(qpos[start:stop])
        pos, dist = knn_block(
            queries,
            database_block,
            total,
            s.k,
            s.metric,
            sizes.db_rows,
            (ex_q[sel] - start, ex_p[sel]),
            sizes.rerank_pairs,
            stats=stats,
            tile_queries=sizes.tile_queries,
        )
        flat = pos.ravel()
        # Columns built in Arrow, not as Python strings: k rows per query would cost ~70 bytes each.
        table = pa.table(
            {
                "query_id": pa.array(qids[start:stop], pa.string()).take(np.repeat(np.arange(stop - start), s.k)),
                "rank": pa.array(np.tile(np.arange(1, s.k + 1, dtype=np.int32), stop - start)),
                "neighbor_id": all_ids.take(pa.array(flat)),
                "neighbor_set": set_names.take(names[flat]),
                "distance": pa.array(dist.ravel()),
            },
            schema=SCHEMA,
        )
        buf = io.BytesIO()
        pq.write_table(table, buf)
        storage.write_bytes(rel, buf.getvalue(), fsync=True)
    # Streamed a part at a time (one row group each), so the whole ground truth is never held in memory.
    # ParquetFile rather than read_table: the latter imports pandas (~50 MB of the --memory-gb budget).
    with storage.open_atomic(out_rel) as out, pq.ParquetWriter(out, SCHEMA.with_metadata({"oiv4": stamp})) as w:
        for rel in part_rels:
            with storage.open(rel) as fh:
                w.write_table(pq.ParquetFile(fh).read())
    for rel in part_rels:
        storage.remove(rel)
    return out_rel, reused
