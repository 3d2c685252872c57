"""Download one URL the way Flickr needs: bounded, retried, and honest about how it ended.

One `HttpClient` (one aiohttp `ClientSession`, keep-alive connections, a per-host connection limit)
serves a whole shard. Redirects are followed by hand so that Flickr's "photo unavailable" redirect is
recognised from its *target* (not just from a failing MD5 later) and so that only http(s) targets are
followed. Every attempt runs under a total deadline, because a host that trickles a byte every few
seconds never trips a read timeout.

Every connection goes through the network guard (`oiv4.io.net_guard`, via `make_session`): a URL or a
redirect that leads to a loopback, private or reserved address ends as `blocked_address` before any
connection is tried, with a reason that names only the address class -- identical whether anything listens
there or not, so a crafted CSV cannot map internal ports. Bodies are spooled (`oiv4.io.memory_budget`):
at most `spool_above` bytes of each in RAM, the rest in an unlinked temp file, so many huge or endless
responses at once cost disk, not memory.
"""

from __future__ import annotations

import asyncio
import mmap
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType

import aiohttp
import aiohttp.abc
from yarl import URL

from oiv4.contracts.errors import BlockedAddress, BodyTooLarge
from oiv4.contracts.schema import Outcome
from oiv4.contracts.transfer import TransferSettings
from oiv4.io.http import make_session, tls_reason
from oiv4.io.memory_budget import SpooledBody, spool_body
from oiv4.io.retry import TRANSIENT_STATUS, parse_retry_after, retry_async
from oiv4.stages.fetch.settings import HttpSettings

__all__ = ["Fetched", "HttpClient", "parse_retry_after", "status_outcome"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 1 << 18


@dataclass
class Fetched:
    """How a download ended. `body` is set only when `outcome == "ok"`: the bytes, or a read-only mmap of the
    spooled temp file for a body above `spool_above` (`release()` frees it; garbage collection does too)."""

    outcome: str
    reason: str
    url: str  # the URL asked for
    final_url: str  # after redirects
    attempts: int = 0
    bytes_downloaded: int = 0  # over all attempts
    body: bytes | mmap.mmap | None = None
    content_type: str | None = None
    status: int | None = None
    spool: SpooledBody | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == Outcome.ok

    def release(self) -> None:
        """Drop the body (and delete its temp file, if it spilled to one)."""
        if isinstance(self.body, mmap.mmap):
            self.body.close()
        self.body = None
        if self.spool is not None:
            self.spool.close()
            self.spool = None


@dataclass
class _Attempt:
    outcome: str
    reason: str
    final_url: str
    nbytes: int = 0
    body: SpooledBody | None = None
    content_type: str | None = None
    status: int | None = None
    retry_after: float | None = None
    retryable: bool = False


def status_outcome(status: int) -> str:
    """The ledger outcome of a final HTTP status: `http_<code>`, with all 5xx as `http_5xx`."""
    return Outcome.http_5xx.value if 500 <= status <= 599 else f"http_{status}"


class HttpClient:
    """Async downloader for one worker process; use as `async with HttpClient(transfer, http) as client`.

    `transfer` (timeouts, retries, guard) is the fetch stage's (`FetchSettings.transfer`); `http` says how
    originals are requested. Retries use the shared policy and loop, with this client's own outcome mapping:
    connection errors of one image are retried here (one dead Flickr host must not look like a wrong source).
    """

    def __init__(
        self,
        transfer: TransferSettings,
        http: HttpSettings | None = None,
        rng: random.Random | None = None,
        *,
        resolver: aiohttp.abc.AbstractResolver | None = None,
    ) -> None:
        """`resolver` is for tests that play DNS tricks; the fetch stage uses the system's."""
        self.transfer = transfer
        self.settings = http or HttpSettings()
        self._rng = rng or random.Random()
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HttpClient:
        s = self.settings
        self._session = make_session(
            self.transfer,
            headers={"User-Agent": s.user_agent, "Accept-Encoding": "identity"},
            limit=s.concurrency,
            limit_per_host=s.per_host,
            ttl_dns_cache=300,
            keepalive_timeout=30,
            **({"resolver": self._resolver} if self._resolver is not None else {}),
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt `attempt + 1`: the server's Retry-After if it gave one (capped),
        else exponential backoff with jitter (so that many rows throttled together do not return together)."""
        return self.transfer.delay(attempt, retry_after, self._rng)

    async def fetch(self, url: str, expected_size: int | None = None) -> Fetched:
        """GET `url` with retries. `expected_size` (OriginalSize) lets a wrong Content-Length end early."""
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
            return Fetched(
                Outcome.connection_error, f"not an http(s) URL: {str(url)[:200]!r}; not requested", str(url), str(url)
            )
        total = 0
        attempts = 0

        async def attempt(n: int) -> _Attempt:
            nonlocal total, attempts
            attempts = n
            a = await self._attempt(url, expected_size)
            total += a.nbytes
            return a

        def verdict(a: _Attempt) -> bool | float:
            if a.outcome == Outcome.ok or not a.retryable:
                return False
            return True if a.retry_after is None else a.retry_after

        a = await retry_async(attempt, self.transfer, retry_result=verdict, rng=self._rng)
        reason = a.reason if attempts == 1 or a.outcome == Outcome.ok else f"{a.reason} (after {attempts} attempts)"
        body = a.body.view() if a.body is not None else None
        return Fetched(a.outcome, reason, url, a.final_url, attempts, total, body, a.content_type, a.status, a.body)

    # Kept long: one attempt through its redirect hops inside one deadline; each early return and each except
    # clause is one Flickr failure mode with its outcome, so the whole outcome table of a download reads here.
    async def _attempt(self, url: str, expected_size: int | None) -> _Attempt:
        assert self._session is not None, "use `async with HttpClient(...)`"
        s, t = self.settings, self.transfer
        current = url
        received = 0
        content_length: int | None = None
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(t.deadline_s):
                for _hop in range(s.max_redirects + 1):
                    async with self._session.get(current, allow_redirects=False) as resp:
                        if resp.status in _REDIRECTS:
                            target, problem = self._redirect_target(current, resp.headers.get("Location"))
                            if problem:
                                return _Attempt(Outcome.bad_redirect, problem, current, status=resp.status)
                            if any(m in URL(target).path for m in s.placeholder_markers):
                                return _Attempt(
                                    Outcome.placeholder,
                                    f"HTTP {resp.status} redirect to {target}: Flickr's 'photo unavailable' card",
                                    target,
                                    status=resp.status,
                                )
                            current = target
                            continue
                        if resp.status != 200:
                            return _Attempt(
                                status_outcome(resp.status),
                                f"HTTP {resp.status} {resp.reason or ''}".rstrip(),
                                current,
                                status=resp.status,
                                retry_after=parse_retry_after(resp.headers.get("Retry-After")),
                                retryable=resp.status in TRANSIENT_STATUS,
                            )
                        content_length = resp.content_length
                        if content_length is not None and content_length > s.max_bytes:
                            return _Attempt(
                                Outcome.too_large,
                                f"Content-Length {content_length:,} exceeds the {s.max_bytes:,}-byte cap; not downloaded",
                                current,
                                status=200,
                            )
                        if content_length is not None and expected_size is not None and content_length != expected_size:
                            return _Attempt(
                                Outcome.size_mismatch,
                                f"Content-Length {content_length:,} differs from OriginalSize {expected_size:,}; "
                                "not downloaded",
                                current,
                                status=200,
                            )

                        async def counted(content: aiohttp.StreamReader = resp.content) -> AsyncIterator[bytes]:
                            nonlocal received  # what a timeout or a cut-short body reports
                            async for chunk in content.iter_chunked(_CHUNK):
                                received += len(chunk)
                                yield chunk

                        try:
                            body = await spool_body(counted(), max_bytes=s.max_bytes, spool_above=s.spool_above)
                        except BodyTooLarge:
                            return _Attempt(
                                Outcome.too_large,
                                f"body exceeds the {s.max_bytes:,}-byte cap; stopped reading",
                                current,
                                received,
                                status=200,
                            )
                        return _Attempt(Outcome.ok, "", current, received, body, resp.content_type, status=200)
                return _Attempt(Outcome.bad_redirect, f"more than {s.max_redirects} redirects", current)
        except TimeoutError as exc:
            elapsed = time.monotonic() - t0
            if isinstance(exc, aiohttp.ConnectionTimeoutError):
                why = f"could not connect within {t.connect_timeout_s:g}s"
            elif isinstance(exc, aiohttp.SocketTimeoutError):
                why = f"no data for {t.read_timeout_s:g}s"
            else:
                why = f"response not complete within the {t.deadline_s:g}s deadline"
            got = f" ({received:,} bytes received)" if received else ""
            return _Attempt(Outcome.timeout, f"{why}{got}, after {elapsed:.1f}s", current, received, retryable=True)
        except aiohttp.ClientPayloadError as exc:
            of = f" of {content_length:,}" if content_length is not None else ""
            return _Attempt(
                Outcome.truncated,
                f"body cut short after {received:,}{of} bytes: {_short(exc)}",
                current,
                received,
                retryable=True,
            )
        except BlockedAddress as exc:
            # Names the address class only: the same words whether a port is open or closed, so that the
            # ledger of a crafted CSV cannot serve as a port scan.
            return _Attempt(
                Outcome.blocked_address,
                f"refused: the URL leads to {exc.why} address; only public addresses are fetched "
                "(--allow-private-networks admits a private mirror)",
                current,
            )
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError) as exc:
            return _Attempt(Outcome.connection_error, tls_reason(exc), current)
        except aiohttp.InvalidURL as exc:
            outcome = Outcome.bad_redirect if current != url else Outcome.connection_error
            return _Attempt(outcome, f"invalid URL {_short(exc)}", current)
        except (aiohttp.ClientError, OSError) as exc:
            # Connection refused/reset, DNS failure, server hung up, malformed response headers.
            return _Attempt(
                Outcome.connection_error, f"{type(exc).__name__}: {_short(exc)}", current, received, retryable=True
            )

    @staticmethod
    def _redirect_target(current: str, location: str | None) -> tuple[str, str]:
        """(absolute target, problem or "")."""
        if not location:
            return "", "redirect without a Location header"
        try:
            target = URL(current).join(URL(location))
        except ValueError as exc:
            return "", f"unparseable redirect Location {location[:200]!r}: {exc}"
        if target.scheme not in ("http", "https"):
            return "", f"redirect to a non-http(s) URL {str(target)[:200]!r}; not followed"
        return str(target), ""


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
