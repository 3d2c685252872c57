"""Dedup at OpenImages scale, and the fingerprint's cost beside the fetch transform's.

    PYTHONPATH=src .venv/bin/python benchmarks/dedup_scale.py index --n 9180000 [--threshold 8]
    PYTHONPATH=src .venv/bin/python benchmarks/dedup_scale.py index --n 1000000 --contender numpy
    PYTHONPATH=src .venv/bin/python benchmarks/dedup_scale.py index --n 9180000 --sample-chunks 1
    PYTHONPATH=src .venv/bin/python benchmarks/dedup_scale.py fingerprint --photos 24
    PYTHONPATH=src .venv/bin/python benchmarks/dedup_scale.py hashes --photos 60

`index`: N uniform random 64-bit hashes split over the four sets in their real proportions, plus 1.5% planted
near-duplicate partners (distance 0..threshold, a tenth of them stored at a quarter turn); runs
`find_duplicates` (contender `oiv4`: both searches, unrotated and rotated), or one unrotated pass of the
numpy multi-index hashing (`numpy`) or of faiss's IndexBinaryMultiHash (`faiss`), and prints wall time, CPU
time, peak RSS and the recall of the planted pairs. Uniform hashes are the worst case for a bucketed index (real photo hashes
cluster, but a bucket index pays for *occupancy*, which uniform keys maximise for a given N).

`fingerprint`: renders photo-like originals of 2-12 MP (the mirror's renderer), runs the fetch transform
(decode, shrink to 1024, rotate, JPEG q90) and the fingerprint on the shrunk picture the transform holds, and
prints CPU ms per image for both and their ratio.

`hashes`: the planted corpus (oiv4_mirror.duplicates) under the DCT sign hash, classic pHash and dHash: the
distance of every copy to its original and of the closest hard negative (the "Which hash" table).
"""

from __future__ import annotations

import argparse
import io
import resource
import time

import numpy as np
import pyarrow as pa

#: Real set sizes (facts file): the share of each set in 9.18M hashes.
SET_SIZES = {"targets": 1_743_042, "validation": 41_620, "train": 1_200_000, "extended_targets": 6_068_177}


def hex_ids(n: int) -> pa.Array:
    """ImageIDs 0..n-1 as 16-hex-digit strings, built in numpy (a list of 9M Python strings costs ~1 GB)."""
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    raw = np.arange(n, dtype=">u8").view(np.uint8).reshape(n, 8)
    text = np.empty((n, 16), dtype=np.uint8)
    text[:, 0::2], text[:, 1::2] = digits[raw >> 4], digits[raw & 15]
    offsets = np.arange(0, 16 * (n + 1), 16, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(text.tobytes())])


def synthetic(n: int, k: int, dup_rate: float, seed: int = 0) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """(table, planted_a, planted_b): n hashes, of which round(n*dup_rate) are planted partners of others."""
    from oiv4.io.fingerprint import rotations

    rng = np.random.default_rng(seed)
    n_dup = round(n * dup_rate)
    base = rng.integers(0, 2**63, n - n_dup, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n - n_dup).astype(
        np.uint64
    )
    src = rng.choice(n - n_dup, n_dup, replace=False)
    flips = np.zeros(n_dup, dtype=np.uint64)
    dist = rng.integers(0, k + 1, n_dup)
    for d in range(1, k + 1):
        sel = np.flatnonzero(dist == d)
        bits = np.argsort(rng.random((len(sel), 64)), axis=1)[:, :d].astype(np.uint64)
        flips[sel] = np.bitwise_or.reduce(np.uint64(1) << bits, axis=1)
    partners = base[src] ^ flips
    turned = rng.random(n_dup) < 0.1
    partners[turned] = rotations(partners[turned])[1]
    hashes = np.concatenate([base, partners])
    shares = np.array(list(SET_SIZES.values()), dtype=np.float64)
    set_codes = rng.choice(len(SET_SIZES), n, p=shares / shares.sum()).astype(np.int32)
    sets = pa.DictionaryArray.from_arrays(pa.array(set_codes), pa.array(list(SET_SIZES))).cast(pa.string())
    table = pa.table({"set": sets, "image_id": hex_ids(n), "phash": pa.array(hashes, pa.uint64())})
    return table, src.astype(np.int64), np.arange(n - n_dup, n, dtype=np.int64)


def faiss_pairs(hashes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Contender (not a project dependency: `pip install faiss-cpu==1.15.1` to run it): faiss's
    IndexBinaryMultiHash with the same 3x21-bit pigeonhole and nflip = k // 3, exact, unrotated only."""
    import faiss

    faiss.omp_set_num_threads(1)  # compare CPU per probe with the single-threaded numpy pass
    codes = np.ascontiguousarray(hashes.astype(">u8").view(np.uint8).reshape(-1, 8))
    index = faiss.IndexBinaryMultiHash(64, 3, 21)
    index.nflip = k // 3
    index.add(codes)
    out_i, out_j = [], []
    for lo in range(0, len(codes), 1 << 20):
        lims, _, ids = index.range_search(codes[lo : lo + (1 << 20)], k + 1)
        q = lo + np.repeat(np.arange(len(lims) - 1, dtype=np.int64), np.diff(lims).astype(np.int64))
        keep = ids > q
        out_i.append(q[keep])
        out_j.append(ids[keep])
    return np.concatenate(out_i), np.concatenate(out_j)


def bench_index(args: argparse.Namespace) -> None:
    from oiv4.stages.dedup import find_duplicates

    t0 = time.perf_counter()
    table, a, b = synthetic(args.n, args.threshold, args.dup_rate)
    print(f"synthetic {args.n:,} hashes ({len(a):,} planted partners): {time.perf_counter() - t0:.1f} s")
    w0, c0 = time.perf_counter(), time.process_time()
    if args.sample_chunks:
        sample_index(table, args)
        return
    if args.contender == "oiv4":
        pairs = find_duplicates(table, args.threshold, args.threads)
        ids = {int(x, 16) for x in pairs["id_a"].to_pylist()} | {int(x, 16) for x in pairs["id_b"].to_pylist()}
        found_pairs = len(pairs)
        kinds = pairs.group_by("kind").aggregate([("kind", "count")]).to_pylist()
    else:
        from oiv4.stages.dedup.index import _pairs_within

        hashes = np.asarray(table["phash"].combine_chunks(), dtype=np.uint64)
        if args.contender == "faiss":
            i, j = faiss_pairs(hashes, args.threshold)
        else:
            i, j, _ = _pairs_within(hashes, args.threshold)  # the oiv4 index, one unrotated pass
        ids = set(i.tolist()) | set(j.tolist())
        found_pairs, kinds = len(i), "unrotated only"
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    recall = float(np.mean([x in ids and y in ids for x, y in zip(a[:20000], b[:20000], strict=True)]))
    print(
        f"{args.contender}: n={args.n:,} k={args.threshold}: wall {wall:.1f} s, CPU {cpu:.1f} s, peak RSS {rss:.2f} GiB, "
        f"{found_pairs:,} pairs {kinds}, planted recall {recall:.4f}"
    )


def sample_index(table: pa.Table, args: argparse.Namespace) -> None:
    """Time block 0's first `--sample-chunks` query chunks on the full index, and scale to the whole dedup.

    For a busy machine: the full index is built (so bucket occupancy, the cost driver, is the real one) but only
    a slice of the queries is run; the total is that slice times chunks x 3 blocks x 2 searches.
    """
    from itertools import islice

    from oiv4.stages.dedup import index as ix

    hashes = np.asarray(table["phash"].combine_chunks(), dtype=np.uint64)
    w0, c0 = time.perf_counter(), time.process_time()
    steps = args.sample_chunks * len(ix._flips(args.threshold // 3))
    found = sum(len(i) for i, _ in islice(ix._block_pairs(hashes, 0, args.threshold), steps))
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    chunks = -(-len(hashes) // ix.CHUNK)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"sample: n={len(hashes):,} block 0, {args.sample_chunks}/{chunks} chunks: CPU {cpu:.1f} s, wall {wall:.1f} s, "
        f"{found:,} pairs; full dedup (3 blocks x 2 searches) ~{cpu * chunks / args.sample_chunks * 6:.0f} CPU s; "
        f"peak RSS {rss:.2f} GiB"
    )


def bench_fingerprint(args: argparse.Namespace) -> None:
    from PIL import Image

    from oiv4.io.fingerprint import phash
    from oiv4.stages.fetch.settings import TransformSettings
    from oiv4.stages.fetch.transform import transform_image
    from oiv4_mirror.images import noise_tile, render_picture

    rng = np.random.default_rng(1)
    tile = noise_tile(1)
    settings = TransformSettings()
    t_transform = t_hash = 0.0
    for i in range(args.photos):
        mp = rng.uniform(2, 12)
        w = int((mp * 1e6 * 4 / 3) ** 0.5)
        buf = io.BytesIO()
        render_picture(1, i, w, w * 3 // 4, tile).save(buf, "JPEG", quality=90)
        data = buf.getvalue()
        c0 = time.process_time()
        stored = transform_image(data, 0.0, settings)
        t_transform += time.process_time() - c0
        # What the transform holds just before encoding: the shrunk RGB picture (decoded here outside the timing).
        shrunk = Image.open(io.BytesIO(stored.data)).convert("RGB")
        c0 = time.process_time()
        for _ in range(10):
            phash(shrunk)
        t_hash += (time.process_time() - c0) / 10
    n = args.photos
    print(
        f"{n} photos of 2-12 MP: fetch transform {1000 * t_transform / n:.1f} CPU ms/image, "
        f"fingerprint {1000 * t_hash / n:.2f} CPU ms/image = {100 * t_hash / t_transform:.2f}% of the transform"
    )


def bench_hashes(args: argparse.Namespace) -> None:
    """Distance of each planted copy to its original, and of the closest hard negative, for each hash."""
    from collections import defaultdict

    from oiv4.io.fingerprint import dhash, hamming, phash, phash_median, rotations
    from oiv4_mirror.duplicates import planted_corpus

    items = list(planted_corpus(args.photos))
    groups = np.array([p.group for p in items])
    for name, fn in (("DCT sign hash", phash), ("pHash (median)", phash_median), ("dHash", dhash)):
        h = np.array([fn(p.image) for p in items], dtype=np.uint64)
        if fn is phash:  # the only hash whose turns are known from the hash: best of the 4 orientations
            d = np.min([hamming(h[:, None], r[None, :]) for r in rotations(h)], axis=0)
        else:
            d = hamming(h[:, None], h[None, :])
        copies: dict[str, list[int]] = defaultdict(list)
        negatives = []
        for i, p in enumerate(items):
            for j in range(i + 1, len(items)):
                if groups[i] >= 0 and groups[i] == groups[j]:
                    if p.variant == "original":
                        copies[items[j].variant].append(int(d[i, j]))
                else:
                    negatives.append(int(d[i, j]))
        every = np.concatenate([np.array(v) for v in copies.values()])
        print(f"{name}: closest hard negative {min(negatives)}, original-copy recall at 8: {np.mean(every <= 8):.3f}")
        for variant, ds in copies.items():
            print(f"  {variant:20s} max {max(ds):2d} mean {np.mean(ds):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    ix = sub.add_parser("index")
    ix.add_argument("--n", type=int, default=9_180_000)
    ix.add_argument("--threshold", type=int, default=8)
    ix.add_argument("--dup-rate", type=float, default=0.015)
    ix.add_argument("--contender", choices=("oiv4", "numpy", "faiss"), default="oiv4")
    ix.add_argument("--threads", type=int, default=2)
    ix.add_argument("--sample-chunks", type=int, default=0, help="time only this many query chunks (busy machine)")
    fp = sub.add_parser("fingerprint")
    fp.add_argument("--photos", type=int, default=24)
    hs = sub.add_parser("hashes")
    hs.add_argument("--photos", type=int, default=60)
    args = parser.parse_args()
    {"index": bench_index, "fingerprint": bench_fingerprint, "hashes": bench_hashes}[args.what](args)


if __name__ == "__main__":
    main()
