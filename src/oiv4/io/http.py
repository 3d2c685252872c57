"""HTTP(S) for every transfer: one way to open an aiohttp session and one sorting of its failures.

Sessions honour HTTP(S)_PROXY / NO_PROXY (`trust_env=True`), so metadata, archives and image fetches go
through the same proxy. Every session connects through the network guard (`oiv4.io.net_guard`: no loopback,
private or reserved address unless `allow_private_networks`) and verifies TLS against the default trust store
(which honours SSL_CERT_FILE / SSL_CERT_DIR) plus an optional `ca_bundle` (e.g. a corporate interception CA). `HttpRanges` is the HTTP side of a resumable ranged download (`oiv4.io.ranged`):
HEAD for size/ETag/Last-Modified, then `Range` GETs made conditional on what HEAD saw.
"""

from __future__ import annotations

import asyncio
import errno
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from oiv4.contracts.errors import (
    BlockedAddress,
    BlockedError,
    ChangedError,
    NotFoundError,
    TlsError,
    TransferError,
    TransientError,
    UnreachableError,
    UsageError,
)
from oiv4.contracts.transfer import TransferSettings
from oiv4.io.net_guard import guarded_connector
from oiv4.io.ranged import RemoteObject
from oiv4.io.retry import TRANSIENT_STATUS, parse_retry_after

READ_CHUNK = 1 << 20


def tls_reason(exc: BaseException) -> str:
    """One line on a failed TLS handshake, with the way out."""
    cert = getattr(exc, "certificate_error", None)
    what = getattr(cert, "verify_message", None) or str(cert or exc)
    return (
        f"TLS certificate not trusted ({what}); if a proxy or mirror uses its own CA, give it with --ca-bundle "
        "or SSL_CERT_FILE"
    )


def ssl_context(ca_bundle: str | None = None) -> ssl.SSLContext:
    """Verification ON: the default trust store (SSL_CERT_FILE / SSL_CERT_DIR honoured) plus `ca_bundle`."""
    ctx = ssl.create_default_context()
    if ca_bundle:
        try:
            ctx.load_verify_locations(cafile=ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"--ca-bundle {ca_bundle}: not a readable PEM file of CA certificates ({exc})") from None
    return ctx


def make_session(
    transfer: TransferSettings | None = None,
    headers: dict[str, str] | None = None,
    read_bufsize: int = 1 << 20,
    **connector_kwargs: Any,
) -> aiohttp.ClientSession:
    """An aiohttp session as every oiv4 transfer uses it: guarded, TLS-verified, proxy variables honoured,
    with `transfer`'s connect and read timeouts (its `deadline_s` bounds each attempt at the caller).

    `connector_kwargs` go to `aiohttp.TCPConnector` (limit, limit_per_host, ttl_dns_cache, resolver...).
    Call inside a running event loop.
    """
    t = transfer or TransferSettings()
    connector = guarded_connector(t, ssl=ssl_context(t.ca_bundle), **connector_kwargs)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, connect=t.connect_timeout_s, sock_read=t.read_timeout_s),
        headers=headers,
        read_bufsize=read_bufsize,
        trust_env=True,
    )


def is_unreachable(exc: BaseException) -> bool:
    """Connection refused or the host name does not resolve: nothing will answer there, however long we wait."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return True
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.os_error.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH) or isinstance(
            exc.os_error, ConnectionRefusedError
        )
    return isinstance(exc, ConnectionRefusedError)


def classify(url: str, exc: BaseException) -> TransferError:
    """Turn a network exception of an attempt at `url` into `UnreachableError`, `TransientError` or final."""
    if isinstance(exc, TransferError):
        return exc
    if isinstance(exc, BlockedAddress):
        return BlockedError(f"{url}: {exc}")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return TlsError(f"{url}: {tls_reason(exc)}")
    cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if is_unreachable(exc):
        if isinstance(exc, aiohttp.ClientConnectorDNSError):
            what = "host name not found"
        else:
            refused = isinstance(getattr(exc, "os_error", exc), ConnectionRefusedError)
            what = "connection refused" if refused else "host unreachable"
        return UnreachableError(f"{url}: cannot connect, {what} ({cause}); check the URL and that the server is up")
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return TransientError(f"{url}: timed out ({cause})")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return TransientError(f"{url}: {cause}")
    return TransferError(f"{url}: {cause}")


def status_error(url: str, resp: aiohttp.ClientResponse) -> TransferError:
    """The error for a response we cannot use: transient for 408/429/5xx, else final."""
    text = f"{url}: HTTP {resp.status} {resp.reason or ''}".rstrip()
    if resp.status in TRANSIENT_STATUS:
        return TransientError(text, parse_retry_after(resp.headers.get("Retry-After")))
    if resp.status == 404:
        return NotFoundError(f"{url} does not exist (HTTP 404)")
    if resp.status == 412:
        return ChangedError(f"{url} changed while downloading (ETag no longer matches)")
    return TransferError(f"{text}; not retrying")


class HttpRanges:
    """Ranged reads of HTTP(S) URLs through one session (one per event loop)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def stat(self, url: str, name: str | None = None) -> RemoteObject:
        """HEAD `url`: size, ETag and Last-Modified. Raises `TransferError` (or a subclass)."""
        try:
            async with self.session.head(url, allow_redirects=True, headers={"Accept-Encoding": "identity"}) as resp:
                if resp.status != 200:
                    raise status_error(url, resp)
                length = resp.headers.get("Content-Length", "")
                etag, modified = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
        except Exception as exc:
            raise classify(url, exc) from exc
        if not length.isdigit():
            raise TransferError(f"{url}: the server sends no Content-Length; cannot plan a resumable download")
        return RemoteObject(name or url.rsplit("/", 1)[-1], url, int(length), etag, modified)

    async def iter_range(self, obj: RemoteObject, start: int, stop: int) -> AsyncIterator[bytes]:
        """Bytes `[start, stop)` of `obj`, refusing another version of it (`If-Match` / `If-Unmodified-Since`)."""
        headers = {"Accept-Encoding": "identity"}
        whole = start == 0 and stop == obj.size
        if not whole:
            headers["Range"] = f"bytes={start}-{stop - 1}"
        if obj.etag:
            headers["If-Match"] = obj.etag
        elif obj.last_modified:
            headers["If-Unmodified-Since"] = obj.last_modified
        got = 0
        try:
            async with self.session.get(obj.url, headers=headers) as resp:
                if resp.status not in (200, 206):
                    raise status_error(obj.url, resp)
                if resp.status == 200 and not whole:
                    raise TransferError(f"{obj.url}: the server ignores Range requests; cannot download in parts")
                etag = resp.headers.get("ETag")
                if obj.etag and etag and etag != obj.etag:  # for servers that ignore If-Match
                    raise ChangedError(f"{obj.url} changed while downloading (ETag {etag}, was {obj.etag})")
                crange = resp.headers.get("Content-Range", "")
                if resp.status == 206 and not crange.startswith(f"bytes {start}-{stop - 1}/"):
                    raise TransientError(f"{obj.url}: asked bytes {start}-{stop - 1}, got Content-Range {crange!r}")
                async for chunk in resp.content.iter_chunked(READ_CHUNK):
                    got += len(chunk)
                    if got > stop - start:
                        raise TransientError(f"{obj.url}: more bytes than the {stop - start} asked at {start}")
                    yield chunk
        except TransferError:
            raise
        except Exception as exc:
            raise classify(obj.url, exc) from exc
        if got != stop - start:
            raise TransientError(f"{obj.url}: short read ({got:,} of {stop - start:,} bytes at {start:,})")
