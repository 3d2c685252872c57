"""io.checksum: a stored file that changed by one byte no longer verifies; the algorithm travels with the value."""

from __future__ import annotations

import hashlib
import os

import pytest

from oiv4.contracts.errors import ChecksumError
from oiv4.io.checksum import StreamingChecksum, checksum, parse, verify_checksum


def test_a_checksum_names_its_algorithm_and_has_a_128_bit_digest():
    value = checksum(b"stored jpeg bytes")
    algorithm, digest = parse(value)
    assert algorithm == "xxh3" and len(digest) == 32 and value == f"xxh3:{digest}"


def test_one_flipped_bit_or_a_zeroed_block_fails_verification():
    data = os.urandom(250_000)
    recorded = checksum(data)
    assert verify_checksum(data, recorded) is None
    flipped = bytearray(data)
    flipped[123_456] ^= 0x01
    zeroed = data[:100_000] + bytes(2000) + data[102_000:]
    for damaged in (bytes(flipped), zeroed, data[:-1]):
        reason = verify_checksum(damaged, recorded)
        assert reason is not None and recorded in reason


def test_streaming_in_chunks_gives_the_same_checksum_as_one_call():
    data = os.urandom(1_000_003)
    stream = StreamingChecksum()
    for i in range(0, len(data), 65_536):
        stream.update(memoryview(data)[i : i + 65_536])
    assert stream.value == checksum(data) and stream.size == len(data)


def test_sha256_checksums_verify_too():
    data = b"member of a CVDF archive"
    expected = "sha256:" + hashlib.sha256(data).hexdigest()
    assert checksum(data, "sha256") == expected
    assert verify_checksum(data, expected) is None
    assert verify_checksum(data + b"!", expected) is not None


@pytest.mark.parametrize("bad", ["", "md5:abcd", "xxh3:xyz", "xxh3:" + "0" * 31, "XXH3:" + "0" * 32, "no-colon"])
def test_a_malformed_or_unknown_checksum_is_a_clear_error(bad):
    with pytest.raises(ChecksumError, match="checksum"):
        verify_checksum(b"data", bad)
