"""Checksum throughput on this machine: xxh3-128 (xxhash), BLAKE3 (blake3) and SHA-256 (hashlib).

Sizes: stored JPEGs of 100-400 KB (what fetch writes per image) and a 64 MiB archive member / zip stream.
Prints MB/s per algorithm and size (best of 5, single thread, CPU time).

    .venv/bin/python benchmarks/checksum_speed.py
"""

from __future__ import annotations

import hashlib
import os
import time

import xxhash

ALGOS = {
    "xxh3_128": lambda b: xxhash.xxh3_128(b).hexdigest(),
    "sha256": lambda b: hashlib.sha256(b).hexdigest(),
}
try:  # not a project dependency (measured, not chosen): `pip install blake3` to include it
    import blake3

    ALGOS["blake3"] = lambda b: blake3.blake3(b).hexdigest()  # single-threaded (max_threads default 1)
except ImportError:
    print("blake3 not installed: skipped")


def main() -> None:
    sizes = {"100 KB": 100_000, "250 KB": 250_000, "400 KB": 400_000, "64 MiB": 64 << 20}
    print(f"{'size':>8} " + " ".join(f"{a:>12}" for a in ALGOS) + "   (MB/s, CPU time, best of 5)")
    for label, size in sizes.items():
        data = os.urandom(size)
        reps = max(1, (256 << 20) // size)
        row = []
        for fn in ALGOS.values():
            best = float("inf")
            for _ in range(5):
                t0 = time.process_time()
                for _ in range(reps):
                    fn(data)
                best = min(best, time.process_time() - t0)
            row.append(size * reps / best / 1e6)
        print(f"{label:>8} " + " ".join(f"{v:12.0f}" for v in row))


if __name__ == "__main__":
    main()
