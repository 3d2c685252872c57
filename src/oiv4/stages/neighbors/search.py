"""Exact k nearest neighbours over a database streamed in blocks: faiss picks candidates, float64 decides.

The answer is defined exactly: distances computed in float64 from the stored values (l2 = squared
Euclidean, ip = -inner product, cosine = 1 - cosine similarity; smaller is nearer), ties broken by database
position (database sets in the order given, then plan order), excluded (query, position) pairs never returned.

1. One pass over the database: per block, faiss (float32, GPU faiss when it sees a GPU) gives every query its
   `want` = k + e + margin nearest by its own distances (e: the most exclusions any query of the batch has);
   they are merged into a running list of `want`.
2. One more pass re-scores every kept candidate exactly in float64, in database order, a block at a time.
3. faiss's distance of any vector is within `tol` of its exact one (a bound on float32 rounding). A vector left
   out of a query's list has a faiss distance at least that of the list's last one, f_w, so its exact distance
   is at least f_w - tol: when the query's k-th exact distance (exclusions removed) is below that, nothing left
   out can enter the top k, ties included. Otherwise (near-ties at the cut) the query is "widened": searched
   again over the whole database by `_exact_scan`, which re-scores everything the rounding bound admits.
So float32 rounding, in faiss or in BLAS, cannot change the answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from oiv4.contracts.extras import require

METRICS = ("l2", "ip", "cosine")
_EPS32 = float(np.finfo(np.float32).eps)
#: Unit roundoff of float32, the precision faiss and BLAS compute the candidate distances in.
_U32 = 2.0**-24
#: What the process holds besides the search's buffers: interpreter, numpy, pyarrow (its Parquet reader
#: loads ~60 MB of modules), faiss, and the per-thread buffers of two BLAS libraries (numpy's and faiss's):
#: measured 0.19-0.22 GiB, counted against --memory-gb before anything is sized.
RUNTIME_BYTES = 224 * 2**20
#: Bytes per database row held for the whole run: its id (Arrow string), its set index, exclusion bookkeeping.
DB_ROW_BYTES = 48

Blocks = Callable[[int, int], np.ndarray]
Pairs = tuple[np.ndarray, np.ndarray]


def _no_pairs() -> Pairs:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)


@dataclass
class SearchStats:
    """What searches did: queries re-searched exactly (near-ties at the cut), and whether faiss ran on a GPU."""

    widened: int = 0
    gpu: bool = False


@dataclass(frozen=True)
class SearchSizes:
    """Buffer sizes derived from --memory-gb (see `plan_sizes`)."""

    query_rows: int  # queries per part: one pass over the database each
    db_rows: int  # database rows per block
    rerank_pairs: int  # (query, candidate) pairs re-scored in float64 at once


def margin_for(dim: int) -> int:
    """Candidates kept beyond k + exclusions: the rounding bound grows with d, so the gap it needs does too."""
    return 16 + dim // 64


def plan_sizes(memory_gb: float, dim: int, itemsize: int, k: int, extra: int, database_size: int) -> SearchSizes:
    """Split the budget left after the runtime and the per-database-row bookkeeping.

    3/8 goes to the queries of a part (their vectors, the merged candidate lists, the exact re-scores, the
    output rows): every part is one more pass over the database. 3/8 goes to a database block (as stored, its
    float32 copy, faiss's norms): faiss starts each block with empty heaps, so its selection work grows with
    the number of blocks. An eighth goes to the float64 re-rank (gathered rows as stored, their float64
    copies and one temporary). The rest covers
    faiss's fixed tiles (4096 x 1024 float32) and allocator slack. Deterministic in its inputs, so a resumed
    run cuts the queries into the same parts. A budget below the runtime itself cannot be met: the sizes are
    then taken from an eighth of it, with floors (16 queries, 2,048 or 4 x `want` rows) that keep the search efficient.
    """
    budget = memory_gb * 2**30
    work = max(budget - RUNTIME_BYTES - database_size * DB_ROW_BYTES, budget / 8)
    want = k + extra + margin_for(dim)
    # candidates: faiss result + merge (float32 + int64, twice `want`), re-rank (position, order, exact, key);
    # output: ~80 bytes per neighbour row in Arrow.
    per_query = dim * (itemsize + 4) + want * (2 * 12 + 12 + 32) + k * 80
    query_rows = max(16, min(16384, int(work * 3 / 8 / per_query)))
    db_rows = max(4 * want, 2048, int(work * 3 / 8 / (dim * (itemsize + 8) + 16)))
    rerank_pairs = max(64, int(work / 8 / (dim * (2 * itemsize + 24))))
    return SearchSizes(query_rows, db_rows, rerank_pairs)


def exact_distances(q: np.ndarray, x: np.ndarray, metric: str) -> np.ndarray:
    """float64 distances between rows of q and rows of x (broadcast over leading axes, reduced over the last).

    The one formula for the search and any brute force, so equal inputs give equal bits.
    """
    q64, x64 = np.asarray(q, dtype=np.float64), np.asarray(x, dtype=np.float64)
    if metric == "l2":
        diff = q64 - x64
        np.multiply(diff, diff, out=diff)
        return diff.sum(axis=-1)
    dot = (q64 * x64).sum(axis=-1)
    if metric == "ip":
        return -dot
    nq = np.sqrt((q64 * q64).sum(axis=-1))
    nx = np.sqrt((x64 * x64).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where((nq > 0) & (nx > 0), dot / (nq * nx), 0.0)
    return 1.0 - cos


def knn_block(
    queries: np.ndarray,
    database_block: Blocks,
    database_size: int,
    k: int,
    metric: str,
    db_block_rows: int,
    excluded: Pairs | None = None,
    rerank_pairs: int = 1 << 16,
    *,
    margin: int | None = None,
    stats: SearchStats | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (positions (nq, k) int64, distances (nq, k) float64) of `queries` over the whole database.

    `database_block(start, stop)` returns database rows [start, stop) as stored (called for two passes, three
    when a query is widened); `excluded` is (query index, database position) pairs never to return;
    `rerank_pairs` bounds the float64 re-scoring. Rows with fewer than k candidates are padded with -1 / inf.
    """
    stats = stats if stats is not None else SearchStats()
    ex_q, ex_p = (np.asarray(a, dtype=np.int64) for a in (excluded or _no_pairs()))
    nq, dim = queries.shape
    extra = int(np.bincount(ex_q).max()) if len(ex_q) else 0
    want = min(k + extra + (margin_for(dim) if margin is None else margin), database_size)
    if nq == 0 or want == 0:
        return np.full((nq, k), -1, dtype=np.int64), np.full((nq, k), np.inf)
    q32 = _as32(queries, metric)
    cand_s, cand_pos, xmax2 = _faiss_pass(q32, database_block, database_size, want, metric, db_block_rows, stats)
    exact = _rerank(queries, database_block, database_size, cand_pos, metric, db_block_rows, rerank_pairs)
    if len(ex_q):
        keys = np.unique(ex_q * database_size + ex_p)
        cand_keys = np.arange(nq, dtype=np.int64)[:, None] * database_size + cand_pos
        exact[keys[np.searchsorted(keys, cand_keys).clip(max=len(keys) - 1)] == cand_keys] = np.inf
    order = np.lexsort((cand_pos, exact), axis=1)[:, :k]
    pos, dist = np.take_along_axis(cand_pos, order, 1), np.take_along_axis(exact, order, 1)
    if pos.shape[1] < k:
        pad = k - pos.shape[1]
        pos = np.pad(pos, ((0, 0), (0, pad)), constant_values=-1)
        dist = np.pad(dist, ((0, 0), (0, pad)), constant_values=np.inf)
    pos[~np.isfinite(dist)] = -1
    if database_size > want:
        # Vectors outside the lists exist: the check of step 3, in float64.
        f_w = cand_s.max(axis=1).astype(np.float64) + (1.0 if metric == "cosine" else 0.0)
        widen = np.flatnonzero(~(dist[:, k - 1] < f_w - _tolerance(q32, xmax2, metric)))
        stats.widened += len(widen)
        _widen(queries, widen, database_block, database_size, k, metric, db_block_rows, (ex_q, ex_p), pos, dist)
    return pos, dist


def _as32(x: np.ndarray, metric: str) -> np.ndarray:
    """float32 rows for faiss; unit length for cosine (a zero vector stays zero)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if metric == "cosine":
        norms = np.sqrt(np.einsum("ij,ij->i", x, x))
        x = x / np.where(norms == 0, np.float32(1), norms)[:, None]
    return x


def _tolerance(q32: np.ndarray, xmax2: float, metric: str) -> np.ndarray:
    """Per query, a bound on |faiss distance - exact distance| for any database vector.

    A float32 d-term dot product or squared norm is off by at most d*u times its terms' magnitude, and
    faiss's l2 is |q|^2 + |x|^2 - 2 q.x: so (d+2)*u*(|q| + |x|)^2 (ip: (d+2)*u*|q||x|), doubled for the
    higher-order terms and the inputs' rounding to float32. Cosine adds the float32 normalisation of both
    sides (twice the slack for vectors of length ~1).
    """
    d = q32.shape[1]
    slack = 2.0 * (d + 8) * _U32
    if metric == "cosine":
        return np.full(len(q32), 2 * slack)
    xmax = np.sqrt(xmax2 * (1 + slack))
    qn = np.sqrt(np.einsum("ij,ij->i", q32, q32, dtype=np.float64))
    return slack * ((qn + xmax) ** 2 if metric == "l2" else qn * xmax)


def _faiss_search(metric: str, stats: SearchStats) -> Callable[[np.ndarray, np.ndarray, int], tuple]:
    """(q32, x32, kk) -> (scores (nq, kk) float32 in distance order, positions (nq, kk) int64)."""
    faiss = require("faiss", extra="neighbors", feature="the exact kNN search")
    kind = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    gpu = faiss.StandardGpuResources() if faiss.get_num_gpus() > 0 else None
    stats.gpu = gpu is not None

    def search(q32: np.ndarray, x32: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        if gpu is not None and kk <= 2048:  # GPU faiss's brute-force k limit
            d, i = faiss.knn_gpu(gpu, q32, x32, kk, metric=kind)
        else:
            d, i = faiss.knn(q32, x32, kk, metric=kind)
        # ip/cosine: faiss gives similarities; their negation is exact in float32 (cosine adds 1 later).
        return (d if metric == "l2" else np.negative(d)), i.astype(np.int64, copy=False)

    return search


def _faiss_pass(
    q32: np.ndarray, database_block: Blocks, n: int, want: int, metric: str, rows: int, stats: SearchStats
) -> tuple[np.ndarray, np.ndarray, float]:
    """Each query's `want` best by faiss's distance over the database, and the largest squared norm seen."""
    search = _faiss_search(metric, stats)
    nq = len(q32)
    cand_s, cand_pos, xmax2 = np.zeros((nq, 0), np.float32), np.zeros((nq, 0), np.int64), 0.0
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        x32 = _as32(database_block(start, stop), metric)
        xmax2 = max(xmax2, float(np.einsum("ij,ij->i", x32, x32).max()))
        s, i = search(q32, x32, min(stop - start, want))
        del x32
        cand_s = np.concatenate([cand_s, s], axis=1)
        cand_pos = np.concatenate([cand_pos, i + start], axis=1)
        if cand_s.shape[1] > want:
            keep = np.argpartition(cand_s, want - 1, axis=1)[:, :want]
            cand_s = np.take_along_axis(cand_s, keep, 1)
            cand_pos = np.take_along_axis(cand_pos, keep, 1)
    return cand_s, cand_pos, xmax2


def _rerank(
    queries: np.ndarray, database_block: Blocks, n: int, cand_pos: np.ndarray, metric: str, rows: int, pairs: int
) -> np.ndarray:
    """Exact float64 distances of every (query, candidate), read block by block in database order."""
    width = cand_pos.shape[1]
    flat = cand_pos.ravel()
    order = np.argsort(flat, kind="stable")
    sorted_pos = flat[order]
    exact = np.empty(len(flat))
    for start in range(0, n, rows):
        lo, hi = np.searchsorted(sorted_pos, [start, min(start + rows, n)])
        if hi == lo:
            continue
        block = database_block(start, min(start + rows, n))
        for c in range(lo, hi, pairs):
            sel = order[c : min(c + pairs, hi)]
            exact[sel] = exact_distances(queries[sel // width], block[flat[sel] - start], metric)
    return exact.reshape(cand_pos.shape)


def _widen(
    queries: np.ndarray,
    rows: np.ndarray,
    database_block: Blocks,
    n: int,
    k: int,
    metric: str,
    db_rows: int,
    excluded: Pairs,
    pos: np.ndarray,
    dist: np.ndarray,
) -> None:
    """Replace the answers of queries `rows` by an exact scan over the whole database, a few queries at a time
    (the scan's float32 scores, ~12 bytes per query and database row, stay within a database block's bytes)."""
    ex_q, ex_p = excluded
    chunk = max(1, queries.shape[1] // 3)
    for c in range(0, len(rows), chunk):
        part = rows[c : c + chunk]
        local = np.full(len(queries), -1, dtype=np.int64)
        local[part] = np.arange(len(part))
        sel = local[ex_q] >= 0
        p, d = _exact_scan(queries[part], database_block, n, k, metric, db_rows, (local[ex_q[sel]], ex_p[sel]))
        pos[part], dist[part] = p, d


def _exact_scan(
    queries: np.ndarray,
    database_block: Blocks,
    database_size: int,
    k: int,
    metric: str,
    db_block_rows: int,
    excluded: Pairs,
    rerank_pairs: int = 1 << 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by scoring every block in float32 (numpy BLAS) and re-scoring in float64 every candidate within
    the rounding bound of the block's k-th score (and of the running k-th exact distance)."""
    nq = len(queries)
    q32 = np.ascontiguousarray(queries, dtype=np.float32)
    best_pos = np.full((nq, 0), -1, dtype=np.int64)
    best_dist = np.full((nq, 0), np.inf)
    ex_q, ex_p = excluded
    for start in range(0, database_size, db_block_rows):
        stop = min(start + db_block_rows, database_size)
        block = database_block(start, stop)
        sel = (ex_p >= start) & (ex_p < stop)
        score, tol = _approx(q32, np.ascontiguousarray(block, dtype=np.float32), metric)
        score[ex_q[sel], ex_p[sel] - start] = np.inf
        bound = best_dist[:, k - 1 : k] if best_dist.shape[1] >= k else np.full((nq, 1), np.inf)
        qi, bj = _candidates(score, tol, min(k, stop - start), bound)
        del score
        exact = np.empty(len(qi))
        for c in range(0, len(qi), rerank_pairs):
            sl = slice(c, c + rerank_pairs)
            exact[sl] = exact_distances(queries[qi[sl]], block[bj[sl]], metric)
        counts = np.bincount(qi, minlength=nq)
        width = int(counts.max()) if len(counts) else 0
        new_pos = np.full((nq, width), -1, dtype=np.int64)
        new_dist = np.full((nq, width), np.inf)
        col = np.arange(len(qi)) - np.repeat(np.cumsum(counts) - counts, counts)
        new_pos[qi, col] = bj + start
        new_dist[qi, col] = exact
        best_pos, best_dist = _merge(best_pos, best_dist, new_pos, new_dist, k)
    if best_pos.shape[1] < k:
        pad = k - best_pos.shape[1]
        best_pos = np.pad(best_pos, ((0, 0), (0, pad)), constant_values=-1)
        best_dist = np.pad(best_dist, ((0, 0), (0, pad)), constant_values=np.inf)
    return best_pos, best_dist


def _approx(q32: np.ndarray, x32: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """float32 scores (nq, nb) and, per query, a bound on their rounding error (nq, 1)."""
    qn = np.einsum("ij,ij->i", q32, q32, dtype=np.float64)
    xn = np.einsum("ij,ij->i", x32, x32, dtype=np.float64)
    d = q32.shape[1]
    c = (2 * d + 16) * _EPS32
    score = q32 @ x32.T
    xmax = float(xn.max()) if len(xn) else 0.0
    if metric == "l2":
        score *= -2.0
        score += qn.astype(np.float32)[:, None]
        score += xn.astype(np.float32)[None, :]
        return score, (c * (np.sqrt(qn) + np.sqrt(xmax)) ** 2)[:, None]
    if metric == "ip":
        np.negative(score, out=score)
        return score, (c * np.sqrt(qn) * np.sqrt(xmax))[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        inv_q = np.where(qn > 0, 1 / np.sqrt(qn), 0.0).astype(np.float32)
        inv_x = np.where(xn > 0, 1 / np.sqrt(xn), 0.0).astype(np.float32)
    score *= inv_q[:, None]
    score *= inv_x[None, :]
    np.subtract(1.0, score, out=score)
    score[:, xn == 0] = 1.0
    score[qn == 0, :] = 1.0
    return score, np.full((len(qn), 1), 2 * c + 1e-6)


def _candidates(score: np.ndarray, tol: np.ndarray, kk: int, bound: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query, block column) pairs whose exact distance may be among the block's kk smallest."""
    if kk == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if np.isfinite(bound).all():
        # k exact distances are known for every query: only what may beat the k-th can enter (no partition).
        # Excluded entries are inf and fail the comparison against a finite limit.
        # Rounded up, so converting the float64 limit to the scores' float32 never drops a candidate.
        limit = np.nextafter((bound + tol).astype(score.dtype), np.inf)
        return np.nonzero(score <= limit)
    kth = np.partition(score, kk - 1, axis=1)[:, kk - 1 : kk]
    # A true distance can be below the true k-th only if its float32 score is within the sum of both
    # rounding bounds of the k-th score.
    limit = np.minimum(kth + 2 * tol, bound + tol)
    cand = np.isfinite(score) & (score <= limit)
    return np.nonzero(cand)


def _merge(p1: np.ndarray, d1: np.ndarray, p2: np.ndarray, d2: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k smallest of both lists by (distance, position); -1 padding sorts last."""
    pos = np.concatenate([p1, p2], axis=1)
    dist = np.concatenate([d1, d2], axis=1)
    key_pos = np.where(pos < 0, np.iinfo(np.int64).max, pos)
    order = np.lexsort((key_pos, dist), axis=1)[:, :k]
    return np.take_along_axis(pos, order, 1), np.take_along_axis(dist, order, 1)
