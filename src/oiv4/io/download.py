"""Download one URL to a local file, resumably: the synchronous face of `oiv4.io.ranged` for HTTP(S).

The metadata stage uses it for the two CSVs; the on-disk state (`<name>.part` + `<name>.part.json`) is
the same one the archive stage leaves, so both resume the same way. The event loop runs inside the
call: callers stay synchronous, and one loop per file costs nothing next to a multi-GB transfer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from oiv4.contracts.errors import DownloadError, TransferError
from oiv4.contracts.limits import above, at_least
from oiv4.contracts.setting import setting
from oiv4.io.http import HttpRanges, HttpTimeouts, NetworkSettings, make_session
from oiv4.io.ranged import RangedSettings, download_ranged
from oiv4.io.retry import RetryPolicy, retry_async

ProgressFn = Callable[[int, int | None], None]  # (bytes so far, total or None)


@dataclass(frozen=True)
class DownloadSettings:
    connect_timeout_s: float = setting(30.0, help="Seconds to wait for a connection.", flag="--connect-timeout")
    #: Big files have no total deadline: only silence ends an attempt.
    read_timeout_s: float = setting(
        120.0, help="Longest silence between two chunks, in seconds.", flag="--read-timeout"
    )
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(attempts=8))
    part_size: int = setting(64 << 20, help="Size of each ranged request, MiB.", flag="--part-size-mb", scale=1 << 20)
    #: Metadata hosts (GCS) serve ranges, so a big CSV comes in parallel parts.
    connections: int = setting(4, help="Ranged requests in flight at once.")
    checkpoint_s: float = setting(
        2.0, help="Seconds between download checkpoints (what a kill can lose).", flag="--checkpoint"
    )
    allow_private_networks: bool = setting(
        False, help="Also download from loopback, private and link-local addresses (a mirror on your network)."
    )
    ca_bundle: str | None = setting(
        None, help="PEM file of extra CA certificates, e.g. for corporate TLS interception.", default_text="none"
    )

    def __post_init__(self) -> None:
        above(self, 0, "connect_timeout_s", "read_timeout_s")
        at_least(self, 1, "part_size", "connections")
        at_least(self, 0, "checkpoint_s")


async def _download(url: str, dest: Path, settings: DownloadSettings, progress: ProgressFn | None) -> int:
    timeouts = HttpTimeouts(settings.connect_timeout_s, settings.read_timeout_s)
    network = NetworkSettings(settings.allow_private_networks, settings.ca_bundle)
    async with make_session(timeouts, network=network) as session:
        http = HttpRanges(session)
        obj = await retry_async(lambda _n: http.stat(url, dest.name), settings.retry)
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if progress:
                progress(done, obj.size)

        ranged = RangedSettings(settings.part_size, settings.connections, settings.retry, settings.checkpoint_s)
        await download_ranged(http, obj, dest, ranged, advance)
        return obj.size


def download_file(
    url: str, dest: Path, settings: DownloadSettings | None = None, progress: ProgressFn | None = None
) -> int:
    """Download `url` to `dest` (resuming a previous `.part`), returning the final size in bytes.

    Raises `DownloadError` naming the URL and the cause; a refused connection or unknown host fails on
    the first attempt.
    """
    try:
        return asyncio.run(_download(url, dest, settings or DownloadSettings(), progress))
    except TransferError as exc:
        text = str(exc) if url in str(exc) else f"{url}: {exc}"
        raise DownloadError(text, exc.attempts) from exc
