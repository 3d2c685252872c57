"""The one loop that retries every transfer (metadata, archives, per-image fetches).

How often and how long to wait is part of `oiv4.contracts.transfer.TransferSettings`; `retry_async` is
the only place in oiv4 that sleeps between attempts (tests/io/test_transfers.py checks that no other retry loop appears). Failures are sorted
once, here: `TransientError` is worth another attempt (429, 5xx, resets, timeouts, short reads); anything
else, including `UnreachableError` (connection refused, unknown host), ends the loop at once, because a
wrong or dead source URL should fail in seconds with the cause, not after minutes of backoff.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from oiv4.contracts.errors import TransferError, TransientError
from oiv4.contracts.transfer import TransferSettings

T = TypeVar("T")

#: HTTP statuses worth another attempt: the same request may well succeed later.
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (now if now is not None else datetime.now(UTC).timestamp()))


#: Called before each sleep: (failed attempt number, seconds about to wait, why it failed).
OnRetry = Callable[[int, float, str], None]


async def retry_async(
    call: Callable[[int], Awaitable[T]],
    policy: TransferSettings,
    *,
    retry_result: Callable[[T], bool | float] | None = None,
    on_retry: OnRetry | None = None,
    rng: random.Random | None = None,
) -> T:
    """Run `call(attempt)` (attempt counts from 1) until it succeeds or the policy says stop.

    Exceptions: `TransientError` is retried; when attempts or the deadline run out it is re-raised as a
    `TransferError` whose message says how many attempts were made. Any other exception propagates at once.
    Results: callers that report failures as values (the per-image fetcher) pass `retry_result`, which
    returns False for a final result, or True / Retry-After seconds for one worth retrying; the last
    result is returned when the policy gives up.
    """
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            result = await call(attempt)
        except TransientError as exc:
            why, retry_after, failed = str(exc), exc.retry_after, exc
        else:
            verdict = retry_result(result) if retry_result is not None else False
            if verdict is False:
                return result
            why, retry_after, failed = "retryable result", (None if verdict is True else float(verdict)), None
        wait = policy.delay(attempt, retry_after, rng)
        limit_s = policy.retry_deadline_s
        out_of_time = limit_s is not None and time.monotonic() - started + wait > limit_s
        if attempt >= policy.attempts or out_of_time:
            if failed is None:
                return result
            limit = f"the {limit_s:g}s deadline" if out_of_time else "the attempt limit"
            raise TransferError(f"{why} (gave up after {attempt} attempt(s): {limit})", attempt) from failed
        if on_retry is not None:
            on_retry(attempt, wait, why)
        await asyncio.sleep(wait)
