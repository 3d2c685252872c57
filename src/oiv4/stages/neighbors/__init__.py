"""Exact nearest-neighbour ground truth over memory-mapped feature shards (`oiv4 neighbors`)."""

from oiv4.contracts.errors import DamagedFeaturesError, NoFeaturesError
from oiv4.io.vector_shards import FeatureStore, open_features
from oiv4.stages.neighbors.distances import METRICS, exact_distances
from oiv4.stages.neighbors.search import SearchSizes, SearchStats, knn_block, plan_sizes
from oiv4.stages.neighbors.settings import NeighborsSettings

__all__ = [
    "METRICS",
    "DamagedFeaturesError",
    "FeatureStore",
    "NeighborsSettings",
    "NoFeaturesError",
    "SearchSizes",
    "SearchStats",
    "exact_distances",
    "knn_block",
    "open_features",
    "plan_sizes",
]
