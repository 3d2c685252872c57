"""`oiv4 features`: one vector per stored image, per model, written where embedding-reader reads it."""

from oiv4.contracts.errors import FeaturesError
from oiv4.stages.features.models import MODELS, ModelSpec
from oiv4.stages.features.settings import FeaturesSettings
from oiv4.stages.features.stage import FEATURES, FeaturesStage, FeaturesSummary

__all__ = ["FEATURES", "MODELS", "FeaturesError", "FeaturesSettings", "FeaturesStage", "FeaturesSummary", "ModelSpec"]
