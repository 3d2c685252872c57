"""Resumable single-file HTTP download: the one way big files (metadata CSVs, archives over https) come in.

Bytes go to `<name>.part` beside the final name; a sidecar `<name>.part.json` remembers the remote's
ETag/size so a resumed download asks `If-Range` and restarts cleanly if the remote changed. Only a
file whose size equals the remote's length is renamed into place, so a partial file never looks complete.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from oiv4.contracts.errors import SourceError
from oiv4.contracts.setting import setting

CHUNK = 1 << 20

ProgressFn = Callable[[int, int | None], None]  # (bytes so far, total or None)


class DownloadError(RuntimeError, SourceError):
    """A download that cannot complete; the message says which URL and why."""


@dataclass(frozen=True)
class DownloadSettings:
    connect_timeout_s: float = setting(30.0, help="Seconds to wait for a connection.", flag="--connect-timeout")
    #: Big files have no total deadline: only silence ends an attempt.
    read_timeout_s: float = setting(120.0, help="Longest silence between two chunks, in seconds.", flag="--read-timeout")
    attempts: int = setting(8, help="Attempts per file; a retry resumes where the last one stopped.")
    backoff_s: float = setting(1.0, help="Base of the exponential backoff between attempts, in seconds.", flag="--backoff")


async def _download(url: str, dest: Path, settings: DownloadSettings, progress: ProgressFn | None) -> int:
    part = dest.with_name(dest.name + ".part")
    meta_path = dest.with_name(dest.name + ".part.json")
    dest.parent.mkdir(parents=True, exist_ok=True)
    timeout = aiohttp.ClientTimeout(total=None, connect=settings.connect_timeout_s, sock_read=settings.read_timeout_s)
    last_error: Exception | None = None
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for attempt in range(settings.attempts):
            meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
            have = part.stat().st_size if part.exists() else 0
            headers = {}
            if have and meta.get("etag"):
                headers = {"Range": f"bytes={have}-", "If-Range": meta["etag"]}
            elif have:
                headers = {"Range": f"bytes={have}-"}
            try:
                async with session.get(url, headers=headers) as resp:
                    if resp.status == 416:
                        if have and meta.get("size") == have:
                            total = have  # already complete on disk
                        else:  # the partial file is longer than the remote: it is not ours, start over
                            part.unlink(missing_ok=True)
                            meta_path.unlink(missing_ok=True)
                            raise DownloadError(f"{url}: stale partial download discarded")
                    elif resp.status in (200, 206):
                        if resp.status == 200:
                            have = 0  # server ignored Range (or remote changed): start over
                            total = resp.content_length
                        else:
                            total = _total_from_content_range(resp.headers.get("Content-Range")) or (
                                have + (resp.content_length or 0)
                            )
                        meta_path.write_text(json.dumps({"etag": resp.headers.get("ETag"), "size": total, "url": url}))
                        with open(part, "r+b" if have else "wb") as fh:
                            fh.seek(have)
                            fh.truncate()
                            async for chunk in resp.content.iter_chunked(CHUNK):
                                fh.write(chunk)
                                have += len(chunk)
                                if progress:
                                    progress(have, total)
                    elif resp.status in (429, 500, 502, 503, 504):
                        raise DownloadError(f"{url}: HTTP {resp.status}")
                    else:
                        raise DownloadError(f"{url}: HTTP {resp.status} {resp.reason}; not retrying")
                if total is not None and have != total:
                    raise DownloadError(f"{url}: got {have:,} of {total:,} bytes")
                os.replace(part, dest)
                meta_path.unlink(missing_ok=True)
                return have
            except DownloadError as exc:
                if "not retrying" in str(exc):
                    raise
                last_error = exc
            except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
                last_error = exc
            await asyncio.sleep(min(30.0, settings.backoff_s * 2**attempt))
    raise DownloadError(f"{url}: gave up after {settings.attempts} attempts: {type(last_error).__name__}: {last_error}")


def _total_from_content_range(value: str | None) -> int | None:
    # "bytes 100-199/1000" -> 1000
    if not value or "/" not in value:
        return None
    tail = value.rsplit("/", 1)[1]
    return int(tail) if tail.isdigit() else None


def download_file(
    url: str, dest: Path, settings: DownloadSettings | None = None, progress: ProgressFn | None = None
) -> int:
    """Download `url` to `dest` (resuming a previous `.part`), returning the final size in bytes."""
    return asyncio.run(_download(url, dest, settings or DownloadSettings(), progress))
