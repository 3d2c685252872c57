"""Fetch throughput: oiv4 vs img2dataset 1.47 vs the seed notebook's method, and the CPU ceiling.

The same URL list -- N photo-like originals of 2-12 MP served by the mirror in its own process -- is
downloaded, MD5-verified, shrunk to fit 1024 px and written as JPEG by:

  (a) oiv4          `fetch_set` on the local process pool (2 workers)
  (b) img2dataset   1.47 in its own venv under /tmp, equivalent options: 2 processes, resize_mode
                    keep_ratio_largest, resize_only_if_bigger, image_size 1024, md5 verify, quality 90
  (c) notebook      the seed notebook's code ported to Python 3: requests.get + Pool().map + thumbnail + save
  (d) CPU ceiling   the same MD5 + decode/shrink/encode as (a) on bytes already on this machine, 2 processes,
                    no HTTP and no writes: the most any fetcher could do with these cores

and prints images/s and the ratios. By default the mirror answers like a distant Flickr: 0.3 s before each
image and 4 MB/s per response (a 2 MB original takes ~0.8 s, which matches the notebook's own estimate of
"at least a full day" for 1.2M images). `--latency 0 --bandwidth 0` measures the localhost extreme, where
nothing waits on the network and every contestant is CPU-bound. `--rss-rows 100000` then fetches 100,000 rows (the same originals under
fresh ImageIDs) with oiv4 while sampling the workers' RSS, to show memory stays flat.

    .venv/bin/python benchmarks/fetch_throughput.py                      # 2,000 originals, (a)-(d)
    .venv/bin/python benchmarks/fetch_throughput.py --rss-rows 100000    # plus the memory run

The first run renders the originals (minutes; cached under /tmp by the mirror) and installs img2dataset
into /tmp/oiv4-bench-img2dataset (not into the project).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import hashlib
import json
import math
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import MANIFEST_SCHEMA
from oiv4.contracts.transfer import TransferSettings
from oiv4.io.manifest import read_manifest
from oiv4.io.storage import Storage
from oiv4.run.executor import ExecutorSettings
from oiv4.run.fetch import fetch_set
from oiv4.stages.fetch import FETCH_TRANSFER, FetchSettings, HttpSettings, TransformSettings
from oiv4.stages.fetch.transform import transform_image
from oiv4.stages.metadata import MetadataSettings, fetch_metadata
from oiv4.stages.plan import PlanSettings, build_plan
from oiv4_mirror import MirrorProcess, UniverseSpec

IMG2DATASET = "img2dataset==1.47.0"

NOTEBOOK = r'''
"""The seed notebook's download cell, ported to Python 3 (only the base64 call changed)."""
import base64, csv, hashlib, os, sys
from io import BytesIO
from multiprocessing import Pool

import requests
from PIL import Image

OUT = sys.argv[2]


def download(item):
    img_id, url, original_md5 = item
    resp = requests.get(url)

    img_data = resp.content
    md5 = base64.b64encode(hashlib.md5(img_data).digest()).decode().strip()

    if md5 != original_md5:
        return False

    image = Image.open(BytesIO(img_data))
    image.thumbnail([1024, 1024])

    img_prefix = img_id[:2]
    filename = "%s/%s/%s.jpg" % (OUT, img_prefix, img_id)
    image.save(filename)

    return True


if __name__ == "__main__":
    rows = list(csv.reader(open(sys.argv[1])))
    for i in range(256):
        os.makedirs("%s/%02x" % (OUT, i), exist_ok=True)
    pool = Pool(int(sys.argv[3]))  # the notebook's Pool(), i.e. one process per core, on a `workers`-core machine
    try:
        checks = pool.map(download, rows)
    finally:
        pool.close()
    print(sum(checks))
'''

IMG2DATASET_DRIVER = r"""
import json, sys
from img2dataset import download

args = json.loads(sys.argv[1])
download(**args)
"""


@dataclass
class Result:
    name: str
    images: int  # images stored
    seconds: float
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    cpu_seconds: float = 0.0  # user+sys of this process and every finished child (pool workers included)

    @property
    def per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def per_cpu_s(self) -> float:
        return self.images / self.cpu_seconds if self.cpu_seconds else 0.0


def cpu_used() -> float:
    """CPU seconds of this process plus all waited-for descendants (pool workers, subprocess trees).

    On a machine shared with other work, wall-clock images/s depends on how many threads each contestant
    runs (the scheduler shares cores per thread); images per CPU-second does not.
    """
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


# ---------------------------------------------------------------------------------------------------
# set-up


def bench_spec(
    n: int, megapixels: tuple[float, float], seed: int, latency: float = 0.0, bandwidth_mb: float = 0.0
) -> UniverseSpec:
    """Every row a healthy URL-set JPEG (throughput, not failure handling, is measured here).

    `latency` (s before each answer) and `bandwidth_mb` (MB/s per response) put Flickr at a distance; they
    change no byte, so both network profiles share one rendered universe.
    """
    return UniverseSpec(
        latency_seconds=latency,
        bytes_per_second=bandwidth_mb * 1e6,
        seed=seed,
        n_images=n,
        megapixels=megapixels,
        validation_fraction=0.0,
        test_fraction=0.0,
        boxable_fraction=0.0,
        misbehaviour_fraction=0.0,
        special_kind_fraction=0.0,  # the notebook's `image.save` cannot write RGBA/P as JPEG
        rotated_fraction=0.05,
        nan_rotation_fraction=0.0,
    )


def ensure_img2dataset(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if python.exists() and subprocess.run([python, "-c", "import img2dataset"], capture_output=True).returncode == 0:
        return python
    print(f"installing {IMG2DATASET} into {venv} (once) ...", flush=True)
    base = Path(sys.base_prefix) / "bin" / "python3"
    subprocess.run([base, "-m", "venv", "--clear", venv], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", IMG2DATASET], check=True)
    return python


def warm_page_cache(paths: list[Path]) -> None:
    """Read every original once so that no contestant pays for the first disk read."""
    for p in paths:
        p.read_bytes()


def count_jpegs(folder: Path) -> int:
    return sum(1 for _ in folder.rglob("*.jpg"))


# ---------------------------------------------------------------------------------------------------
# contestants


def run_oiv4(storage: Storage, workers: int, concurrency: int) -> Result:
    settings = FetchSettings(
        http=HttpSettings(concurrency=concurrency, per_host=concurrency),
        transfer=replace(FETCH_TRANSFER, allow_private_networks=True),
    )
    t0 = time.perf_counter()
    summary = fetch_set(storage, "train", settings, ExecutorSettings(workers=workers))
    dt = time.perf_counter() - t0
    return Result("oiv4", summary.outcomes.get("ok", 0), dt, f"{workers} processes x {concurrency} downloads")


def run_img2dataset(python: Path, rows: list[dict[str, Any]], out: Path, workers: int, threads: int) -> Result:
    table = pa.table(
        {
            "url": [r["OriginalURL"] for r in rows],
            "md5": [base64.b64decode(r["OriginalMD5"]).hex() for r in rows],  # img2dataset wants hex digests
        }
    )
    src = out.parent / "img2dataset-input.parquet"
    pq.write_table(table, src)
    args = {
        "url_list": str(src),
        "input_format": "parquet",
        "url_col": "url",
        "output_folder": str(out),
        "output_format": "files",
        "processes_count": workers,
        "thread_count": threads,
        "image_size": 1024,
        "resize_mode": "keep_ratio_largest",
        "resize_only_if_bigger": True,
        "encode_quality": 90,
        "encode_format": "jpg",
        "verify_hash": ["md5", "md5"],
        "compute_hash": "md5",  # must equal the verified hash (img2dataset then hashes once, like oiv4)
        "extract_exif": False,
        "number_sample_per_shard": math.ceil(len(rows) / workers),  # one shard per process, like oiv4 here
        "timeout": 60,
        "retries": 0,
        "disallowed_header_directives": [],
        "distributor": "multiprocessing",
    }
    t0 = time.perf_counter()
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}  # no network check at import
    proc = subprocess.run([python, "-c", IMG2DATASET_DRIVER, json.dumps(args)], capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"img2dataset failed:\n{proc.stderr[-3000:]}")
    return Result("img2dataset 1.47", count_jpegs(out), dt, f"{workers} processes x {threads} threads")


def run_notebook(rows: list[dict[str, Any]], out: Path, workers: int) -> Result:
    src = out.parent / "notebook-input.csv"
    with open(src, "w", newline="") as fh:
        csv.writer(fh).writerows([(r["ImageID"], r["OriginalURL"], r["OriginalMD5"]) for r in rows])
    script = out.parent / "notebook.py"
    script.write_text(NOTEBOOK)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, script, src, out, str(workers)], capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"notebook port failed:\n{proc.stderr[-3000:]}")
    return Result("notebook (requests + Pool.map)", count_jpegs(out), dt, f"Pool({workers}), default JPEG quality")


def _ceiling_one(item: tuple[str, float, str]) -> int:
    path, rotation, md5 = item
    data = Path(path).read_bytes()
    assert base64.b64encode(hashlib.md5(data).digest()).decode() == md5
    transform_image(data, rotation, TransformSettings())
    return 1


def run_ceiling(items: list[tuple[str, float, str]], workers: int) -> Result:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        pool.map(_ceiling_one, items[: 2 * workers])  # start-up and imports are not what we measure
        t0 = time.perf_counter()
        n = sum(pool.imap_unordered(_ceiling_one, items, chunksize=4))
        dt = time.perf_counter() - t0
    return Result("CPU ceiling (no HTTP, no writes)", n, dt, f"{workers} processes, MD5 + decode/shrink/encode")


# ---------------------------------------------------------------------------------------------------
# memory over a long run


def write_long_manifest(storage: Storage, rows: list[dict[str, Any]], n: int) -> None:
    """`extended_targets` = n rows reusing the originals' URLs under fresh ImageIDs (plan contract)."""
    cols: dict[str, list[Any]] = {f.name: [] for f in MANIFEST_SCHEMA}
    for i in range(n):
        src = rows[i % len(rows)]
        for c in cols:
            cols[c].append(src.get(c))
        cols["ImageID"][-1] = hashlib.md5(f"oiv4-rss-{i}".encode()).hexdigest()[:16]
        cols["row"][-1] = i
    storage.write_bytes(LAYOUT.plan("extended_targets"), _parquet(pa.table(cols, schema=MANIFEST_SCHEMA)))
    summary = json.loads(storage.read_bytes(LAYOUT.plan_summary()))
    summary["counts"]["extended_targets"] = n
    storage.write_bytes(LAYOUT.plan_summary(), json.dumps(summary).encode())


def _parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=10_000)
    return sink.getvalue().to_pybytes()


def run_rss(storage: Storage, workers: int, concurrency: int, exclude: set[int], every: float = 2.0) -> Result:
    """Fetch the long manifest while sampling the RSS of every worker process."""
    me = psutil.Process()
    samples: list[tuple[float, int, list[int]]] = []
    done = {"n": 0}
    stop = threading.Event()

    def sample() -> None:
        t0 = time.perf_counter()
        while not stop.wait(every):
            rss = []
            for child in me.children(recursive=True):
                if child.pid in exclude:
                    continue
                with contextlib.suppress(psutil.Error):  # a process that just ended
                    rss.append(child.memory_info().rss)
            samples.append((time.perf_counter() - t0, done["n"], sorted(rss, reverse=True)))

    def progress(p: Any) -> None:
        done["n"] = p.done

    settings = FetchSettings(
        http=HttpSettings(concurrency=concurrency, per_host=concurrency),
        transfer=replace(FETCH_TRANSFER, allow_private_networks=True),
    )
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    summary = fetch_set(
        storage, "extended_targets", settings, ExecutorSettings(workers=workers), progress=progress, progress_interval=2
    )
    dt = time.perf_counter() - t0
    stop.set()
    sampler.join()
    # The two largest children are the pool workers (the resource tracker is tiny).
    worker_rss = [s[2][:workers] for s in samples if len(s[2]) >= workers]
    per_sample_max = [max(r) for r in worker_rss] or [0]
    quarter = max(1, len(per_sample_max) // 4)
    extra = {
        "samples": len(samples),
        "max_worker_rss_mb": max(per_sample_max) / 2**20,
        "first_quarter_max_mb": max(per_sample_max[:quarter]) / 2**20,
        "last_quarter_max_mb": max(per_sample_max[-quarter:]) / 2**20,
        "median_worker_rss_mb": sorted(per_sample_max)[len(per_sample_max) // 2] / 2**20,
        "trace": [(round(t), n, [round(x / 2**20) for x in r]) for t, n, r in samples[:: max(1, len(samples) // 40)]],
    }
    return Result("oiv4 long run (RSS)", summary.outcomes.get("ok", 0), dt, f"{summary.done:,} rows", extra)


# ---------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--megapixels", type=float, nargs=2, default=(2.0, 12.0))
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument(
        "--latency", type=float, default=0.3, help="seconds the mirror waits before each image answer (0: localhost)"
    )
    ap.add_argument("--bandwidth", type=float, default=4.0, help="MB/s per image response (0: unlimited)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=32, help="oiv4 downloads / img2dataset threads per process")
    ap.add_argument("--rss-rows", type=int, default=0, help="also fetch this many rows while sampling RSS")
    ap.add_argument("--skip", nargs="*", default=[], choices=["oiv4", "img2dataset", "notebook", "ceiling"])
    ap.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / "oiv4-bench-fetch"))
    ap.add_argument("--img2dataset-venv", default=str(Path(tempfile.gettempdir()) / "oiv4-bench-img2dataset"))
    ap.add_argument("--json", help="write the results here as JSON")
    args = ap.parse_args()

    work = Path(args.work_dir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    i2d_python = None if "img2dataset" in args.skip else ensure_img2dataset(Path(args.img2dataset_venv))

    spec = bench_spec(args.images, tuple(args.megapixels), args.seed, args.latency, args.bandwidth)
    print(
        f"mirror: rendering/serving {args.images:,} originals of {args.megapixels[0]:g}-{args.megapixels[1]:g} MP ..."
    )
    t0 = time.perf_counter()
    mirror = MirrorProcess(spec)
    print(f"  ready in {time.perf_counter() - t0:.0f} s at {mirror.base_url}", flush=True)
    results: list[Result] = []
    try:
        storage = Storage(str(work / "oiv4"))
        fetch_metadata(
            storage,
            MetadataSettings(base_url=mirror.metadata_base_url, transfer=TransferSettings(allow_private_networks=True)),
        )
        build_plan(storage, PlanSettings(train_size=args.images, shard_rows=math.ceil(args.images / args.workers)))
        rows = read_manifest(storage, "train").to_pylist()
        universe = mirror.universe
        originals = [universe.original_path(r["ImageID"]) for r in rows]
        total_mb = sum(p.stat().st_size for p in originals) / 1e6
        mp = sum(universe.info(r["ImageID"]).width * universe.info(r["ImageID"]).height for r in rows) / len(rows) / 1e6
        print(f"  {len(rows):,} URLs, {total_mb:,.0f} MB of originals, {mp:.1f} MP on average", flush=True)
        warm_page_cache(originals)

        steps: list[tuple[str, Callable[[], Result]]] = [
            ("ceiling", lambda: run_ceiling(
                [(str(p), r["Rotation"], r["OriginalMD5"]) for p, r in zip(originals, rows, strict=True)], args.workers
            )),
            ("oiv4", lambda: run_oiv4(storage, args.workers, args.concurrency)),
            ("img2dataset", lambda: run_img2dataset(
                i2d_python, rows, work / "img2dataset" / "out", args.workers, args.concurrency
            )),
            ("notebook", lambda: run_notebook(rows, work / "notebook" / "out", args.workers)),
        ]  # fmt: skip
        for name, step in steps:
            if name in args.skip:
                continue
            print(f"running {name} ...", flush=True)
            (work / name).mkdir(exist_ok=True)
            load0, cpu0 = os.getloadavg()[0], cpu_used()
            r = step()
            r.cpu_seconds = cpu_used() - cpu0
            # Other work on the machine skews every figure: keep the 1-minute load average beside it.
            r.extra["load"] = (round(load0, 1), round(os.getloadavg()[0], 1))
            print(
                f"  {r.name}: {r.images:,} images in {r.seconds:.1f} s = {r.per_s:.1f} images/s, "
                f"{r.cpu_seconds:.0f} CPU-s = {r.per_cpu_s:.2f} images/CPU-s",
                flush=True,
            )
            results.append(r)

        if args.rss_rows:
            write_long_manifest(storage, rows, args.rss_rows)
            print(f"running oiv4 over {args.rss_rows:,} rows, sampling worker RSS ...", flush=True)
            results.append(run_rss(storage, args.workers, args.concurrency, exclude={mirror.pid}))
            shutil.rmtree(storage.local_path("extended_targets"), ignore_errors=True)
    finally:
        mirror.stop()

    report(results, args, total_mb / len(rows), mp)


def report(results: list[Result], args: argparse.Namespace, mb_each: float, mp: float) -> None:
    by = {r.name.split()[0]: r for r in results}
    print()
    print(f"{args.images:,} originals, {args.megapixels[0]:g}-{args.megapixels[1]:g} MP ({mp:.1f} MP, {mb_each:.1f} MB avg), "
          f"{args.workers} processes, {os.cpu_count()} cores; network: {args.latency:g} s latency, "
          f"{args.bandwidth:g} MB/s per response (0 = unlimited)")  # fmt: skip
    print(f"{'contestant':<36} {'images':>7} {'seconds':>8} {'images/s':>9} {'CPU-s':>7} {'img/CPU-s':>9}  notes")
    for r in results:
        load = r.extra.get("load")
        print(
            f"{r.name:<36} {r.images:>7,} {r.seconds:>8.1f} {r.per_s:>9.2f} {r.cpu_seconds:>7.0f} {r.per_cpu_s:>9.2f}  "
            f"{r.note}" + (f"; load {load[0]}->{load[1]}" if load else "")
        )
    oiv4 = by.get("oiv4")
    if oiv4:
        print()
        print("ratios: images/s (wall clock) | images per CPU-second (robust to other load on the machine)")
        for key, label, target in (("img2dataset", "img2dataset", 2.0), ("notebook", "the notebook", 3.0)):
            if key in by:
                wall, cpu = oiv4.per_s / by[key].per_s, oiv4.per_cpu_s / by[key].per_cpu_s
                verdict = "met" if wall >= target else "MISSED"
                print(
                    f"oiv4 / {label:<14} = {wall:5.2f}x | {cpu:5.2f}x  (target >= {target:g}x in images/s: {verdict})"
                )
        if "CPU" in by:
            wall, cpu = oiv4.per_s / by["CPU"].per_s, oiv4.per_cpu_s / by["CPU"].per_cpu_s
            verdict = "met" if wall >= 0.8 else "MISSED"
            print(
                f"oiv4 / CPU ceiling    = {100 * wall:5.1f}% | {100 * cpu:5.1f}%  (target >= 80% in images/s: {verdict})"
            )
    long = next((r for r in results if "RSS" in r.name), None)
    if long:
        e = long.extra
        print(f"\nlong run: {long.note} in {long.seconds:,.0f} s ({long.per_s:.1f} images/s); worker RSS over "
              f"{e['samples']} samples: median {e['median_worker_rss_mb']:.0f} MB, max {e['max_worker_rss_mb']:.0f} MB "
              f"(first quarter max {e['first_quarter_max_mb']:.0f} MB, last quarter max {e['last_quarter_max_mb']:.0f} MB)")  # fmt: skip
        print("trace (s, rows done, worker RSS MB):", e["trace"])
    if args.json:
        rows = [{**r.__dict__, "per_s": r.per_s, "per_cpu_s": r.per_cpu_s} for r in results]
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
