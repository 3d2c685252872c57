"""features, neighbors and estimate are stages that never import each other: what they must agree on (the
default model, its dimension, the stored dtypes, the ground-truth job's k and memory) is one fact each."""

from __future__ import annotations

from oiv4.contracts.vectors import DEFAULT_DTYPE, DEFAULT_K, DEFAULT_MEMORY_GB, DEFAULT_MODEL, VECTOR_DTYPES
from oiv4.stages.estimate.features import DIM, MODEL
from oiv4.stages.estimate.settings import EstimateSettings
from oiv4.stages.features.models import MODELS
from oiv4.stages.features.settings import FeaturesSettings
from oiv4.stages.neighbors.settings import NeighborsSettings


def test_the_three_similarity_commands_default_to_the_same_model_dtype_k_and_memory():
    features, neighbors, estimate = FeaturesSettings(), NeighborsSettings(), EstimateSettings()
    assert features.model == neighbors.model == estimate.model == MODEL == DEFAULT_MODEL
    assert features.dtype == estimate.dtype == DEFAULT_DTYPE
    assert (neighbors.k, neighbors.memory_gb) == (estimate.k, estimate.memory_gb) == (DEFAULT_K, DEFAULT_MEMORY_GB)


def test_estimates_default_dimension_is_the_registered_models():
    assert MODELS[DEFAULT_MODEL].dim == DIM


def test_every_stored_dtype_has_its_element_size():
    import numpy as np

    assert {name: np.dtype(name).itemsize for name in VECTOR_DTYPES} == VECTOR_DTYPES
