"""All pairs of 64-bit hashes within Hamming distance k, at 9.18M hashes, in every orientation.

The index is faiss's IndexBinaryMultiHash: 3 hash tables keyed by 21-bit substrings of the hash, each probed
with every key within `nflip` bit flips. By the pigeonhole principle two hashes within distance k have at
least one of the 3 substrings within floor(k/3) flips, so with nflip = floor(k/3) the search is *exact*
(every pair within k is found; faiss then checks the full distance). Measured against the alternatives in
benchmarks/RESULTS.md ("Duplicates").

Rotations: the stored hash is that of the stored (upright, per the CSV) picture, and `fingerprint` can rotate
a hash without the pixels. Comparing every hash against the 3 rotations of every other would cost 4 searches.
Instead each hash is also *canonicalised*: the signs of its two lowest frequencies, (0,1) and (1,0), turn
under a 90-degree rotation like the quadrant of a 2-D vector, so exactly one rotation puts both bits at 1.
A second search over the canonical hashes finds pairs stored at different orientations, provided the two
copies agree on those two bits -- they are the largest coefficients of a photo, so only a near-flat picture
disagrees (measured: every planted rotated copy is found).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from oiv4.io.fingerprint import rotations

#: Queries per range_search call: bounds the result buffers faiss allocates (a few hits per query).
BATCH = 1 << 20
_BIT_01 = np.uint64(1 << 62)  # frequency (0, 1): bit index 1, most significant first
_BIT_10 = np.uint64(1 << 55)  # frequency (1, 0): bit index 8


def canonical(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(canonical hashes, rotation index 0..3 that produced each): the rotation with bits (0,1),(1,0) both set."""
    rots = rotations(hashes)  # (4, n)
    ok = ((rots & _BIT_01) != 0) & ((rots & _BIT_10) != 0)
    which = np.argmax(ok, axis=0)
    return rots[which, np.arange(rots.shape[1])], which


def _as_codes(hashes: np.ndarray) -> np.ndarray:
    """uint64 -> (n, 8) uint8 in big-endian order, faiss's binary code layout."""
    return np.ascontiguousarray(np.asarray(hashes, dtype=np.uint64).astype(">u8").view(np.uint8).reshape(-1, 8))


def _range_pairs(hashes: np.ndarray, k: int, threads: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(i, j, distance) with i < j and distance <= k, batch by batch."""
    import faiss

    if threads:
        faiss.omp_set_num_threads(threads)
    codes = _as_codes(hashes)
    index = faiss.IndexBinaryMultiHash(64, 3, 21)
    index.nflip = k // 3  # exact: see the module docstring
    index.add(codes)
    for start in range(0, len(codes), BATCH):
        lims, dist, ids = index.range_search(codes[start : start + BATCH], k + 1)  # faiss: distance < radius
        query = start + np.repeat(np.arange(len(lims) - 1, dtype=np.int64), np.diff(lims).astype(np.int64))
        keep = ids > query  # each pair once, never an image with itself
        yield query[keep], ids[keep].astype(np.int64), dist[keep].astype(np.int64)


def near_pairs(hashes: np.ndarray, k: int, threads: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (i, j), i < j, whose hashes are within `k` at some right-angle rotation.

    Returns (i, j, distance, rotated): `rotated` is True for pairs found only at a non-zero rotation, and
    their distance is measured between the canonical (equally rotated) hashes. Exact for unrotated pairs.
    """
    if not 0 <= k <= 20:
        raise ValueError(f"threshold {k} is outside 0..20 bits: above ~12 unrelated photos start to match")
    hashes = np.asarray(hashes, dtype=np.uint64)
    if len(hashes) < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, np.zeros(0, dtype=bool)
    parts = [(i, j, d, np.zeros(len(i), dtype=bool)) for i, j, d in _range_pairs(hashes, k, threads)]
    canon, turn = canonical(hashes)
    for i, j, d in _range_pairs(canon, k, threads):
        differs = turn[i] != turn[j]  # same turn: the same pair at the same distance, already found above
        parts.append((i[differs], j[differs], d[differs], np.ones(int(differs.sum()), dtype=bool)))
    i, j, d, rot = (np.concatenate(c) for c in zip(*parts, strict=True))
    return i, j, d, rot
