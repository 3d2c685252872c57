"""Benchmark: exact kNN, `oiv4 neighbors`' blocked search vs faiss IndexFlat holding the whole database.

Random float16 vectors are written once as feature shards (the `oiv4 features` layout). Then, each in its
own subprocess so peak RSS is its own: faiss IndexFlatL2 over the whole database in RAM (float32), and
`run_neighbors` with `--memory-gb`. Prints wall seconds, peak RSS, the speed ratio and how many of the
neighbour lists are identical.

    .venv/bin/python benchmarks/knn.py [--queries 2000] [--database 200000] [--dim 256] [--k 100] [--memory-gb 0.25]

Targets (issue): >= 0.8x IndexFlat's speed, peak memory under --memory-gb, identical results.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODEL = "bench"


def _write(root: Path, args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from support.feature_shards import write_features

    rng = np.random.default_rng(0)
    db = rng.standard_normal((args.database, args.dim), dtype=np.float32).astype(np.float16)
    write_features(root, MODEL, "targets", db, 50_000)
    q = rng.standard_normal((args.queries, args.dim), dtype=np.float32).astype(np.float16)
    write_features(root, MODEL, "validation", q, 50_000)


def _child(kind: str, root: str, k: int, memory_gb: float) -> None:
    from oiv4.io.storage import Storage
    from oiv4.run.neighbors import NeighborsSettings, run_neighbors
    from oiv4.stages.neighbors import open_features

    storage = Storage(root)
    t0 = time.perf_counter()
    if kind == "faiss":
        import faiss

        qs = open_features(storage, MODEL, "validation")
        db = open_features(storage, MODEL, "targets")
        index = faiss.IndexFlatL2(db.dim)
        index.add(db.block(0, len(db)).astype(np.float32))
        _, ids = index.search(qs.block(0, len(qs)).astype(np.float32), k)
        np.save(Path(root) / "faiss_ids.npy", ids)
    else:
        settings = NeighborsSettings(MODEL, "validation", None, ("targets",), k, "l2", memory_gb)
        out, _ = run_neighbors(storage, settings)
        import pyarrow.parquet as pq

        t = pq.read_table(Path(root) / out, columns=["neighbor_id"])
        ids = np.array([int(x[1:], 16) for x in t["neighbor_id"].to_pylist()]).reshape(-1, k)
        np.save(Path(root) / "oiv4_ids.npy", ids)
    secs = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"seconds": secs, "peak_rss_gib": rss}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--database", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--memory-gb", type=float, default=0.25)
    p.add_argument("--child", nargs=2)
    args = p.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], args.k, args.memory_gb)
        return
    with tempfile.TemporaryDirectory() as root:
        _write(Path(root), args)
        res = {}
        for kind in ("faiss", "oiv4"):
            cmd = [
                sys.executable,
                __file__,
                "--child",
                kind,
                root,
                "--k",
                str(args.k),
                "--memory-gb",
                str(args.memory_gb),
            ]
            res[kind] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            print(f"{kind:6s} {res[kind]['seconds']:8.1f} s  peak RSS {res[kind]['peak_rss_gib']:.2f} GiB")
        same = (np.load(Path(root) / "faiss_ids.npy") == np.load(Path(root) / "oiv4_ids.npy")).all(axis=1).mean()
        db_gib = args.database * args.dim * 4 / 2**30
        print(
            f"database {args.database:,} x {args.dim} (float32 {db_gib:.2f} GiB), {args.queries:,} queries, k={args.k}"
        )
        print(f"speed ratio oiv4/IndexFlat: {res['faiss']['seconds'] / res['oiv4']['seconds']:.2f}x")
        print(f"identical neighbour lists: {same:.4%}")


if __name__ == "__main__":
    main()
