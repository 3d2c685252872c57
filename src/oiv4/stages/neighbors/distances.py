"""The exact distance of the ground truth: one float64 formula for the search and for any brute force."""

from __future__ import annotations

import numpy as np

METRICS = ("l2", "ip", "cosine")


def exact_distances(q: np.ndarray, x: np.ndarray, metric: str) -> np.ndarray:
    """float64 distances between rows of q and rows of x (broadcast over leading axes, reduced over the last).

    The one formula for the search and any brute force, so equal inputs give equal bits.
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
    nq = np.sqrt(np.multiply(q, q, dtype=f64).sum(axis=-1))
    nx = np.sqrt(np.multiply(x, x, dtype=f64).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where((nq > 0) & (nx > 0), dot / (nq * nx), 0.0)
    return 1.0 - cos
