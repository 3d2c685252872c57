"""Held out means held out: exact and near-duplicate images within and across the four sets."""

from oiv4.stages.dedup.pairs import DEFAULT_THRESHOLD, PAIRS_SCHEMA, exclusions, find_duplicates
from oiv4.stages.dedup.run import DedupSettings, DedupSummary, read_pairs, run_dedup

__all__ = [
    "DEFAULT_THRESHOLD",
    "PAIRS_SCHEMA",
    "DedupSettings",
    "DedupSummary",
    "exclusions",
    "find_duplicates",
    "read_pairs",
    "run_dedup",
]
