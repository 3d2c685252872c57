"""`oiv4 hash` on a stored archive set against the decode ceiling (a bare `phash_stored` loop).

    PYTHONPATH=src .venv/bin/python benchmarks/hash_throughput.py --images 600

Builds a targets set from the mirror's CVDF archives (converted to zips, <= 1024 px JPEGs, no phash yet), then
runs `hash_set` over it (threads=1, one worker process: per-CPU figures) and, over the same zip members read
with `zipfile`, a bare loop of `phash_stored`: the decode-and-hash work with nothing around it (no ledger, no
executor). Prints images per CPU-second for both and their ratio (1.0 = oiv4 hash at the decode ceiling).
CPU time is this process's plus its children's, so the worker pool's decode counts; wall time is printed too.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
import zipfile
from pathlib import Path


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--threads", type=int, default=1, help="oiv4 hash decode threads (1: CPU per image)")
    args = parser.parse_args()

    from oiv4.cli.demo import DemoSettings, demo_build_settings
    from oiv4.contracts.schema import ImageSet
    from oiv4.io.fingerprint import phash_stored
    from oiv4.io.storage import Storage
    from oiv4.run.build import run_build
    from oiv4.run.executor import ExecutorSettings
    from oiv4.run.hash import hash_set
    from oiv4.stages.hash import HashSettings
    from oiv4_mirror import UniverseSpec, start_mirror

    # Every row a boxable train row: the whole universe is the targets set (1.2-2 MP originals -> 1024 px members).
    spec = UniverseSpec(
        seed=5, n_images=args.images, megapixels=(1.2, 2.0), validation_fraction=0.0, test_fraction=0.0,
        boxable_fraction=1.0,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, start_mirror(spec) as mirror:
        storage = Storage(str(Path(tmp) / "root"))
        settings = demo_build_settings(DemoSettings(train_size=0, workers=1), mirror.base_url)
        from dataclasses import replace

        settings = replace(settings, sets=(ImageSet.targets,), verify=False, hash=False, dedup=False, report=False)
        t0 = time.perf_counter()
        run_build(storage, settings)
        print(f"built targets ({args.images} images) from archives in {time.perf_counter() - t0:.1f} s")

        w0, c0 = time.perf_counter(), _cpu()
        summary = hash_set(
            storage, "targets", HashSettings(threads=args.threads), ExecutorSettings(kind="local", workers=1)
        )
        oiv4_wall, oiv4_cpu = time.perf_counter() - w0, _cpu() - c0

        zips = sorted((Path(tmp) / "root").rglob("*.zip"))
        w0, c0 = time.perf_counter(), _cpu()
        bare = 0
        for path in zips:
            with zipfile.ZipFile(path) as zf:
                for name in zf.namelist():
                    if name.endswith(".jpg"):
                        phash_stored(zf.read(name))
                        bare += 1
        bare_wall, bare_cpu = time.perf_counter() - w0, _cpu() - c0
    assert summary.hashed == bare, (summary.hashed, bare)
    ours, ceiling = summary.hashed / oiv4_cpu, bare / bare_cpu
    print(f"oiv4 hash: {summary.hashed} images, CPU {oiv4_cpu:.2f} s, wall {oiv4_wall:.2f} s: {ours:.0f} images/CPU-s")
    print(
        f"bare phash_stored loop: {bare} images, CPU {bare_cpu:.2f} s, wall {bare_wall:.2f} s: {ceiling:.0f} images/CPU-s"
    )
    print(f"ratio oiv4 / ceiling: {ours / ceiling:.2f}")


if __name__ == "__main__":
    main()
