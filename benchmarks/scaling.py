"""Scaling: `oiv4 fetch --executor dask` with 1 and 2 worker processes, against `--executor local`.

One workload -- the 2,000 photo-like originals of 2-12 MP that benchmarks/fetch_throughput.py uses, served
by the mirror in its own process (`MirrorProcess`) -- is fetched, MD5-verified, shrunk to 1024 px and stored
four times, each into a fresh root with the same plan:

  local x1   `fetch_set` on the local spawn process pool, 1 worker process
  dask  x1   `fetch_set` with ExecutorSettings(kind="dask"): a LocalCluster of 1 worker process, 1 thread
  local x2   the local pool, 2 worker processes
  dask  x2   a LocalCluster of 2 worker processes, 1 thread each

Every run includes its own start-up (the pool's spawn, or starting the LocalCluster), as a user sees it.
Each worker process decodes/encodes on one thread (`cpu_threads=1`), so a worker is one core's worth of
work and "images/s at 1 worker" is the per-core figure docs/cluster.md sizes clusters with. By default the
mirror answers at localhost speed, so the fetch is CPU-bound and the scaling ratio measures the executor,
not the network; `--latency/--bandwidth` model a distant Flickr instead.

Targets: dask x2 / dask x1 >= 1.7, and Dask's overhead over the local pool at equal parallelism <= 10 %.

    .venv/bin/python benchmarks/scaling.py                 # 2,000 images, ~15 min on 2 cores
    .venv/bin/python benchmarks/scaling.py --images 400    # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import psutil
import pyarrow.compute as pc

from fetch_throughput import bench_spec
from oiv4.contracts.transfer import TransferSettings
from oiv4.io.ledger import read_set
from oiv4.io.manifest import read_manifest
from oiv4.io.storage import Storage
from oiv4.run.executor import ExecutorSettings
from oiv4.run.fetch import fetch_set
from oiv4.stages.fetch import FETCH_TRANSFER, FetchSettings, HttpSettings
from oiv4.stages.metadata import MetadataSettings, fetch_metadata
from oiv4.stages.plan import PlanSettings, build_plan
from oiv4_mirror import MirrorProcess


@dataclass
class Run:
    executor: str
    workers: int
    images: int  # rows with a ledger row after the run
    missing: int  # planned rows without one (should be 0; printed loudly when not)
    ok: int
    seconds: float
    stored_mb: float
    downloaded_mb: float
    cores_ours: float  # CPU seconds per wall second of this run's processes (workers, scheduler, client, mirror)
    cores_machine: float  # the same for the whole machine: the difference is other load on the box

    @property
    def per_s(self) -> float:
        return self.images / self.seconds

    @property
    def per_cpu_s(self) -> float:
        """Images per CPU-second of our processes: the cost per image, whatever else loads the machine."""
        return self.per_s / self.cores_ours if self.cores_ours else 0.0


def fresh_root(template: Storage, dest: Path) -> Storage:
    shutil.rmtree(dest, ignore_errors=True)
    storage = Storage(dest)
    for rel in template.glob("plan/*"):
        storage.write_bytes(rel, template.read_bytes(rel))
    return storage


def our_cpu_seconds(mirror: psutil.Process) -> float:
    """This process, every child it has reaped (pool workers, Dask workers) and the mirror process."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    m = mirror.cpu_times()
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime + m.user + m.system


def machine_busy_seconds() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


def run_one(
    template: Storage, work: Path, executor: str, workers: int, settings: FetchSettings, mirror: psutil.Process
) -> Run:
    storage = fresh_root(template, work / f"{executor}-{workers}")
    cpu0, busy0 = our_cpu_seconds(mirror), machine_busy_seconds()
    t0 = time.perf_counter()
    summary = fetch_set(storage, "train", settings, ExecutorSettings(kind=executor, workers=workers))
    seconds = time.perf_counter() - t0
    # Workers are reaped when the pool/cluster closes, so their CPU time is in RUSAGE_CHILDREN by now.
    cores_ours = (our_cpu_seconds(mirror) - cpu0) / seconds
    cores_machine = (machine_busy_seconds() - busy0) / seconds
    if summary.remaining:
        # Not fatal for a throughput figure, but never silent: a correct run leaves none.
        print(f"  WARNING: {summary.remaining} planned rows have no ledger row after this run", flush=True)
    ledger = read_set(storage, "train")
    stored = pc.sum(ledger.column("stored_bytes")).as_py() or 0
    downloaded = pc.sum(ledger.column("bytes_downloaded")).as_py() or 0
    ok = summary.totals.get("ok", 0)
    run = Run(
        executor, workers, ledger.num_rows, summary.remaining, ok, seconds, stored / 1e6, downloaded / 1e6,
        cores_ours, cores_machine,
    )  # fmt: skip
    shutil.rmtree(storage.root, ignore_errors=True)  # keep /tmp small; the numbers are in `run`
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--megapixels", type=float, nargs=2, default=(2.0, 12.0))
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument(
        "--latency", type=float, default=0.0, help="seconds the mirror waits before each image (0: localhost)"
    )
    ap.add_argument("--bandwidth", type=float, default=0.0, help="MB/s per image response (0: unlimited)")
    ap.add_argument("--shard-rows", type=int, default=100, help="rows per shard (the unit both executors schedule)")
    ap.add_argument("--concurrency", type=int, default=16, help="downloads in flight per worker process")
    ap.add_argument(
        "--repeat", type=int, default=1, help="rounds of the four runs; each keeps its best (least disturbed)"
    )
    ap.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / "oiv4-bench-scaling"))
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    work = Path(args.work_dir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    # The same spec as fetch_throughput.py, so both benchmarks share one rendered universe.
    spec = bench_spec(args.images, tuple(args.megapixels), args.seed, args.latency, args.bandwidth)
    settings = FetchSettings(
        http=HttpSettings(concurrency=args.concurrency, per_host=args.concurrency),
        transfer=replace(FETCH_TRANSFER, allow_private_networks=True),
        cpu_threads=1,
    )

    print(
        f"mirror: {args.images:,} originals of {args.megapixels[0]:g}-{args.megapixels[1]:g} MP in its own process ..."
    )
    t0 = time.perf_counter()
    mirror = MirrorProcess(spec)
    print(f"  ready in {time.perf_counter() - t0:.0f} s at {mirror.base_url}", flush=True)
    runs: list[Run] = []
    try:
        template = Storage(work / "template")
        fetch_metadata(
            template,
            MetadataSettings(base_url=mirror.metadata_base_url, transfer=TransferSettings(allow_private_networks=True)),
        )
        build_plan(template, PlanSettings(train_size=args.images, shard_rows=args.shard_rows))
        rows = read_manifest(template, "train").to_pylist()
        originals = [mirror.universe.original_path(r["ImageID"]) for r in rows]
        mb_each = sum(p.stat().st_size for p in originals) / len(originals) / 1e6
        for p in originals:  # page cache: no run pays for the first disk read
            p.read_bytes()
        n_shards = math.ceil(len(rows) / args.shard_rows)
        print(f"  {len(rows):,} URLs in {n_shards} shards, {mb_each:.1f} MB per original on average", flush=True)
        # Interleaved, so a slow phase of the machine does not land on one executor only.
        for round_ in range(1, args.repeat + 1):
            for executor, workers in (("local", 1), ("dask", 1), ("local", 2), ("dask", 2)):
                print(f"round {round_}: {executor} x{workers} (load {os.getloadavg()[0]:.1f}) ...", flush=True)
                r = run_one(template, work, executor, workers, settings, psutil.Process(mirror.pid))
                print(
                    f"  {r.images:,} rows ({r.ok:,} ok) in {r.seconds:.1f} s = {r.per_s:.2f} images/s; "
                    f"cores busy: ours {r.cores_ours:.2f}, whole machine {r.cores_machine:.2f}",
                    flush=True,
                )
                runs.append(r)
    finally:
        mirror.stop()
        shutil.rmtree(work, ignore_errors=True)

    by: dict[tuple[str, int], Run] = {}
    for r in runs:  # best of the rounds: other load on the machine only ever slows a run down
        if (r.executor, r.workers) not in by or r.per_s > by[r.executor, r.workers].per_s:
            by[r.executor, r.workers] = r
    scaling = by["dask", 2].per_s / by["dask", 1].per_s
    overhead = {w: by["local", w].per_s / by["dask", w].per_s - 1 for w in (1, 2)}
    print()
    print(
        f"{args.images:,} originals ({mb_each:.1f} MB avg), shards of {args.shard_rows}, {os.cpu_count()} cores, "
        f"cpu_threads=1, {args.concurrency} downloads/worker; network: {args.latency:g} s latency, "
        f"{args.bandwidth:g} MB/s per response (0 = unlimited)"
    )
    print(f"best of {args.repeat} round(s); load average now {os.getloadavg()[0]:.1f}")
    print(
        f"{'executor':<10} {'workers':>7} {'rows':>6} {'seconds':>8} {'images/s':>9} {'per worker':>11}"
        f" {'cores ours':>11} {'cores machine':>14} {'img/CPU-s':>10}"
    )
    for r in by.values():
        print(
            f"{r.executor:<10} {r.workers:>7} {r.images:>6,} {r.seconds:>8.1f} {r.per_s:>9.2f} "
            f"{r.per_s / r.workers:>11.2f} {r.cores_ours:>11.2f} {r.cores_machine:>14.2f} {r.per_cpu_s:>10.1f}"
        )
    stored_kb = by["dask", 2].stored_mb * 1e3 / max(1, by["dask", 2].ok)
    print(f"stored JPEG: {stored_kb:.0f} KB per image on average")
    ok_scaling = scaling >= 1.7
    ok_overhead = max(overhead.values()) <= 0.10
    print(f"scaling dask x2 / dask x1 = {scaling:.2f}  (target >= 1.7: {'PASS' if ok_scaling else 'FAIL'})")
    for w, o in overhead.items():
        cpu = by["local", w].per_cpu_s / by["dask", w].per_cpu_s - 1
        print(
            f"dask overhead vs local at {w} worker(s) = {o * 100:+.1f} % wall time, {cpu * 100:+.1f} % CPU per image"
            "  (target <= 10 %)"
        )
    print(f"overhead target: {'PASS' if ok_overhead else 'FAIL'}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "args": vars(args),
                    "mb_per_original": mb_each,
                    "stored_kb_per_image": stored_kb,
                    "runs": [asdict(r) | {"per_s": r.per_s} for r in runs],
                    "scaling_dask2_over_dask1": scaling,
                    "dask_overhead_vs_local": overhead,
                },
                indent=2,
            )
        )
    return 0 if ok_scaling and ok_overhead else 1


if __name__ == "__main__":
    sys.exit(main())
