"""`oiv4 hash`: perceptual hash and checksum for stored images recorded before fetch and archives took them."""

from oiv4.contracts.errors import HashError
from oiv4.stages.hash.settings import HashSettings
from oiv4.stages.hash.stage import HASH, HashStage, HashSummary

__all__ = ["HASH", "HashError", "HashSettings", "HashStage", "HashSummary"]
