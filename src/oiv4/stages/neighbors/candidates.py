"""Step 1 of the exact search: each query's candidates by faiss's float32 distances, and how far those can be
from the exact ones (see `search`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from oiv4.contracts.extras import require

#: Unit roundoff of float32, the precision faiss and BLAS compute the candidate distances in.
U32 = 2.0**-24

Blocks = Callable[[int, int], np.ndarray]


def as_float32(x: np.ndarray, metric: str) -> np.ndarray:
    """float32 rows for faiss; unit length for cosine (a zero vector stays zero)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if metric == "cosine":
        # Norms in float64 so each normalised component is off by about one rounding (the bound assumes it).
        norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
        inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0).astype(np.float32)
        x = x * inv[:, None]
    return x


def rounding_bound(q32: np.ndarray, xmax2: float, metric: str) -> np.ndarray:
    """Per query, a bound on |faiss distance - exact distance| for any database vector.

    faiss computes |q|^2 + |x|^2 - 2 q.x in float32: each d-term sum (norms, BLAS dot product) is off by at
    most d*u times its terms' magnitude, so the whole by (d+2)*u*(|q| + |x|)^2; ip is derived from it by
    subtracting |x|^2 and halving (the same bound holds). Doubled, for the higher-order terms and the inputs'
    rounding to float32. Cosine works on unit vectors (each normalised component off by ~2 roundings): twice
    the slack.
    """
    d = q32.shape[1]
    slack = 2.0 * (d + 8) * U32
    if metric == "cosine":
        return np.full(len(q32), 2 * slack)
    xmax = np.sqrt(xmax2 * (1 + slack))
    qn = np.sqrt(np.einsum("ij,ij->i", q32, q32, dtype=np.float64))
    return slack * (qn + xmax) ** 2


class _Candidates:
    """Each query's `want` smallest faiss distances so far, in one faiss max-heap kept across every block.

    faiss's own `knn` starts every call with empty heaps, so a database cut into B blocks pays B times the
    heap filling and sorting (measured: 27 % more time than one call over the whole database at 12 blocks).
    Here the distance tiles are computed by faiss's BLAS (`pairwise_L2sqr`, the same OpenMP pool as the heap
    updates: numpy's own BLAS threads would spin against it) and pushed into heaps that live for the pass.
    """

    def __init__(self, faiss: Any, nq: int, want: int) -> None:
        self.faiss = faiss
        self.dist = np.empty((nq, want), dtype=np.float32)
        self.pos = np.empty((nq, want), dtype=np.int64)
        heap = faiss.float_maxheap_array_t()
        heap.k, heap.nh = want, nq
        heap.val, heap.ids = faiss.swig_ptr(self.dist), faiss.swig_ptr(self.pos)
        heap.heapify()
        self.heap = heap

    def add_tile(self, tile: np.ndarray, first_pos: int, first_query: int) -> None:
        """Offer a (queries, database rows) tile of distances; its columns are positions first_pos, ..."""
        self.heap.addn(tile.shape[1], self.faiss.swig_ptr(tile), first_pos, first_query, tile.shape[0])

    def add_lists(self, dist: np.ndarray, pos: np.ndarray) -> None:
        """Offer per-query lists (nq, m) of distances and positions (GPU faiss's per-block results)."""
        dist, pos = np.ascontiguousarray(dist, np.float32), np.ascontiguousarray(pos, np.int64)
        f = self.faiss
        self.heap.addn_with_ids(dist.shape[1], f.swig_ptr(dist), f.swig_ptr(pos), dist.shape[1], 0, len(dist))

    def sorted(self) -> tuple[np.ndarray, np.ndarray]:
        """(distances, positions), each row nearest first (ties in faiss's heap order)."""
        self.heap.reorder()
        return self.dist, self.pos


def _tile_distances(
    faiss: Any, q32: np.ndarray, x32: np.ndarray, metric: str, xn32: np.ndarray, tile: np.ndarray
) -> None:
    """faiss's float32 |q - x|^2 for every (query, row) into `tile`, then in the metric's units up to a
    per-query constant (ip: |q|^2 - 2 q.x; cosine: twice the distance), so one max-heap serves every metric."""
    nq, nb = len(q32), len(x32)
    d = q32.shape[1]
    faiss.pairwise_L2sqr(d, nq, faiss.swig_ptr(q32), nb, faiss.swig_ptr(x32), faiss.swig_ptr(tile), d, d, nb)
    if metric == "ip":
        tile -= xn32[None, :]
    elif metric == "cosine":
        # A zero vector stays zero when normalised, but its cosine distance to anything is 1 (= 2 / 2 here).
        zero_x = xn32 == 0
        if zero_x.any():
            tile[:, zero_x] = 2.0


def candidate_pass(
    q32: np.ndarray,
    database_block: Blocks,
    n: int,
    want: int,
    metric: str,
    rows: int,
    tile_queries: int,
) -> tuple[np.ndarray, np.ndarray, float, bool]:
    """Each query's `want` best by faiss's distance over the database (nearest first, float64 in the metric's
    units, see `_to_metric_units`), their positions, the largest squared norm seen, and whether a GPU ran it."""
    faiss = require("faiss", extra="neighbors", feature="the exact kNN search")
    gpu = faiss.StandardGpuResources() if faiss.get_num_gpus() > 0 and want <= 2048 else None
    nq = len(q32)
    heap = _Candidates(faiss, nq, want)
    zero_q = np.einsum("ij,ij->i", q32, q32) == 0 if metric == "cosine" else np.zeros(nq, bool)
    tile = np.empty((min(tile_queries, nq), min(rows, n)), dtype=np.float32)
    xmax2 = 0.0
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        x32 = as_float32(database_block(start, stop), metric)
        xn = np.einsum("ij,ij->i", x32, x32, dtype=np.float64)
        xmax2 = max(xmax2, float(xn.max()))
        if gpu is not None:
            kind = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
            d, i = faiss.knn_gpu(gpu, q32, x32, min(want, stop - start), metric=kind)
            # In the heap's units (see _tile_distances): ip -> |q|^2 - 2 q.x, cosine -> 2 - 2 cos.
            if metric == "ip":
                d = np.einsum("ij,ij->i", q32, q32)[:, None] - 2 * d
            elif metric == "cosine":
                d = 2 - 2 * d
            heap.add_lists(d, i.astype(np.int64) + start)
            continue
        xn32 = xn.astype(np.float32)
        for qs in range(0, nq, len(tile)):
            qe = min(qs + len(tile), nq)
            t = (
                tile[: qe - qs, : stop - start]
                if stop - start == tile.shape[1]
                else np.empty((qe - qs, stop - start), np.float32)
            )
            _tile_distances(faiss, q32[qs:qe], x32, metric, xn32, t)
            heap.add_tile(t, start, qs)
        del x32
    dist, pos = heap.sorted()
    if zero_q.any():
        # Every distance of a zero query is exactly 1: its nearest are the first positions (ties by position).
        dist[zero_q] = 2.0
        pos[zero_q] = np.arange(want)
    return _to_metric_units(dist, q32, metric), pos, xmax2, gpu is not None


def _to_metric_units(dist: np.ndarray, q32: np.ndarray, metric: str) -> np.ndarray:
    """The heap's float32 values as faiss distances in the metric's units (float64, exact conversion steps)."""
    d64 = dist.astype(np.float64)
    if metric == "cosine":
        return d64 / 2
    if metric == "ip":
        return (d64 - np.einsum("ij,ij->i", q32, q32, dtype=np.float64)[:, None]) / 2
    return d64
