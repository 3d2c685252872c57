"""The aiohttp server in front of a `Universe`, runnable in a background thread or a separate process.

Routes (all GET and HEAD):
- `/openimages/2018_04/image_ids_and_rotation.csv`, `/openimages/2018_04/train/train-images-boxable-with-rotation.csv`
  (rendered with the base URL the client used, so OriginalURLs point back at this server);
- each row's OriginalURL path (`/farm<f>/<server>/<photo>_<secret>_o.<ext>`) and Thumbnail300KURL path
  (`/c1/<f>/<server>/<photo>_<secret>_z.jpg`), with the row's misbehaviour;
- `/pw/images/en-us/photo_unavailable.png` and `..._l.png`, the placeholder removed photos redirect to;
- `/tar/train_<x>.tar.gz`, `/tar/validation.tar.gz` and single CVDF images `/train/<id>.jpg`, `/validation/<id>.jpg`,
  `/test/<id>.jpg`.
CSVs, archives, originals and CVDF images carry Content-Length, ETag and Accept-Ranges and answer
`Range: bytes=a-b` / `bytes=a-` / `bytes=-n` with 206 (416 when out of range; `If-Range` honoured).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from oiv4_mirror.images import PLACEHOLDER_PATHS
from oiv4_mirror.universe import (
    ARCHIVE_PREFIX,
    BOXABLE_CSV_PATH,
    FULL_CSV_PATH,
    GONE_PHOTO,
    ImageInfo,
    Misbehaviour,
    Universe,
    UniverseSpec,
)

LAST_MODIFIED = "Tue, 01 May 2018 00:00:00 GMT"
UNIVERSE_KEY = web.AppKey("universe", Universe)


class RequestCounter:
    """Requests seen per URL path by one server instance (drives the 429/503-then-200 rows)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def hit(self, path: str) -> int:
        """Count one more request for `path`; returns the new count (1 for the first request)."""
        with self._lock:
            self._counts[path] = self._counts.get(path, 0) + 1
            return self._counts[path]

    def count(self, path: str) -> int:
        with self._lock:
            return self._counts.get(path, 0)


COUNTER_KEY = web.AppKey("counter", RequestCounter)


def _parse_range(header: str, total: int) -> tuple[int, int] | str | None:
    """(start, end inclusive) of a single `bytes=` range, None if unsatisfiable, "ignore" if not parseable.

    Multi-range and malformed headers are ignored (the full body is served), as RFC 9110 allows.
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return "ignore"
    first, sep, last = spec.strip().partition("-")
    if not sep:
        return "ignore"
    try:
        if not first:  # suffix: the last N bytes
            n = int(last)
            if n <= 0:
                return None
            return max(0, total - n), total - 1
        start = int(first)
        end = int(last) if last else total - 1
    except ValueError:
        return "ignore"
    if start < 0 or start >= total or end < start:
        return None
    return start, min(end, total - 1)


class _Body:
    """Bytes in memory or a cache file, read slice by slice so a Range on a big archive stays cheap."""

    def __init__(self, data: bytes | None = None, path: Path | None = None) -> None:
        self.data, self.path = data, path
        self.size = len(data) if data is not None else os.path.getsize(path)  # type: ignore[arg-type]

    def read(self, start: int, end: int) -> bytes:
        if self.data is not None:
            return self.data[start : end + 1]
        with open(self.path, "rb") as fh:  # type: ignore[arg-type]
            fh.seek(start)
            return fh.read(end - start + 1)


def _etag(*parts: object) -> str:
    return '"' + hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()[:24] + '"'


async def _serve(
    request: web.Request, body: _Body, content_type: str, etag: str, rate: float = 0.0
) -> web.StreamResponse:
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Last-Modified": LAST_MODIFIED}
    total = body.size
    header = request.headers.get("Range")
    if header and request.headers.get("If-Range", etag) != etag:
        header = None  # the client's partial copy is of another version: send it all
    start, end, status = 0, total - 1, 200
    if header:
        parsed = _parse_range(header, total)
        if parsed is None:
            headers["Content-Range"] = f"bytes */{total}"
            return web.Response(status=416, headers=headers)
        if parsed != "ignore":
            start, end = parsed  # type: ignore[misc]
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{total}"
    if request.method == "HEAD":
        headers["Content-Length"] = str(end - start + 1)
        return web.Response(status=status, headers=headers, content_type=content_type)
    data = body.read(start, end) if end >= start else b""
    if rate <= 0:
        return web.Response(status=status, body=data, headers=headers, content_type=content_type)
    return await _throttled(request, data, status, headers, content_type, rate)


async def _throttled(
    request: web.Request, data: bytes, status: int, headers: dict[str, str], content_type: str, rate: float
) -> web.StreamResponse:
    """Send `data` at about `rate` bytes/s, like a far-away photo host (one connection's share)."""
    resp = web.StreamResponse(status=status, headers={**headers, "Content-Type": content_type})
    resp.content_length = len(data)
    await resp.prepare(request)
    chunk = max(1024, int(rate / 20))  # ~20 writes per second
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        for offset in range(0, len(data), chunk):
            await resp.write(data[offset : offset + chunk])
            ahead = began + (offset + chunk) / rate - loop.time()
            if ahead > 0:
                await asyncio.sleep(ahead)
        await resp.write_eof()
    except ConnectionError:  # the client went away
        request.protocol.force_close()
    return resp


async def _blocking(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a universe call (which may render pixels or build an archive) off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def _origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _status(code: int, text: str) -> web.Response:
    return web.Response(status=code, text=f"<html><body><h1>{code} {text}</h1></body></html>", content_type="text/html")


async def _original(request: web.Request, universe: Universe, info: ImageInfo, thumbnail: bool) -> web.StreamResponse:
    spec = universe.spec
    bad = info.misbehaviour
    path = request.path
    if spec.latency_seconds > 0:
        await asyncio.sleep(spec.latency_seconds)
    if thumbnail and bad not in GONE_PHOTO:
        data = await _blocking(universe.thumbnail, info.image_id)
        return await _serve(
            request, _Body(data), "image/jpeg", _etag(spec.cache_key(), path, len(data)), spec.bytes_per_second
        )

    if bad is Misbehaviour.placeholder:
        target = PLACEHOLDER_PATHS[info.index % len(PLACEHOLDER_PATHS)]
        raise web.HTTPFound(_origin(request) + target)
    if bad is Misbehaviour.forbidden:
        return _status(403, "Forbidden")
    if bad is Misbehaviour.not_found:
        return _status(404, "Not Found")
    if bad is Misbehaviour.gone:
        return _status(410, "Gone")
    if bad is Misbehaviour.server_error:
        return _status(500, "Internal Server Error")
    transient = bad in (Misbehaviour.rate_limited, Misbehaviour.unavailable)
    if transient and request.app[COUNTER_KEY].hit(path) <= spec.transient_failures:
        code = 429 if bad is Misbehaviour.rate_limited else 503
        resp = _status(code, "Too Many Requests" if code == 429 else "Service Unavailable")
        resp.headers["Retry-After"] = str(spec.retry_after)
        return resp

    file = await _blocking(universe.original_path, info.image_id)
    _, md5 = universe.original_meta(info.image_id)
    body = _Body(path=file)
    content_type = "text/html" if bad is Misbehaviour.wrong_content_type else info.kind.content_type
    etag = '"' + md5 + '"'

    if bad is Misbehaviour.slow_ok:
        await asyncio.sleep(spec.slow_ok_seconds)
    if request.method == "GET" and bad in (Misbehaviour.truncated, Misbehaviour.slow_timeout):
        return await _misbehaving_body(request, body, content_type, bad, spec)
    return await _serve(request, body, content_type, etag, spec.bytes_per_second)


async def _misbehaving_body(
    request: web.Request, body: _Body, content_type: str, bad: Misbehaviour, spec: UniverseSpec
) -> web.StreamResponse:
    """Promise the whole body in Content-Length, then send half and hang up, or trickle it slowly."""
    resp = web.StreamResponse(headers={"Content-Type": content_type})
    resp.content_length = body.size
    data = body.read(0, body.size - 1)
    await resp.prepare(request)
    try:
        if bad is Misbehaviour.truncated:
            await resp.write(data[: body.size // 2])
            await asyncio.sleep(0.05)  # let the half reach the socket before the reset
            # Hang up: aiohttp then finds the transport closed and neither pads nor logs the short body.
            request.protocol.force_close()
            if request.transport is not None:
                request.transport.close()
            return resp
        steps = max(1, round(spec.trickle_seconds / 0.1))
        chunk = max(1, -(-body.size // steps))
        for offset in range(0, body.size, chunk):
            await resp.write(data[offset : offset + chunk])
            await asyncio.sleep(spec.trickle_seconds / steps)
        await resp.write_eof()
    except ConnectionError:
        # The client gave up (its deadline passed): nothing else to send, and nothing worth logging.
        request.protocol.force_close()
    return resp


async def _handle(request: web.Request) -> web.StreamResponse:
    universe = request.app[UNIVERSE_KEY]
    path = request.path
    spec = universe.spec
    if path in (FULL_CSV_PATH, BOXABLE_CSV_PATH):
        render = universe.full_csv if path == FULL_CSV_PATH else universe.boxable_csv
        data = await _blocking(render, _origin(request))
        return await _serve(request, _Body(data), "text/csv", _etag(hashlib.md5(data).hexdigest()))
    if path.startswith(ARCHIVE_PREFIX + "/"):
        name = path[len(ARCHIVE_PREFIX) + 1 :]
        if name not in universe.archive_names():
            return _status(404, "Not Found")
        file = await _blocking(universe.archive_path, name)
        body = _Body(path=file)
        return await _serve(request, body, "application/x-gzip", _etag(spec.cache_key(), name, body.size))
    if path in PLACEHOLDER_PATHS:
        data = await _blocking(universe.placeholder, path)
        return await _serve(request, _Body(data), "image/png", _etag(path, len(data)))
    found = universe.resolve(path)
    if found is not None:
        what, info = found
        return await _original(request, universe, info, thumbnail=what == "thumbnail")
    cvdf = _cvdf_image(universe, path)
    if cvdf is not None:
        data = await _blocking(universe.small_image, cvdf)
        return await _serve(request, _Body(data), "image/jpeg", _etag(spec.cache_key(), path, len(data)))
    return _status(404, "Not Found")


def _cvdf_image(universe: Universe, path: str) -> str | None:
    """The ImageID of a CVDF single-image path (`/train/<id>.jpg`: boxable rows only), else None."""
    folder, _, name = path.strip("/").partition("/")
    image_id = name.removesuffix(".jpg")
    if not name.endswith(".jpg") or "/" in name:
        return None
    try:
        info = universe.info(image_id)
    except KeyError:
        return None
    if folder == info.subset and (info.subset != "train" or info.boxable):
        return image_id
    return None


def make_app(universe: Universe) -> web.Application:
    """The aiohttp application serving `universe`, with its own request counters."""
    app = web.Application()
    app[UNIVERSE_KEY] = universe
    app[COUNTER_KEY] = RequestCounter()
    app.router.add_route("GET", "/{tail:.*}", _handle)  # GET routes answer HEAD too (allow_head)
    app.router.add_route("HEAD", "/{tail:.*}", _handle)
    return app
