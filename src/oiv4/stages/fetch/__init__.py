"""The URL sets (train, extended_targets): download each OriginalURL, verify size and MD5, decode,
rotate, shrink to fit 1024x1024 and store as JPEG, one ledger row per image, resumable at any moment.

    from oiv4.stages.fetch import FetchSettings, fetch_set
    from oiv4.io.storage import Storage
    summary = fetch_set(Storage("data"), "train", FetchSettings(layout="folder"))

Modules: `settings` (what can be tuned), `http` (the Flickr-aware downloader), `transform` (bytes ->
stored JPEG), `shard` (`run_fetch_shard`, the picklable unit any executor runs), `run` (`fetch_set`),
`progress` (live counts read from the ledger).
"""

from __future__ import annotations

from oiv4.stages.fetch.progress import FetchProgress
from oiv4.stages.fetch.run import FetchError, FetchSummary, fetch_set
from oiv4.stages.fetch.settings import FetchSettings, HttpSettings, TransformSettings
from oiv4.stages.fetch.shard import FetchAborted, run_fetch_shard

__all__ = [
    "FetchAborted",
    "FetchError",
    "FetchProgress",
    "FetchSettings",
    "FetchSummary",
    "HttpSettings",
    "TransformSettings",
    "fetch_set",
    "run_fetch_shard",
]
