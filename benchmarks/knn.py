"""Exact kNN: `oiv4 neighbors` (database streamed from memory-mapped shards under --memory-gb) vs faiss
IndexFlat holding the whole database in RAM, on the same random vectors, side by side in one run.

The baseline per --metric is what a hand-written script uses: IndexFlatL2 for l2, IndexFlatIP for ip, and
IndexFlatIP over `faiss.normalize_L2`-ed copies for cosine.

Random vectors are written once as feature shards (the `oiv4 features` layout). Each side then runs in its
own fresh interpreter; wall and CPU seconds come from the parent, peak RSS is the child's own VmHWM
(ru_maxrss would carry the parent's peak over fork + exec). Prints the speed ratio (IndexFlat wall / oiv4
wall), both peak RSS against the budget, how many neighbour lists are identical, and checks the first
queries whose lists differ against a float64 brute force (oiv4's definition of the answer).

    .venv/bin/python benchmarks/knn.py --queries 10000 --database 500000 --dim 512 --k 100 --memory-gb 0.5
    .venv/bin/python benchmarks/knn.py --queries 4000 --database 100000 --metric cosine

Targets (issue 19): >= 0.8x IndexFlat's speed, peak RSS under --memory-gb, identical results.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from oiv4.contracts.layout import LAYOUT
from oiv4.io.storage import Storage
from oiv4.run.neighbors import NeighborsSettings
from oiv4.stages.neighbors import exact_distances, open_features

MODEL = "bench"

OIV4 = """
import json, sys
from oiv4.io.storage import Storage
from oiv4.run.neighbors import NeighborsSettings, run_neighbors
from oiv4.stages.neighbors import SearchStats, plan_sizes, open_features
root, k, mem, metric = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
stats = SearchStats()
s = NeighborsSettings("bench", "validation", None, ("targets",), k, metric, mem)
run_neighbors(Storage(root), s, stats)
db = open_features(Storage(root), "bench", "targets")
sizes = plan_sizes(mem, db.dim, db.dtype.itemsize, k, 0, len(db))
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0].split()[1]
print(json.dumps({"widened": stats.widened, "gpu": stats.gpu, "sizes": sizes.__dict__, "rss_gb": int(hwm) / 2**20}))
"""

FLAT = """
import json, sys
import numpy as np, faiss
from oiv4.io.storage import Storage
from oiv4.stages.neighbors import open_features
root, k, out, metric = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
st = Storage(root)
db, qs = open_features(st, "bench", "targets"), open_features(st, "bench", "validation")
x = np.ascontiguousarray(db.block(0, len(db)), dtype=np.float32)
q = np.ascontiguousarray(qs.block(0, len(qs)), dtype=np.float32)
if metric == "cosine":
    faiss.normalize_L2(x)
    faiss.normalize_L2(q)
index = faiss.IndexFlatL2(db.dim) if metric == "l2" else faiss.IndexFlatIP(db.dim)
index.add(x)
_, ids = index.search(q, k)
np.save(out, ids)
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0].split()[1]
print(json.dumps({"rss_gb": int(hwm) / 2**20}))
"""


def write_shard(st: Storage, name: str, shard: int, vecs: np.ndarray, first_id: int) -> None:
    """One feature shard of `vecs` with ids first_id, first_id + 1, ... as 16 hex digits."""
    buf = io.BytesIO()
    np.save(buf, vecs)
    st.write_bytes(LAYOUT.features_npy(MODEL, name, shard), buf.getvalue())
    ids = [f"{first_id + j:016x}" for j in range(len(vecs))]
    meta = pa.table({"image_id": ids, "row": pa.array(range(first_id, first_id + len(vecs)), pa.int64())})
    out = io.BytesIO()
    pq.write_table(meta, out)
    st.write_bytes(LAYOUT.features_metadata(MODEL, name, shard), out.getvalue())


def write_set(st: Storage, name: str, rng: np.random.Generator, n: int, a: argparse.Namespace, first_id: int) -> None:
    """n random vectors in shards of ~256 MB, generated a shard at a time (never the whole set in memory)."""
    shard = max(1, (256 << 20) // (a.dim * np.dtype(a.dtype).itemsize))
    for i, lo in enumerate(range(0, n, shard)):
        vecs = rng.standard_normal((min(shard, n - lo), a.dim), dtype=np.float32).astype(a.dtype)
        write_shard(st, name, i, vecs, first_id + lo)


def measure(args: list[str]) -> dict:
    """One side in a fresh interpreter: wall, CPU seconds (user + sys) and what the child reports."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", *args], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(p.stderr)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, **json.loads(p.stdout.strip().splitlines()[-1])}


def brute_force_rows(st: Storage, rows: np.ndarray, k: int, metric: str) -> np.ndarray:
    """Positions of the k nearest (float64, ties by position) of the given query rows, database in chunks."""
    db, qs = open_features(st, MODEL, "targets"), open_features(st, MODEL, "validation")
    q = qs.take(rows)
    dist = np.empty((len(rows), len(db)))
    for lo in range(0, len(db), 20_000):
        x = db.block(lo, lo + 20_000)
        for i in range(len(rows)):
            dist[i, lo : lo + len(x)] = exact_distances(q[i : i + 1], x, metric)
    return np.lexsort((np.broadcast_to(np.arange(len(db)), dist.shape), dist), axis=1)[:, :k]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--database", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--memory-gb", type=float, default=0.5)
    ap.add_argument("--metric", default="l2", choices=["l2", "ip", "cosine"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="as stored")
    ap.add_argument("--check", type=int, default=10, help="differing lists checked against the brute force")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="oiv4-knn-", dir=os.environ.get("KNN_TMP")) as tmp:
        st = Storage(tmp)
        write_set(st, "targets", rng, a.database, a, 0)
        write_set(st, "validation", rng, a.queries, a, 1 << 40)
        ours = measure([OIV4, tmp, str(a.k), str(a.memory_gb), a.metric])
        flat_ids = Path(tmp, "flat.npy")
        flat = measure([FLAT, tmp, str(a.k), str(flat_ids), a.metric])
        name = NeighborsSettings(MODEL, "validation", None, ("targets",), a.k, a.metric, a.memory_gb).file_name
        got = pq.read_table(Path(tmp, LAYOUT.neighbors_file(MODEL, name)))
        mine = np.array([int(s, 16) for s in got["neighbor_id"].to_pylist()]).reshape(a.queries, a.k)
        theirs = np.load(flat_ids)
        same = (mine == theirs).all(axis=1)
        differ = np.flatnonzero(~same)[: a.check]
        exact = (
            int((brute_force_rows(st, differ, a.k, a.metric) == mine[differ]).all(axis=1).sum()) if len(differ) else 0
        )
    end = os.getloadavg()
    db_gb = a.database * a.dim * 4 / 2**30
    print(
        f"{a.queries:,} queries x {a.database:,} x {a.dim}-d {a.dtype} (database {db_gb:.2f} GiB as float32), k={a.k},"
        f" {a.metric}"
    )
    print(f"load average at start {load[0]:.1f}, at end {end[0]:.1f} (1 min); {os.cpu_count()} cores")
    print(f"{'':30}{'wall s':>8}{'CPU s':>8}{'peak RSS GiB':>14}")
    sz = ours["sizes"]
    print(f"{'oiv4 neighbors':30}{ours['wall']:8.1f}{ours['cpu']:8.1f}{ours['rss_gb']:14.3f}"
          f"   --memory-gb {a.memory_gb}: {sz['query_rows']:,} queries/part, {sz['db_rows']:,} rows/block,"
          f" {ours['widened']} widened{', GPU' if ours['gpu'] else ''}")  # fmt: skip
    flat_name = f"faiss {'IndexFlatL2' if a.metric == 'l2' else 'IndexFlatIP'} (all in RAM)"
    print(f"{flat_name:30}{flat['wall']:8.1f}{flat['cpu']:8.1f}{flat['rss_gb']:14.3f}")
    print(f"speed ratio (IndexFlat wall / oiv4 wall): {flat['wall'] / ours['wall']:.2f}x (goal >= 0.8x)")
    under = "under" if ours["rss_gb"] < a.memory_gb else "OVER"
    print(f"oiv4 peak RSS {ours['rss_gb']:.3f} GiB is {under} --memory-gb {a.memory_gb}")
    print(f"identical neighbour lists: {int(same.sum()):,} of {a.queries:,} queries")
    if len(differ):
        print(f"of the first {len(differ)} that differ, oiv4 equals the float64 brute force on {exact}")


if __name__ == "__main__":
    main()
