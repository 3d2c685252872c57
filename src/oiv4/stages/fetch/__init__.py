"""The URL sets (train, extended_targets): download each OriginalURL, verify size and MD5, decode,
rotate, shrink to fit 1024x1024 and store as JPEG, one ledger row per image, resumable at any moment.

    from oiv4.run.fetch import fetch_set
    from oiv4.stages.fetch import FetchSettings
    from oiv4.io.storage import Storage
    summary = fetch_set(Storage("data"), "train", FetchSettings(layout="folder"))

Modules: `settings` (what can be tuned), `http` (the Flickr-aware downloader), `transform` (bytes ->
stored JPEG), `rows` (manifest slices, checks of one original), `shard` (`run_fetch_shard`, the
picklable unit any executor runs), `pipeline` (one row -> its ledger row), `recovery` (files found at their
final path), `recording` (rows counted and flushed as ledger parts), `disk` (stopping when the root is full),
`stage` (`FETCH`, the stage the run layer's `fetch_set` runs),
`progress` (live counts read from the ledger).
"""

from __future__ import annotations

from oiv4.contracts.errors import FetchAborted, FetchError
from oiv4.stages.fetch.progress import FetchProgress
from oiv4.stages.fetch.settings import FETCH_TRANSFER, FetchSettings, HttpSettings, TransformSettings
from oiv4.stages.fetch.shard import run_fetch_shard
from oiv4.stages.fetch.stage import FETCH, FetchStage, FetchSummary

__all__ = [
    "FETCH",
    "FETCH_TRANSFER",
    "FetchAborted",
    "FetchError",
    "FetchProgress",
    "FetchSettings",
    "FetchStage",
    "FetchSummary",
    "HttpSettings",
    "TransformSettings",
    "run_fetch_shard",
]
