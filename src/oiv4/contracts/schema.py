"""The shapes every stage agrees on: metadata columns, ImageID rules, set names, ledger rows.

Kept in one small module so that a change of contract is one diff, and so that workers on a
cluster import nothing heavier than pyarrow to speak the same language as the client.
"""

from __future__ import annotations

import re
from enum import StrEnum

import pyarrow as pa

#: The 12 columns of both 2018_04 metadata CSVs, in file order (facts file, "Metadata files").
COLUMNS: tuple[str, ...] = (
    "ImageID",
    "Subset",
    "OriginalURL",
    "OriginalLandingURL",
    "License",
    "AuthorProfileURL",
    "Author",
    "Title",
    "OriginalSize",
    "OriginalMD5",
    "Thumbnail300KURL",
    "Rotation",
)

#: 16 lowercase hex characters. Anything else would become a file name, so it is hostile input.
IMAGE_ID_RE = re.compile(r"^[0-9a-f]{16}$")

#: The base64 of a 16-byte MD5 digest: 22 significant characters and the `==` padding.
MD5_B64_RE = re.compile(r"^[A-Za-z0-9+/]{22}==$")


class ImageSet(StrEnum):
    """The four sets, as the seed notebook defines them."""

    targets = "targets"
    validation = "validation"
    train = "train"
    extended_targets = "extended_targets"

    @property
    def from_archives(self) -> bool:
        """targets and validation come from CVDF tarballs; the other two from Flickr URLs."""
        return self in (ImageSet.targets, ImageSet.validation)


URL_SETS: tuple[ImageSet, ...] = (ImageSet.train, ImageSet.extended_targets)
ARCHIVE_SETS: tuple[ImageSet, ...] = (ImageSet.targets, ImageSet.validation)


def is_valid_image_id(image_id: object) -> bool:
    """True when `image_id` is safe to use as a file name (16 lowercase hex characters)."""
    return isinstance(image_id, str) and IMAGE_ID_RE.match(image_id) is not None


class Outcome(StrEnum):
    """Every input image ends in exactly one of these, with a free-text `reason` beside it.

    HTTP statuses without a dedicated member are recorded as `http_<code>` strings, which is why
    the ledger stores outcomes as plain strings and this enum lists the common ones only.
    """

    ok = "ok"
    md5_mismatch = "md5_mismatch"
    size_mismatch = "size_mismatch"
    placeholder = "placeholder"  # Flickr's photo_unavailable redirect
    http_403 = "http_403"
    http_404 = "http_404"
    http_410 = "http_410"
    http_429 = "http_429"
    http_5xx = "http_5xx"
    bad_redirect = "bad_redirect"
    timeout = "timeout"
    connection_error = "connection_error"
    truncated = "truncated"
    too_large = "too_large"
    not_image = "not_image"
    decode_error = "decode_error"
    decompression_bomb = "decompression_bomb"
    invalid_id = "invalid_id"
    hostile_member = "hostile_member"
    missing_from_archive = "missing_from_archive"
    disk_full = "disk_full"
    write_error = "write_error"
    verify_failed = "verify_failed"  # `oiv4 verify --requeue`: an ok image whose stored file is broken
    corrupt_jpeg = "corrupt_jpeg"  # libjpeg reported damaged entropy-coded data (io.strict_decode)
    blocked_address = "blocked_address"  # URL or redirect to a loopback/private/reserved address (io.net_guard)
    unsafe_path = "unsafe_path"  # target path would leave the output root (symlink, `..`; io.safe_paths)
    checksum_mismatch = "checksum_mismatch"  # stored bytes differ from the ledger's checksum (io.checksum)
    too_many_scans = "too_many_scans"  # a JPEG with more scans than io.strict_decode.MAX_SCANS: not decoded


#: One row per input image per set. `row` is the image's index in its plan manifest, which makes a
#: ledger joinable with the plan and lets a re-submitted shard skip what it already finished.
LEDGER_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("set", pa.string(), nullable=False),
        pa.field("shard", pa.int32(), nullable=False),
        pa.field("row", pa.int64(), nullable=False),
        pa.field("outcome", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("attempts", pa.int16()),
        pa.field("source", pa.string()),  # "original", "thumbnail", "archive:train_0.tar.gz", "recovered"
        pa.field("url", pa.string()),
        pa.field("bytes_downloaded", pa.int64()),
        pa.field("original_width", pa.int32()),
        pa.field("original_height", pa.int32()),
        pa.field("stored_width", pa.int32()),
        pa.field("stored_height", pa.int32()),
        pa.field("stored_bytes", pa.int64()),
        pa.field("location", pa.string()),  # relative path, or "<archive>.zip:<member>" / "<shard>.tar:<key>"
        pa.field("started_at", pa.timestamp("ms", tz="UTC")),
        pa.field("elapsed_s", pa.float64()),
        # Integrity and duplicates, null on non-ok rows and in ledgers written without these columns
        # (readers fill them with nulls; `oiv4 hash` records them for such stored images):
        pa.field("checksum", pa.string()),  # of the stored bytes, "xxh3:<hex>" (io.checksum)
        pa.field("phash", pa.uint64()),  # 64-bit rotation-aware perceptual hash of the stored picture (io.fingerprint)
        # When `oiv4 hash` filled checksum/phash for this row and how long reading + hashing it took; null where
        # the fetch recorded the hashes itself, and in ledgers written before these columns (readers fill nulls).
        pa.field("hashed_at", pa.timestamp("ms", tz="UTC")),
        pa.field("hash_s", pa.float64()),
        # The reason with its URLs and numbers taken out (io.reason_kind), computed once when the row is written;
        # null in ledgers written before it, until their next compaction stores it:
        pa.field("reason_kind", pa.string()),
    ]
)

#: The ledger columns each stage that re-records existing ledger rows may change. Such a stage copies every
#: other column of the row unchanged, so the facts another stage recorded (the conversion's `started_at`,
#: `elapsed_s`, sizes) survive it. Stages that record a fresh attempt (fetch, archives) write whole rows.
REWRITE_OWNERS: dict[str, frozenset[str]] = {
    "hash": frozenset({"checksum", "phash", "hashed_at", "hash_s"}),
    # A requeued row is a new event (the verify verdict), timestamped after the row it supersedes.
    "verify_requeue": frozenset({"outcome", "reason", "started_at", "elapsed_s"}),
}


#: A set's plan manifest: the 12 CSV columns (OriginalSize int64, Rotation float64, null where empty) + `row`,
#: the 0-based position in the set, which is also the ledger's `row`.
MANIFEST_SCHEMA = pa.schema(
    [
        pa.field(c, pa.int64() if c == "OriginalSize" else pa.float64() if c == "Rotation" else pa.string())
        for c in COLUMNS
    ]
    + [pa.field("row", pa.int64(), nullable=False)]
)
