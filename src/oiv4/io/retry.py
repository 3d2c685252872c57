"""The one retry policy of every transfer (metadata, archives, per-image fetches) and the one loop applying it.

`RetryPolicy` says how often and how long to wait; `retry_async` is the only place in oiv4 that sleeps
between attempts (tests/test_transfers.py checks that no other retry loop appears). Failures are sorted
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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from oiv4.contracts.errors import SettingRangeError, TransferError, TransientError
from oiv4.contracts.errors import UnreachableError as UnreachableError
from oiv4.contracts.limits import above, at_least
from oiv4.contracts.setting import setting

T = TypeVar("T")

#: HTTP statuses worth another attempt: the same request may well succeed later.
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How failed attempts are repeated. Delays grow `base_s * 2**(n-1)` up to `max_s`, times a random
    factor in `[1 - jitter, 1 + jitter]` (so many clients throttled together do not return together); a
    Retry-After from the server replaces that delay (capped at `retry_after_max_s`). No attempt starts
    after `deadline_s` (None: no total deadline) and no sleep would end beyond it."""

    attempts: int = setting(5, help="Attempts per transfer for transient failures (429, 5xx, resets, timeouts).")
    base_s: float = setting(1.0, help="Base of the exponential backoff between attempts, in seconds.", flag="--backoff")
    max_s: float = setting(30.0, help="Longest wait between two attempts, in seconds.", flag="--max-backoff")
    jitter: float = setting(0.5, help="Random spread of each wait, as a fraction (0: none, 1: 0x to 2x).")
    deadline_s: float | None = setting(
        None, help="Total seconds all attempts of one transfer may take.", flag="--deadline", default_text="none"
    )
    retry_after_max_s: float = setting(
        120.0, help="Longest Retry-After a server may impose, in seconds.", flag="--retry-after-max"
    )

    def __post_init__(self) -> None:
        at_least(self, 1, "attempts")
        at_least(self, 0, "base_s", "max_s", "jitter")
        above(self, 0, "deadline_s", "retry_after_max_s")
        if self.jitter > 1:
            raise SettingRangeError(type(self), "jitter", "within 0..1", self.jitter)

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        r = rng or random
        if retry_after is not None:
            wait = min(retry_after, self.retry_after_max_s)
            return wait * r.uniform(1, 1 + 0.1 * self.jitter)  # a little spread, never earlier than asked
        return min(self.max_s, self.base_s * 2 ** (attempt - 1)) * r.uniform(1 - self.jitter, 1 + self.jitter)


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
    policy: RetryPolicy,
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
        out_of_time = policy.deadline_s is not None and time.monotonic() - started + wait > policy.deadline_s
        if attempt >= policy.attempts or out_of_time:
            if failed is None:
                return result
            limit = f"the {policy.deadline_s:g}s deadline" if out_of_time else "the attempt limit"
            raise TransferError(f"{why} (gave up after {attempt} attempt(s): {limit})", attempt) from failed
        if on_retry is not None:
            on_retry(attempt, wait, why)
        await asyncio.sleep(wait)
