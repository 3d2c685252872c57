"""The downloader against a small hostile server started on 127.0.0.1: redirects, caps, retries, resets."""

from __future__ import annotations

import asyncio
import email.utils
import time
from dataclasses import replace

from aiohttp import web

from oiv4.contracts.transfer import TransferSettings
from oiv4.stages.fetch import FETCH_TRANSFER
from oiv4.stages.fetch.http import HttpClient, parse_retry_after, status_outcome
from oiv4.stages.fetch.settings import HttpSettings

BODY = b"\xff\xd8" + b"x" * 50_000 + b"\xff\xd9"


def _app(hits: dict[str, int]) -> web.Application:
    async def handler(request: web.Request) -> web.StreamResponse:
        path = request.path
        hits[path] = hits.get(path, 0) + 1
        if path == "/ok":
            return web.Response(body=BODY, content_type="image/jpeg")
        if path == "/to-ftp":
            raise web.HTTPFound("ftp://example.com/photo.jpg")
        if path == "/to-file":
            raise web.HTTPMovedPermanently("file:///etc/passwd")
        if path == "/relative":
            raise web.HTTPFound("/ok")
        if path == "/loop":
            raise web.HTTPFound("/loop")
        if path == "/no-location":
            return web.Response(status=302)
        if path == "/gone-card":
            raise web.HTTPFound("https://s.yimg.com/pw/images/en-us/photo_unavailable_l.png")
        if path == "/date-retry":
            if hits[path] == 1:
                when = email.utils.formatdate(time.time() + 1, usegmt=True)
                return web.Response(status=429, headers={"Retry-After": when})
            return web.Response(body=BODY)
        if path == "/big-declared":
            resp = web.StreamResponse(headers={"Content-Length": str(10 << 20)})
            await resp.prepare(request)
            await resp.write(b"x" * 1000)
            return resp
        if path == "/big-chunked":  # no Content-Length: the cap must apply while streaming
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for _ in range(100):
                await resp.write(b"y" * 10_000)
            await resp.write_eof()
            return resp
        if path == "/reset":
            request.transport.close()
            return web.Response(body=b"")
        if path == "/wrong-length":
            return web.Response(body=BODY[:-10])
        return web.Response(status=int(path.strip("/")) if path.strip("/").isdigit() else 404)

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handler)
    return app


async def _serve_and_fetch(
    requests: list[tuple[str, int | None]], transfer: TransferSettings, http: HttpSettings
) -> tuple[list, dict]:
    hits: dict[str, int] = {}
    runner = web.AppRunner(_app(hits), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with HttpClient(transfer, http) as client:
            results = [await client.fetch(base + path, size) for path, size in requests]
    finally:
        await runner.cleanup()
    return results, hits


def _fetch(requests, **http):
    transfer = replace(FETCH_TRANSFER, allow_private_networks=True, attempts=3, backoff_s=0.01, deadline_s=5.0)
    return asyncio.run(_serve_and_fetch(requests, transfer, HttpSettings(**http)))


def test_redirects_are_followed_only_to_http_and_never_forever():
    results, _ = _fetch([(p, None) for p in ("/relative", "/to-ftp", "/to-file", "/loop", "/no-location")])
    ok, ftp, file, loop, none = results
    assert ok.outcome == "ok" and ok.body == BODY and ok.final_url.endswith("/ok")
    assert ftp.outcome == file.outcome == loop.outcome == none.outcome == "bad_redirect"
    assert "ftp://" in ftp.reason and "file://" in file.reason
    assert "more than 5 redirects" in loop.reason and "Location" in none.reason


def test_the_placeholder_redirect_is_recognised_without_fetching_the_card():
    (card,), _ = _fetch([("/gone-card", None)])
    assert card.outcome == "placeholder" and "photo_unavailable_l.png" in card.reason
    assert card.bytes_downloaded == 0 and card.attempts == 1


def test_status_codes_map_to_outcomes_and_only_transient_ones_are_retried():
    results, hits = _fetch([("/403", None), ("/404", None), ("/410", None), ("/500", None), ("/503", None)])
    assert [r.outcome for r in results] == ["http_403", "http_404", "http_410", "http_5xx", "http_5xx"]
    assert [hits[p] for p in ("/403", "/404", "/410", "/500", "/503")] == [1, 1, 1, 3, 3]
    assert "after 3 attempts" in results[3].reason
    assert status_outcome(429) == "http_429" and status_outcome(502) == "http_5xx"


def test_retry_after_as_an_http_date_is_honoured():
    (r,), hits = _fetch([("/date-retry", None)])
    assert r.outcome == "ok" and r.attempts == 2 and hits["/date-retry"] == 2
    now = 1_700_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("7") == 7.0 and parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_byte_cap_refuses_declared_and_streamed_oversize_bodies():
    (declared, chunked, fine), _ = _fetch(
        [("/big-declared", None), ("/big-chunked", None), ("/ok", None)], max_bytes=200_000
    )
    assert declared.outcome == "too_large" and declared.bytes_downloaded == 0 and "Content-Length" in declared.reason
    assert chunked.outcome == "too_large" and 200_000 < chunked.bytes_downloaded <= 200_000 + (1 << 18)
    assert fine.outcome == "ok"


def test_a_wrong_content_length_ends_early_and_resets_are_connection_errors():
    (wrong, reset), hits = _fetch([("/wrong-length", len(BODY)), ("/reset", None)])
    assert wrong.outcome == "size_mismatch" and wrong.bytes_downloaded == 0
    # retried (aiohttp itself also re-sends once on a dropped keep-alive connection), then given up
    assert reset.outcome == "connection_error" and reset.attempts == 3 and hits["/reset"] >= 3


def test_non_http_urls_are_not_requested():
    async def run():
        async with HttpClient(replace(FETCH_TRANSFER, allow_private_networks=True)) as client:
            return await client.fetch("file:///etc/passwd")

    r = asyncio.run(run())
    assert r.outcome == "connection_error" and "not an http(s) URL" in r.reason and r.attempts == 0
