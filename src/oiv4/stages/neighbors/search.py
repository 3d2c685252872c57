"""Exact k nearest neighbours over a database streamed in blocks: faiss picks candidates, float64 decides.

The answer is defined exactly: distances computed in float64 from the stored values (l2 = squared
Euclidean, ip = -inner product, cosine = 1 - cosine similarity; smaller is nearer), ties broken by database
position (database sets in the order given, then plan order), excluded (query, position) pairs never returned.

1. One pass over the database (`candidates`): per block, faiss's BLAS computes float32 distances tile by
   tile (GPU faiss when it sees a GPU) and each query keeps its `want` = k + e + margin nearest by them in one
   faiss heap that lives for the whole pass (e: the most exclusions any query of the part has).
2. One more pass re-scores in float64, in database order a block at a time, the candidates that can still be
   in the top k: those within twice the rounding bound of the query's (k + its exclusions)-th faiss distance.
3. faiss's distance of any vector is within `tol` of its exact one (a bound on float32 rounding). A vector left
   out of a query's list has a faiss distance at least that of the list's last one, f_w, so its exact distance
   is at least f_w - tol: when the query's k-th exact distance (exclusions removed) is below that, nothing left
   out can enter the top k, ties included. Otherwise (near-ties at the cut) the query is "widened": searched
   again over the whole database by `exact_scan`, which re-scores everything the rounding bound admits.
So float32 rounding, in faiss or in BLAS, cannot change the answer.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from oiv4.contracts.errors import UsageError
from oiv4.stages.neighbors.candidates import Blocks, as_float32, candidate_pass, rounding_bound
from oiv4.stages.neighbors.distances import exact_distances, row_norms
from oiv4.stages.neighbors.exact_scan import Pairs, widen

#: What the process holds besides the search's buffers: interpreter, numpy, pyarrow (its Parquet reader
#: loads ~60 MB of modules), faiss, and the per-thread buffers of two BLAS libraries (numpy's and faiss's):
#: measured 0.19-0.22 GiB, counted against --memory-gb before anything is sized.
RUNTIME_BYTES = 224 * 2**20
#: The least the search itself is given: below it, blocks and parts get so small that it crawls.
MIN_WORK_BYTES = 32 * 2**20
#: Threads for the float64 re-rank (at most one per core).
RERANK_THREADS = 8
#: Bytes per database row held for the whole run: its id (Arrow string), its set index, exclusion bookkeeping.
DB_ROW_BYTES = 48


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
    tile_queries: int = 1024  # queries per float32 distance tile (tile_queries x db_rows)


def margin_for(dim: int) -> int:
    """Candidates kept beyond k + exclusions: the rounding bound grows with d, so the gap it needs does too."""
    return 16 + dim // 64


#: Database rows per block and queries per distance tile when the budget allows: a 4096 x 4096 float32 tile
#: (64 MiB) and 4096-row blocks were the fastest measured at 512-d (benchmarks/RESULTS.md, "Exact kNN");
#: larger ones only cost memory, since the heaps carry over from block to block.
BLOCK_ROWS = 4096
TILE_QUERIES = 4096


def plan_sizes(memory_gb: float, dim: int, itemsize: int, k: int, extra: int, database_size: int) -> SearchSizes:
    """Split the budget left after the runtime and the per-database-row bookkeeping.

    A quarter goes to a database block (as stored, its float32 copy, its norms) and a quarter to the distance
    tile; both are capped (`BLOCK_ROWS`, `TILE_QUERIES`). Of what is left, 3/4 goes to the queries of a part
    (their vectors, the candidate heaps, the exact re-scores, the output rows) and 1/4 to the float64 re-rank
    (gathered rows as stored, their float64 copies and one temporary). Parts cost little: every part is one
    more read of the database, but the arithmetic is the same whatever the number of parts. Deterministic in
    its inputs, so a resumed run cuts the queries into the same parts. A budget that cannot hold the runtime,
    the bookkeeping and `MIN_WORK_BYTES` is refused (UsageError) rather than silently exceeded.
    """
    budget = memory_gb * 2**30
    floor = RUNTIME_BYTES + database_size * DB_ROW_BYTES + MIN_WORK_BYTES
    if budget < floor:
        raise UsageError(
            f"--memory-gb {memory_gb:g} is below what this search needs, {math.ceil(floor / 2**30 * 100) / 100:.2f}:"
            f" the runtime takes ~{RUNTIME_BYTES / 2**30:.2f} GiB, the {database_size:,} database rows"
            f" {database_size * DB_ROW_BYTES / 2**20:.0f} MiB of bookkeeping, and the search"
            f" {MIN_WORK_BYTES / 2**20:.0f} MiB to work in"
        )
    work = budget - RUNTIME_BYTES - database_size * DB_ROW_BYTES
    want = k + extra + margin_for(dim)
    db_rows = max(256, min(BLOCK_ROWS, int(work / 4 / (dim * (itemsize + 4) + 8))))
    tile_queries = max(16, min(TILE_QUERIES, int(work / 4 / (db_rows * 4))))
    used = db_rows * (dim * (itemsize + 4) + 8) + tile_queries * db_rows * 4
    rest = max(work - used, work / 8)
    # candidates: heap (float32 + int64), their float64 distances, re-rank (position, order, exact, key);
    # output: ~80 bytes per neighbour row in Arrow.
    per_query = dim * (itemsize + 4) + want * (12 + 8 + 32) + k * 80
    query_rows = max(16, min(65536, int(rest * 3 / 4 / per_query)))
    rerank_pairs = max(64, int(rest / 4 / (dim * (2 * itemsize + 24))))
    return SearchSizes(query_rows, db_rows, rerank_pairs, tile_queries)


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
    tile_queries: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (positions (nq, k) int64, distances (nq, k) float64) of `queries` over the whole database.

    `database_block(start, stop)` returns database rows [start, stop) as stored (called for two passes, three
    when a query is widened); `excluded` is (query index, database position) pairs never to return;
    `rerank_pairs` bounds the float64 re-scoring; `tile_queries` x `db_block_rows` float32 distances are computed
    at once. Rows with fewer than k candidates are padded with -1 / inf.
    """
    stats = stats if stats is not None else SearchStats()
    ex_q, ex_p = (np.asarray(a, dtype=np.int64) for a in (excluded or _no_pairs()))
    nq, dim = queries.shape
    extra = int(np.bincount(ex_q).max()) if len(ex_q) else 0
    want = min(k + extra + (margin_for(dim) if margin is None else margin), database_size)
    if nq == 0 or want == 0:
        return np.full((nq, k), -1, dtype=np.int64), np.full((nq, k), np.inf)
    q32 = as_float32(queries, metric)
    cand_s, cand_pos, xmax2, stats.gpu = candidate_pass(
        q32, database_block, database_size, want, metric, db_block_rows, tile_queries
    )
    tol = rounding_bound(q32, xmax2, metric)
    # Only a candidate within twice the rounding bound of the (k + e)-th faiss distance can be in the top k
    # (e: that query's exclusions): k + e others are exactly nearer than any candidate beyond it.
    cut = np.minimum(k + np.bincount(ex_q, minlength=nq), want) - 1
    limit = np.take_along_axis(cand_s, cut[:, None], 1) + 2 * tol[:, None]
    exact = _rerank(
        queries, database_block, database_size, cand_pos, cand_s <= limit, metric, db_block_rows, rerank_pairs
    )
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
        near_tied = np.flatnonzero(~(dist[:, k - 1] < cand_s[:, -1] - tol))
        stats.widened += len(near_tied)
        widen(queries, near_tied, database_block, database_size, k, metric, db_block_rows, (ex_q, ex_p), pos, dist)
    return pos, dist


def _rerank(
    queries: np.ndarray,
    database_block: Blocks,
    n: int,
    cand_pos: np.ndarray,
    wanted: np.ndarray,
    metric: str,
    rows: int,
    pairs: int,
) -> np.ndarray:
    """Exact float64 distances of the (query, candidate) pairs `wanted` marks (inf for the others), read block
    by block in database order."""
    width = cand_pos.shape[1]
    flat = cand_pos.ravel()
    chosen = np.flatnonzero(wanted.ravel())
    order = chosen[np.argsort(flat[chosen], kind="stable")]
    sorted_pos = flat[order]
    exact = np.full(len(flat), np.inf)
    # numpy releases the GIL in the gathers and the float64 arithmetic: the pairs of a block are split over
    # threads, each holding `pairs / threads` at once, so the budget is the same as one thread's.
    threads = max(1, min(RERANK_THREADS, os.cpu_count() or 1))
    step = max(1, pairs // threads)

    # Cosine: each query's and each row's norm once, not once per pair (the same bits: `row_norms`).
    q_norms = row_norms(queries) if metric == "cosine" else None

    def score(c: int, hi: int, block: np.ndarray, start: int, x_norms: np.ndarray | None) -> None:
        sel = order[c : min(c + step, hi)]
        qi, bj = sel // width, flat[sel] - start
        norms = (q_norms[qi], x_norms[bj]) if q_norms is not None and x_norms is not None else (None, None)
        exact[sel] = exact_distances(queries[qi], block[bj], metric, *norms)

    with ThreadPoolExecutor(threads) as pool:
        for start in range(0, n, rows):
            lo, hi = np.searchsorted(sorted_pos, [start, min(start + rows, n)])
            if hi == lo:
                continue
            block = database_block(start, min(start + rows, n))
            x_norms = row_norms(block) if q_norms is not None else None
            for c0 in range(lo, hi, step * threads):
                chunks = range(c0, min(c0 + step * threads, hi), step)
                done = [pool.submit(score, c, hi, block, start, x_norms) for c in chunks]
                for f in done:
                    f.result()
    return exact.reshape(cand_pos.shape)
