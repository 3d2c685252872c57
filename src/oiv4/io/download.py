"""Download one URL to a local file, resumably: the synchronous face of `oiv4.io.ranged` for HTTP(S).

The metadata stage uses it for the two CSVs; the on-disk state (`<name>.part` + `<name>.part.json`) is
the same one the archive stage leaves, so both resume the same way. The event loop runs inside the
call: callers stay synchronous, and one loop per file costs nothing next to a multi-GB transfer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from oiv4.contracts.errors import DownloadError, TransferError
from oiv4.contracts.transfer import TransferSettings
from oiv4.io.http import HttpRanges, make_session
from oiv4.io.ranged import download_ranged
from oiv4.io.retry import retry_async

ProgressFn = Callable[[int, int | None], None]  # (bytes so far, total or None)


async def _download(url: str, dest: Path, settings: TransferSettings, progress: ProgressFn | None) -> int:
    async with make_session(settings) as session:
        http = HttpRanges(session)
        obj = await retry_async(lambda _n: http.stat(url, dest.name), settings)
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if progress:
                progress(done, obj.size)

        await download_ranged(http, obj, dest, settings, advance)
        return obj.size


def download_file(
    url: str, dest: Path, settings: TransferSettings | None = None, progress: ProgressFn | None = None
) -> int:
    """Download `url` to `dest` (resuming a previous `.part`), returning the final size in bytes.

    Raises `DownloadError` naming the URL and the cause; a refused connection or unknown host fails on
    the first attempt.
    """
    try:
        return asyncio.run(_download(url, dest, settings or TransferSettings(), progress))
    except TransferError as exc:
        text = str(exc) if url in str(exc) else f"{url}: {exc}"
        raise DownloadError(text, exc.attempts) from exc
