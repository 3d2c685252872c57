"""`TransferSettings`: how every transfer behaves (metadata CSVs, CVDF archives, each Flickr image).

One class, one naming scheme (seconds end in `_s`, bytes are bytes), one set of defaults, nested as
`transfer` in every stage's settings that downloads, the way httpx shares `Timeout` and `Limits` between
its clients. It holds the four things a transfer needs besides its URL:

- timeouts: `connect_timeout_s`, `read_timeout_s` (silence between chunks), `deadline_s` (one attempt);
- the retry policy: `attempts`, `backoff_s` .. `max_backoff_s` with `jitter`, `retry_after_max_s`,
  `retry_deadline_s` (all attempts of one transfer), applied by `oiv4.io.retry.retry_async` alone;
- the network guard: `allow_private_networks`, `ca_bundle`, `allowed_endpoints` (`oiv4.io.net_guard`);
- ranged parts for big files: `part_size`, `connections`, `checkpoint_s` (`oiv4.io.ranged`).

A stage whose transfers need other values than these defaults says so where it nests the class, as an
explicit default of the same fields with the reason beside it (`FETCH_TRANSFER`, `METADATA_TRANSFER`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from oiv4.contracts.limits import SettingRangeError, above, at_least
from oiv4.contracts.setting import setting


@dataclass(frozen=True)
class TransferSettings:
    """Timeouts, retry policy, network guard and ranged parts of one stage's transfers.

    Retry delays grow `backoff_s * 2**(n-1)` up to `max_backoff_s`, times a random factor in
    `[1 - jitter, 1 + jitter]` (so many clients throttled together do not return together); a server's
    Retry-After replaces that delay, capped at `retry_after_max_s`.
    """

    connect_timeout_s: float = setting(30.0, help="Seconds to wait for a connection.", flag="--connect-timeout")
    #: Big files have no total deadline by default: only silence ends an attempt.
    read_timeout_s: float = setting(120.0, help="Longest silence between two reads, in seconds.", flag="--read-timeout")
    deadline_s: float | None = setting(
        None,
        help="Seconds one attempt may take in total (slow trickles end here).",
        flag="--deadline",
    )
    attempts: int = setting(
        5, help="Attempts per transfer for retryable failures (429, 5xx, resets, timeouts).", flag="--attempts"
    )
    backoff_s: float = setting(
        1.0, help="Base of the exponential backoff between attempts, in seconds.", flag="--backoff"
    )
    max_backoff_s: float = setting(30.0, help="Longest wait between two attempts, in seconds.", flag="--max-backoff")
    jitter: float = setting(
        0.5, help="Random spread of each wait, as a fraction (0: none, 1: 0x to 2x).", flag="--jitter"
    )
    retry_after_max_s: float = setting(
        120.0, help="Longest Retry-After a server may impose, in seconds.", flag="--retry-after-max"
    )
    retry_deadline_s: float | None = setting(
        None,
        help="Seconds all attempts of one transfer may take together.",
        flag="--retry-deadline",
    )
    #: One decision per command, not per stage: what this machine may reach (see `oiv4.io.net_guard`).
    allow_private_networks: bool = setting(
        False,
        help="Also connect to loopback, private and link-local addresses (a mirror on your network). Off, such "
        "URLs and redirects are refused (fetch records them as blocked_address).",
        flag="--allow-private-networks/--no-allow-private-networks",
        shared=True,
    )
    ca_bundle: str | None = setting(
        None,
        help="PEM file of extra CA certificates, e.g. for corporate TLS interception.",
        flag="--ca-bundle",
        default_text="none",
        shared=True,
    )
    allowed_endpoints: frozenset[tuple[str, int]] = setting(
        frozenset(),
        help="Exact (ip, port) pairs admitted as if public.",
        cli=False,
        why="for tests only: a hostile server on 127.0.0.1 must be reachable while the guard stays on",
    )
    part_size: int = setting(64 << 20, help="Size of each ranged request, MiB.", flag="--part-size-mb", scale=1 << 20)
    #: RAM of a streamed archive is about `connections * part_size`.
    connections: int = setting(8, help="Ranged requests in flight at once.", flag="--connections")
    checkpoint_s: float = setting(
        2.0, help="Seconds between download checkpoints (what a kill can lose).", flag="--checkpoint"
    )

    def __post_init__(self) -> None:
        # A nonsense value would not fail: it would record every image as a `timeout` (poisoning the ledger).
        above(self, 0, "connect_timeout_s", "read_timeout_s", "deadline_s", "retry_after_max_s", "retry_deadline_s")
        at_least(self, 1, "attempts", "part_size", "connections")
        at_least(self, 0, "backoff_s", "max_backoff_s", "jitter", "checkpoint_s")  # checkpoint 0: after every part
        if self.jitter > 1:
            raise SettingRangeError(type(self), "jitter", "within 0..1", self.jitter)
        object.__setattr__(self, "allowed_endpoints", frozenset(self.allowed_endpoints))

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        r = rng or random
        if retry_after is not None:
            wait = min(retry_after, self.retry_after_max_s)
            return wait * r.uniform(1, 1 + 0.1 * self.jitter)  # a little spread, never earlier than asked
        return min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)) * r.uniform(
            1 - self.jitter, 1 + self.jitter
        )


__all__ = ["TransferSettings"]
