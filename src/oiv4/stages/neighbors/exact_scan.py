"""Step 3's fallback: queries near-tied at the cut, searched again over the whole database exactly."""

from __future__ import annotations

import numpy as np

from oiv4.stages.neighbors.candidates import Blocks
from oiv4.stages.neighbors.distances import exact_distances

EPS32 = float(np.finfo(np.float32).eps)
#: (query index, database position) pairs never to return.
Pairs = tuple[np.ndarray, np.ndarray]


def widen(
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
    c = (2 * d + 16) * EPS32
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
