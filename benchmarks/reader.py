"""Reader benchmark: open a 1M-row set and read random images by ID, oiv4 vs the naive way.

Data (generated once into --workdir, reused after): a `targets` set with a 1,000,000-row plan and ledger
(100 shard files, like a real run), whose first --images rows are real small JPEGs in one CVDF-style
`train_0.zip` (members `train_0/<id>.jpg`), plus a 110,000-member zip (the size of a real
`train_<x>.zip`) to time indexing a big central directory.

Compared, in one run:
- open: `oiv4.open(root)["targets"]` + `len()` vs pandas reading the ledger into an ImageID-indexed frame
- random read by ID from the zip: oiv4 (cached central-directory index + one pread) vs
  `zipfile.ZipFile(path).read(member)` opened per read (what a notebook does) and vs a kept-open ZipFile
- indexing a 110k-member zip: `oiv4.read.dataset.index_zip` vs `zipfile.ZipFile(path)`

Usage: .venv/bin/python benchmarks/reader.py [--rows 1000000] [--images 4000] [--reads 2000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import time
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

import oiv4
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import COLUMNS, LEDGER_SCHEMA
from oiv4.io.containers import BlobReader, index_zip
from oiv4.io.storage import Storage

SHARD_ROWS = 10_000
BIG_ZIP_MEMBERS = 110_000


def _jpeg(i: int) -> bytes:
    rng = np.random.default_rng(i)
    w, h = int(rng.integers(48, 160)), int(rng.integers(48, 160))
    base = rng.integers(0, 255, size=3)
    grad = np.linspace(0, 1, w)[None, :, None] * rng.integers(-120, 120, size=3)
    arr = np.clip(base + grad + rng.normal(0, 12, size=(h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def generate(root: Path, rows: int, images: int) -> list[str]:
    """Write plan, ledger and zips under `root` (skipped when a previous run left them); returns the zip's IDs."""
    stamp = root / f".generated-v2-{rows}-{images}"
    ids_file = root / "ids.txt"
    root.mkdir(parents=True, exist_ok=True)
    if stamp.exists():
        return ids_file.read_text().split()[:images]
    storage = Storage(str(root))
    rng = np.random.default_rng(0)
    keys = rng.choice(np.iinfo(np.int64).max, size=rows, replace=False)
    ids = [f"{int(k):016x}" for k in keys]
    ids_file.write_text("\n".join(ids[:images]))
    print(f"generating {rows:,} plan/ledger rows and {images:,} JPEGs in {root} ...", flush=True)

    plan_cols = {c: pa.nulls(rows, pa.string()) for c in COLUMNS}
    plan_cols["ImageID"] = pa.array(ids)
    plan_cols["Subset"] = pa.array(["train"] * rows)
    plan_cols["OriginalURL"] = pa.array([f"https://farm1.staticflickr.com/1/{i}_o.jpg" for i in ids])
    plan_cols["OriginalSize"] = pa.array(np.full(rows, 123456), pa.int64())
    plan_cols["Rotation"] = pa.array(np.zeros(rows), pa.float64())
    plan = pa.table({**plan_cols, "row": pa.array(np.arange(rows), pa.int64())})
    storage.write_bytes(LAYOUT.plan("targets"), _parquet_bytes(plan))

    blobs = [_jpeg(i) for i in range(images)]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for image_id, data in zip(ids[:images], blobs, strict=True):
            zf.writestr(f"train_0/{image_id}.jpg", data)
    storage.write_bytes(LAYOUT.archive_zip("targets", "train_0"), buf.getvalue())

    sizes = np.full(rows, 50_000, dtype=np.int64)
    sizes[:images] = [len(b) for b in blobs]
    stems = [f"train_{i[0]}" if r >= images else "train_0" for r, i in enumerate(ids)]
    locations = [f"targets/images/{s}.zip:{s}/{i}.jpg" for s, i in zip(stems, ids, strict=True)]
    t0 = np.datetime64("2024-05-01T12:00:00", "ms")
    for shard, start in enumerate(range(0, rows, SHARD_ROWS)):
        sl = slice(start, min(start + SHARD_ROWS, rows))
        n = sl.stop - sl.start
        table = pa.table(
            {
                "image_id": pa.array(ids[sl]),
                "set": pa.array(["targets"] * n),
                "shard": pa.array(np.full(n, shard), pa.int32()),
                "row": pa.array(np.arange(sl.start, sl.stop), pa.int64()),
                "outcome": pa.array(["ok"] * n),
                "reason": pa.array(["stored"] * n),
                "attempts": pa.array(np.ones(n), pa.int16()),
                "source": pa.array(["archive:train_0.tar.gz"] * n),
                "url": pa.nulls(n, pa.string()),
                "bytes_downloaded": pa.array(sizes[sl]),
                "original_width": pa.nulls(n, pa.int32()),
                "original_height": pa.nulls(n, pa.int32()),
                "stored_width": pa.array(np.full(n, 1024), pa.int32()),
                "stored_height": pa.array(np.full(n, 768), pa.int32()),
                "stored_bytes": pa.array(sizes[sl]),
                "location": pa.array(locations[sl]),
                "started_at": pa.array(t0 + np.arange(sl.start, sl.stop) * 10, pa.timestamp("ms", tz="UTC")),
                "elapsed_s": pa.array(np.full(n, 0.01)),
            },
            schema=LEDGER_SCHEMA,
        )
        storage.write_bytes(LAYOUT.ledger_shard("targets", shard), _parquet_bytes(table))

    # A root holding only the zip's images, so deep verify times reading + decoding, not the missing rows.
    deep = Storage(str(root / "deep"))
    deep.write_bytes(LAYOUT.plan("targets"), _parquet_bytes(plan.slice(0, images)))
    deep.write_bytes(LAYOUT.archive_zip("targets", "train_0"), buf.getvalue())
    first = pq.read_table(root / LAYOUT.ledger_shard("targets", 0)).slice(0, images)
    deep.write_bytes(LAYOUT.ledger_shard("targets", 0), _parquet_bytes(first))

    big = root / "big_train_x.zip"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_STORED) as zf:
        for k in range(BIG_ZIP_MEMBERS):
            zf.writestr(f"train_x/{k:016x}.jpg", blobs[k % len(blobs)])
    stamp.touch()
    return ids[:images]


def _best(fn, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def bench_open(root: Path) -> tuple[float, float, float]:
    def ours() -> None:
        s = oiv4.open(root)["targets"]
        assert len(s) > 0

    def ours_and_read() -> None:
        s = oiv4.open(root)["targets"]
        s.read_bytes(s.image_id_at(0))  # builds the ID index and indexes the zip's central directory

    def pandas_baseline() -> None:
        import pandas as pd

        frame = pd.read_parquet(root / "ledger" / "targets").set_index("image_id")
        assert len(frame) > 0

    return _best(ours), _best(pandas_baseline), _best(ours_and_read)


def bench_reads(root: Path, ids: list[str], reads: int) -> dict[str, list[float]]:
    """Per-read latencies of each method over the same random IDs, each in its own loop."""
    rng = random.Random(1)
    sample = [rng.choice(ids) for _ in range(reads)]
    zpath = root / LAYOUT.archive_zip("targets", "train_0")
    s = oiv4.open(root)["targets"]
    s.read_bytes(sample[0])  # warm: ID index built, central directory indexed, handle open
    kept = zipfile.ZipFile(zpath)

    def per_read(image_id: str) -> bytes:
        with zipfile.ZipFile(zpath) as zf:
            return zf.read(f"train_0/{image_id}.jpg")

    methods = {
        "oiv4": s.read_bytes,
        "zipfile per read": per_read,
        "zipfile kept open": lambda image_id: kept.read(f"train_0/{image_id}.jpg"),
    }
    out: dict[str, list[float]] = {}
    for name, fn in methods.items():
        times = []
        for image_id in sample:
            t = time.perf_counter()
            fn(image_id)
            times.append(time.perf_counter() - t)
        out[name] = times
    assert all(s.read_bytes(i) == kept.read(f"train_0/{i}.jpg") for i in sample[:50])
    kept.close()
    return out


def bench_cold_open(root: Path) -> tuple[float, float]:
    """(imports, open + len + one read) in a fresh interpreter: what a user's first call costs."""
    import subprocess
    import sys

    code = (
        "import time; t = time.perf_counter(); import oiv4, oiv4.read.dataset; t1 = time.perf_counter(); "
        f"s = oiv4.open({str(root)!r})['targets']; len(s); s.read_bytes(s.image_id_at(0)); "
        "print(t1 - t, time.perf_counter() - t1)"
    )
    runs = [
        tuple(
            map(
                float,
                subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(),
            )
        )
        for _ in range(3)
    ]
    return min(r[0] for r in runs), min(r[1] for r in runs)


def bench_index(root: Path) -> tuple[float, float]:
    big = root / "big_train_x.zip"
    blobs = BlobReader(Storage(str(root)))
    size = big.stat().st_size

    def ours() -> None:
        assert len(index_zip(lambda o, n: blobs.read_at(big.name, o, n), size, big.name)) == BIG_ZIP_MEMBERS

    def baseline() -> None:
        with zipfile.ZipFile(big) as zf:
            assert len(zf.infolist()) == BIG_ZIP_MEMBERS

    return _best(ours), _best(baseline)


def bench_deep_verify(root: Path, images: int) -> tuple[float, float]:
    """Seconds to CRC-check and decode every image of the real zip: oiv4 verify --deep vs testzip + Pillow."""
    from oiv4.stages.verify import VerifySettings, verify

    t = time.perf_counter()
    report = verify(root / "deep", VerifySettings(deep=True, workers=4))
    ours = time.perf_counter() - t
    assert report.ok and report.sets[0].intact == images

    t = time.perf_counter()
    with zipfile.ZipFile(root / LAYOUT.archive_zip("targets", "train_0")) as zf:
        assert zf.testzip() is None
        for name in zf.namelist():
            Image.open(io.BytesIO(zf.read(name))).load()
    naive = time.perf_counter() - t
    return ours, naive


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--images", type=int, default=4_000)
    ap.add_argument("--reads", type=int, default=2_000)
    ap.add_argument("--workdir", default="/tmp/oiv4-bench-reader")
    args = ap.parse_args()
    root = Path(args.workdir)
    ids = generate(root, args.rows, args.images)

    t_ours, t_pandas, t_first = bench_open(root)
    print(f"\nopen a {args.rows:,}-row set (best of 5)")
    print(f"  oiv4.open(root)['targets'] + len():        {t_ours * 1000:8.1f} ms")
    print(f"  pandas read_parquet + set_index(image_id): {t_pandas * 1000:8.1f} ms   ratio {t_pandas / t_ours:.1f}x")
    print(f"  open + first read (ID index + zip index):  {t_first * 1000:8.1f} ms")
    t_imp, t_cold = bench_cold_open(root)
    print(f"  fresh interpreter: open + first read        {t_cold * 1000:8.1f} ms   (+ {t_imp * 1000:.0f} ms imports)")

    res = bench_reads(root, ids, args.reads)
    print(f"\nrandom read by ImageID from a {args.images:,}-member zip ({args.reads:,} reads)")
    med = {k: statistics.median(v) for k, v in res.items()}
    for name, vals in res.items():
        p99 = sorted(vals)[int(len(vals) * 0.99)]
        ratio = "" if name == "oiv4" else f"   oiv4 is {med[name] / med['oiv4']:.1f}x faster"
        print(f"  {name:18s} median {med[name] * 1e3:7.3f} ms   p99 {p99 * 1e3:7.3f} ms{ratio}")

    t_idx, t_zf = bench_index(root)
    print(f"\nindex a {BIG_ZIP_MEMBERS:,}-member zip's central directory (best of 5)")
    print(f"  oiv4.read.dataset.index_zip: {t_idx * 1000:7.1f} ms")
    print(f"  zipfile.ZipFile:       {t_zf * 1000:7.1f} ms   ratio {t_zf / t_idx:.1f}x")

    ours, naive = bench_deep_verify(root, args.images)
    print(f"\ndeep check of {args.images:,} images in a zip (CRC-32 + full JPEG decode)")
    print(f"  oiv4 verify --deep (4 threads):  {ours:6.2f} s")
    print(f"  zipfile.testzip + Pillow decode: {naive:6.2f} s   ratio {naive / ours:.1f}x")


if __name__ == "__main__":
    main()
