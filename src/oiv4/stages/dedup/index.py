"""All pairs of 64-bit hashes within Hamming distance k, at 9.18M hashes, in every orientation.

Multi-index hashing in numpy: the 64 bits are cut into 3 blocks of 21 bits (the 64th bit is only checked).
Two hashes within distance k differ in at most floor(k/3) bits of at least one block (pigeonhole), so probing,
for every hash and block, every key within floor(k/3) flips of its own finds *every* pair within k; each
candidate is then checked on all 64 bits. Each block is a CSR table over its 2^21 keys (an argsort and a
bincount), so a probe is two array lookups, done for a million queries at once.

Why not faiss's IndexBinaryMultiHash (the same scheme in C++): measured on the same hashes it spent more CPU
per probe (a hash-map lookup per key) than the vectorised CSR lookups here, and it would be one more binary
dependency; see benchmarks/RESULTS.md ("Duplicates").

Rotations: the stored hash is that of the stored (upright, per the CSV) picture, and `fingerprint` can rotate
a hash without the pixels. Comparing every hash against the 3 rotations of every other would cost 4 searches.
Instead each hash is also *canonicalised*: the signs of its two lowest frequencies, (0,1) and (1,0), turn
under a 90-degree rotation like the quadrant of a 2-D vector, so exactly one rotation puts both bits at 1.
A second search over the canonical hashes finds pairs stored at different orientations, provided the two
copies agree on those two bits -- the largest coefficients of most photos (measured: 178 of 180 planted
rotated copies found; the 2 missed are quarter turns of one photo whose (0,1) coefficient is near zero). The two searches run in two threads (numpy
releases the GIL in the sorts, lookups and bit counts).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import combinations

import numpy as np

from oiv4.contracts.errors import SettingError
from oiv4.io.fingerprint import popcount, rotations

#: Queries per probe batch: bounds the candidate arrays (~4 candidates per probe at 9.18M hashes).
CHUNK = 1 << 19
#: Above 12 the probes per hash explode (radius 4 per block: 7,547 keys) and unrelated photos start to match.
MAX_THRESHOLD = 12
_BLOCK_BITS = 21
_BLOCK_MASK = np.uint64((1 << _BLOCK_BITS) - 1)
_BIT_01 = np.uint64(1 << 62)  # frequency (0, 1): bit index 1, most significant first
_BIT_10 = np.uint64(1 << 55)  # frequency (1, 0): bit index 8


def canonical(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(canonical hashes, rotation index 0..3 that produced each): the rotation with bits (0,1),(1,0) both set."""
    rots = rotations(hashes)  # (4, n)
    ok = ((rots & _BIT_01) != 0) & ((rots & _BIT_10) != 0)
    which = np.argmax(ok, axis=0)
    return rots[which, np.arange(rots.shape[1])], which


def _flips(radius: int) -> list[int]:
    """Every 21-bit XOR pattern with at most `radius` bits set."""
    return [sum(1 << b for b in c) for d in range(radius + 1) for c in combinations(range(_BLOCK_BITS), d)]


def _block_pairs(hashes: np.ndarray, block: int, k: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(i, j), i < j, within distance k whose block `block` differs in at most k // 3 bits."""
    keys = ((hashes >> np.uint64(_BLOCK_BITS * block)) & _BLOCK_MASK).astype(np.int64)
    order = np.argsort(keys, kind="stable")
    counts = np.bincount(keys, minlength=1 << _BLOCK_BITS)
    starts = np.concatenate([[0], np.cumsum(counts)])
    sorted_h = hashes[order]
    for lo in range(0, len(hashes), CHUNK):
        ck, ch = keys[lo : lo + CHUNK], hashes[lo : lo + CHUNK]
        for f in _flips(k // 3):
            probe = ck ^ f
            cnt = counts[probe]
            # A pair differing by f != 0 is probed from its smaller key only: the same pair from both ends
            # would cost twice the candidates. (f == 0: probe == key, both ends; np.unique removes the repeat.)
            q = np.flatnonzero((cnt > 0) & (probe >= ck))
            if not len(q):
                continue
            c = cnt[q]
            rep = np.repeat(np.arange(len(q)), c)
            pos = starts[probe[q]][rep] + (np.arange(len(rep)) - (np.cumsum(c) - c)[rep])
            qi = q[rep]
            close = popcount(ch[qi] ^ sorted_h[pos]) <= k
            qi, cand = qi[close] + lo, order[pos[close]]
            other = cand != qi
            yield np.minimum(qi, cand)[other], np.maximum(qi, cand)[other]


def _pairs_within(hashes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, distance), i < j, for every pair within distance k: exact (see the module docstring)."""
    found = [ij for block in range(3) for ij in _block_pairs(hashes, block, k)]
    n = np.int64(len(hashes))
    if not found:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    key = np.unique(np.concatenate([i * n + j for i, j in found]))  # a pair close in 2-3 blocks: once
    i, j = key // n, key % n
    return i, j, popcount(hashes[i] ^ hashes[j]).astype(np.int64)


def near_pairs(hashes: np.ndarray, k: int, threads: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (i, j), i < j, whose hashes are within `k` at some right-angle rotation.

    `threads`: 2 runs the unrotated and the rotated search side by side, 1 one after the other.
    Returns (i, j, distance, rotated): `rotated` is True for pairs found only at a non-zero rotation, and
    their distance is measured between the canonical (equally rotated) hashes. Exact for unrotated pairs.
    """
    if not 0 <= k <= MAX_THRESHOLD:
        raise SettingError(
            f"threshold {k} is outside 0..{MAX_THRESHOLD} bits (unrelated photos measured from 14 bits apart)"
        )
    hashes = np.asarray(hashes, dtype=np.uint64)
    if len(hashes) < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, np.zeros(0, dtype=bool)
    canon, turn = canonical(hashes)
    if threads == 1:
        (pi, pj, pd), (ci, cj, cd) = _pairs_within(hashes, k), _pairs_within(canon, k)
    else:
        with ThreadPoolExecutor(max_workers=2) as pool:
            plain, turned = pool.submit(_pairs_within, hashes, k), pool.submit(_pairs_within, canon, k)
            (pi, pj, pd), (ci, cj, cd) = plain.result(), turned.result()
    differs = turn[ci] != turn[cj]  # same turn: the same pair at the same distance, already found unrotated
    parts = [
        (pi, pj, pd, np.zeros(len(pi), dtype=bool)),
        (ci[differs], cj[differs], cd[differs], np.ones(int(differs.sum()), dtype=bool)),
    ]
    i, j, d, rot = (np.concatenate(c) for c in zip(*parts, strict=True))
    return i, j, d, rot
