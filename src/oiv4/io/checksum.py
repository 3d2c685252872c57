"""Checksums of stored bytes, so that `verify` can prove a stored file is the one fetch wrote.

Why: a flipped byte or a zeroed block in a stored JPEG usually still decodes (io.strict_decode documents the
decoder's blind spot) and leaves the size unchanged, so only a checksum recorded at write time can catch it.

Which hash (benchmarks/checksum_speed.py, this 2-core machine, single thread, MB/s, best of 5):

    size       xxh3_128   blake3   sha256
    100 KB        81906     7880     2092
    400 KB        90888     9479     2107
    64 MiB        36623     7792     2105

The threat is accidental damage (disk, copy, truncation, a bad tar member), not an adversary who crafts a
collision, so a 128-bit non-cryptographic hash is enough: xxh3-128's chance of missing a random change is 2^-128
per file. It is ~40x faster than SHA-256 and ~10x faster than BLAKE3 here, which matters for `verify`, which
re-hashes the whole store (~1.4 TB for train + extended_targets). Fetch's own cost is small with any of them
(0.1 ms of SHA-256 per 200 KB image vs ~30 ms of decode), so speed decides only verify. Every checksum carries
its algorithm as a prefix ("xxh3:<32 hex>"), so SHA-256 ("sha256:<64 hex>", e.g. from a CVDF manifest) is
verified too and the default can change without invalidating old ledgers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import xxhash

from oiv4.contracts.errors import ChecksumError


class _Hasher(Protocol):
    def update(self, data: bytes, /) -> object: ...
    def hexdigest(self) -> str: ...


#: algorithm name (the checksum's prefix) -> hasher factory
ALGORITHMS: dict[str, Callable[[], _Hasher]] = {
    "xxh3": xxhash.xxh3_128,
    "sha256": hashlib.sha256,
}
DEFAULT_ALGORITHM = "xxh3"


def checksum(data: bytes | memoryview, algorithm: str = DEFAULT_ALGORITHM) -> str:
    """`"<algorithm>:<hex digest>"` of `data`, e.g. `xxh3:6f1e...`."""
    hasher = _factory(algorithm)()
    hasher.update(data)
    return f"{algorithm}:{hasher.hexdigest()}"


@dataclass
class StreamingChecksum:
    """Feed chunks as they are written (a zip member, a streamed body) and read `value` at the end."""

    algorithm: str = DEFAULT_ALGORITHM
    size: int = 0
    _hasher: _Hasher = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._hasher = _factory(self.algorithm)()

    def update(self, chunk: bytes | memoryview) -> None:
        """Add the next chunk."""
        self._hasher.update(chunk)
        self.size += len(chunk)

    @property
    def value(self) -> str:
        """The checksum of everything fed so far, in `checksum()`'s format."""
        return f"{self.algorithm}:{self._hasher.hexdigest()}"


def parse(expected: str) -> tuple[str, str]:
    """Split `"<algorithm>:<hex>"`; raises ChecksumError for an unknown algorithm or a malformed digest."""
    algorithm, sep, digest = expected.partition(":")
    if not sep or algorithm not in ALGORITHMS:
        raise ChecksumError(f"unknown checksum {expected[:80]!r}: expected one of {', '.join(ALGORITHMS)} + ':<hex>'")
    width = len(ALGORITHMS[algorithm]().hexdigest())
    if len(digest) != width or any(c not in "0123456789abcdef" for c in digest):
        raise ChecksumError(f"malformed {algorithm} checksum {expected[:80]!r}: expected {width} lowercase hex digits")
    return algorithm, digest


def verify_checksum(data: bytes | memoryview, expected: str) -> str | None:
    """None when `data` matches `expected`; otherwise a one-line reason (for outcome `checksum_mismatch`)."""
    algorithm, _ = parse(expected)
    actual = checksum(data, algorithm)
    if actual == expected:
        return None
    return f"stored bytes ({len(data)} B) hash to {actual}, the ledger recorded {expected}"


def _factory(algorithm: str) -> Callable[[], _Hasher]:
    try:
        return ALGORITHMS[algorithm]
    except KeyError:
        raise ChecksumError(f"unknown checksum algorithm {algorithm!r}: use one of {', '.join(ALGORITHMS)}") from None
