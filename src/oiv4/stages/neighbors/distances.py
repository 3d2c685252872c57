"""The exact distance of the ground truth: one float64 formula for the search and for any brute force."""

from __future__ import annotations

import numpy as np

METRICS = ("l2", "ip", "cosine")


def row_norms(v: np.ndarray) -> np.ndarray:
    """float64 Euclidean norms of the rows of v: the expression `exact_distances` uses for cosine, so norms
    computed once ahead and passed in give the same bits as computing them per pair."""
    return np.sqrt(np.multiply(v, v, dtype=np.float64).sum(axis=-1))


def exact_distances(
    q: np.ndarray,
    x: np.ndarray,
    metric: str,
    q_norms: np.ndarray | None = None,
    x_norms: np.ndarray | None = None,
) -> np.ndarray:
    """float64 distances between rows of q and rows of x (broadcast over leading axes, reduced over the last).

    The one formula for the search and any brute force, so equal inputs give equal bits. Cosine may be given
    the rows' `row_norms` (a query's or a database row's is then computed once, not once per pair).
    """
    # Elementwise steps straight from the stored dtype into float64 (conversion is exact), then numpy's
    # pairwise sum along each row: the same bits whatever the leading shape, with no float64 copies of the inputs.
    f64 = np.float64
    if metric == "l2":
        diff = np.subtract(q, x, dtype=f64)
        np.multiply(diff, diff, out=diff)
        return diff.sum(axis=-1)
    dot = np.multiply(q, x, dtype=f64).sum(axis=-1)
    if metric == "ip":
        return -dot
    nq = row_norms(q) if q_norms is None else q_norms
    nx = row_norms(x) if x_norms is None else x_norms
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where((nq > 0) & (nx > 0), dot / (nq * nx), 0.0)
    return 1.0 - cos
