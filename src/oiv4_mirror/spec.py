"""What a universe is made of: `UniverseSpec` (everything that determines the bytes), the misbehaviours a
row's URL can have, `ImageInfo` (one row), and the mirror's URL paths."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from enum import StrEnum

from oiv4.contracts.errors import SettingError
from oiv4.contracts.schema import Outcome
from oiv4_mirror.images import ImageKind

#: Bump when generation changes, so stale caches are not reused.
GENERATOR_VERSION = 5

#: progress(stage, done, total), stage being "originals" or "archives".
ProgressFn = Callable[[str, int, int], None]

METADATA_PREFIX = "/openimages/2018_04"
FULL_CSV_PATH = f"{METADATA_PREFIX}/image_ids_and_rotation.csv"
BOXABLE_CSV_PATH = f"{METADATA_PREFIX}/train/train-images-boxable-with-rotation.csv"
ARCHIVE_PREFIX = "/tar"


class Misbehaviour(StrEnum):
    """What the original URL of a URL-set row does instead of (or before) serving the photo."""

    none = "none"
    placeholder = "placeholder"  # 302 -> photo_unavailable.png served with 200
    forbidden = "forbidden"  # 403 (private photo)
    not_found = "not_found"  # 404
    gone = "gone"  # 410
    rate_limited = "rate_limited"  # 429 + Retry-After for the first N requests, then 200
    unavailable = "unavailable"  # 503 + Retry-After for the first N requests, then 200
    server_error = "server_error"  # 500, always
    truncated = "truncated"  # Content-Length says N, half is sent, connection closed
    slow_timeout = "slow_timeout"  # trickles the body over `trickle_seconds`
    slow_ok = "slow_ok"  # waits `slow_ok_seconds`, then serves normally
    wrong_content_type = "wrong_content_type"  # text/html body; CSV size/MD5 describe that body
    md5_mismatch = "md5_mismatch"  # good image, wrong OriginalMD5 in the CSV
    decompression_bomb = "decompression_bomb"  # tiny PNG declaring 30000x30000; CSV matches it
    corrupt_jpeg = "corrupt_jpeg"  # JPEG with a zeroed block mid-scan; CSV size/MD5 describe the damaged file

    @property
    def expected(self) -> str:
        """The outcome a correct fetcher records for the original URL (`oiv4.contracts.schema.Outcome` values)."""
        return _EXPECTED[self]


_EXPECTED: dict[Misbehaviour, str] = {
    Misbehaviour.none: Outcome.ok,
    Misbehaviour.placeholder: Outcome.placeholder,
    Misbehaviour.forbidden: Outcome.http_403,
    Misbehaviour.not_found: Outcome.http_404,
    Misbehaviour.gone: Outcome.http_410,
    Misbehaviour.rate_limited: Outcome.ok,
    Misbehaviour.unavailable: Outcome.ok,
    Misbehaviour.server_error: Outcome.http_5xx,
    Misbehaviour.truncated: Outcome.truncated,
    Misbehaviour.slow_timeout: Outcome.timeout,
    Misbehaviour.slow_ok: Outcome.ok,
    Misbehaviour.wrong_content_type: Outcome.not_image,
    Misbehaviour.md5_mismatch: Outcome.md5_mismatch,
    Misbehaviour.decompression_bomb: Outcome.decompression_bomb,
    Misbehaviour.corrupt_jpeg: Outcome.corrupt_jpeg,
}

ALL_MISBEHAVIOURS: tuple[str, ...] = tuple(m.value for m in Misbehaviour if m is not Misbehaviour.none)

#: Removed or private photos: their thumbnail URL answers the same way as the original.
GONE_PHOTO: frozenset[Misbehaviour] = frozenset(
    {Misbehaviour.placeholder, Misbehaviour.forbidden, Misbehaviour.not_found, Misbehaviour.gone}
)


@dataclass(frozen=True)
class UniverseSpec:
    """Everything that determines a universe. Fractions are exact (rounded) counts, assigned round-robin.

    Fields after `bomb_side` only change how the server behaves over time, not any byte, so they are
    left out of the cache key.
    """

    seed: int = 0
    n_images: int = 300
    #: Originals' size range in megapixels (uniform). Tests keep it small; the benchmark asks (2, 12).
    megapixels: tuple[float, float] = (0.5, 2.0)
    validation_fraction: float = 0.08
    test_fraction: float = 0.05
    #: Share of the train rows that are also in the boxable file (the targets set, from archives).
    boxable_fraction: float = 0.4
    #: Share of URL-set rows (train rows not boxable) that misbehave; split round-robin over `misbehaviours`
    #: (repeat a name to give it more weight).
    misbehaviour_fraction: float = 0.15
    misbehaviours: tuple[str, ...] = ALL_MISBEHAVIOURS
    #: Share of all rows encoded as PNG (RGB, palette, RGBA), GIF, CMYK JPEG or 16-bit PNG rather than JPEG.
    special_kind_fraction: float = 0.06
    #: Share of rows stored rotated (Rotation 90/180/270) and with an empty (NaN) Rotation.
    rotated_fraction: float = 0.05
    nan_rotation_fraction: float = 0.02
    missing_thumbnail_fraction: float = 0.1
    archive_max_side: int = 1024
    thumbnail_max_side: int = 640
    bomb_side: int = 30000
    #: Share of targets/validation images left out of their archive although the CSVs list them.
    archive_missing_fraction: float = 0.0
    #: Add members an extractor must refuse to the first train archive: `../` and absolute paths,
    #: a non-hex name, a symlink and a hard link (none of them is a row of the CSVs).
    hostile_archive_members: bool = False
    #: Archive stems (e.g. "train_3") whose gzip stream is damaged half-way, as reported for some real ones.
    corrupt_archives: tuple[str, ...] = ()
    #: Share of rows that are planted copies of another row (re-encoded, resized, cropped, recoloured, or the
    #: same file under another Rotation), across and within targets, validation and the URL sets; and share
    #: that are hard negatives (another shot of a row's scene). `Universe.planted_duplicates()` /
    #: `planted_negatives()` give the ground truth. Off by default; the demo plants them.
    duplicate_fraction: float = 0.0
    hard_negative_fraction: float = 0.0
    # ---- serving behaviour only (not in the cache key) ----
    #: 429/503 rows fail this many times (per URL, per server instance) before answering 200.
    transient_failures: int = 2
    retry_after: int = 1
    #: `slow_timeout` rows spread their body over this many seconds; `slow_ok` rows wait this long first.
    trickle_seconds: float = 20.0
    slow_ok_seconds: float = 0.3
    #: Simulated distance to Flickr, for benchmarks: a delay before every original/thumbnail answer and
    #: a per-response bandwidth cap in bytes/s (0 = unlimited). Tests leave both off.
    latency_seconds: float = 0.0
    bytes_per_second: float = 0.0

    def __post_init__(self) -> None:
        if self.n_images < 1:
            raise SettingError("n_images must be >= 1")
        lo, hi = self.megapixels
        if not 0 < lo <= hi:
            raise SettingError(f"megapixels must be 0 < min <= max, got {self.megapixels}")
        for f in fields(self):
            if f.name.endswith("_fraction") and not 0.0 <= getattr(self, f.name) <= 1.0:
                raise SettingError(f"{f.name} must be within [0, 1]")
        if self.duplicate_fraction + self.hard_negative_fraction > 0.5:
            raise SettingError("duplicate_fraction + hard_negative_fraction must be <= 0.5")
        if self.validation_fraction + self.test_fraction > 1.0:
            raise SettingError("validation_fraction + test_fraction must be <= 1")
        unknown = set(self.misbehaviours) - set(ALL_MISBEHAVIOURS)
        if unknown:
            raise SettingError(f"unknown misbehaviours {sorted(unknown)}; known: {', '.join(ALL_MISBEHAVIOURS)}")
        # Accept lists (e.g. from JSON) but keep the dataclass hashable.
        object.__setattr__(self, "megapixels", (float(lo), float(hi)))
        object.__setattr__(self, "misbehaviours", tuple(self.misbehaviours))
        object.__setattr__(self, "corrupt_archives", tuple(archive_stem(a) for a in self.corrupt_archives))
        bad = [a for a in self.corrupt_archives if not re.fullmatch(r"train_[0-9a-f]|validation", a)]
        if bad:
            raise SettingError(f"corrupt_archives must name train_<hex digit> or validation archives, got {bad}")

    _SERVING_FIELDS = (
        "transient_failures",
        "retry_after",
        "trickle_seconds",
        "slow_ok_seconds",
        "latency_seconds",
        "bytes_per_second",
    )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> UniverseSpec:
        data = json.loads(text)
        data["megapixels"] = tuple(data["megapixels"])
        data["misbehaviours"] = tuple(data["misbehaviours"])
        data["corrupt_archives"] = tuple(data.get("corrupt_archives", ()))
        return cls(**data)

    def cache_key(self) -> str:
        """A short hash of everything that shapes the bytes."""
        content = {k: v for k, v in asdict(self).items() if k not in self._SERVING_FIELDS}
        content["generator"] = GENERATOR_VERSION
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def md5_b64(data: bytes) -> str:
    """The OriginalMD5 form: base64 of the 16-byte digest."""
    return base64.b64encode(hashlib.md5(data).digest()).decode()


@dataclass(frozen=True)
class ImageInfo:
    """One image of the universe: its row facts plus how the mirror treats it."""

    index: int  # position in the full CSV
    image_id: str
    subset: str  # train / validation / test
    boxable: bool
    misbehaviour: Misbehaviour
    kind: ImageKind
    width: int  # upright size; the stored original is swapped for Rotation 90/270
    height: int
    rotation: float  # NaN for an empty field
    original_path: str  # mirror path of OriginalURL
    thumbnail_path: str  # "" when the row has no thumbnail
    landing_url: str
    license: str
    author_profile_url: str
    author: str
    title: str
    #: Planted rows: the ImageID this row copies (or is a hard negative of), and how (`duplicates.UNIVERSE_COPIES`
    #: or "hard_negative"); empty for every other row.
    copy_of: str = ""
    variant: str = ""

    @property
    def role(self) -> str:
        """'targets' (boxable train), 'url' (train/extended_targets candidates), 'validation' or 'test'."""
        if self.subset == "train":
            return "targets" if self.boxable else "url"
        return self.subset

    @property
    def stored_size(self) -> tuple[int, int]:
        """(width, height) of the original as stored, i.e. before applying Rotation."""
        if self.rotation in (90.0, 270.0):
            return self.height, self.width
        return self.width, self.height

    @property
    def expected(self) -> str:
        return self.misbehaviour.expected


def archive_stem(name: str) -> str:
    return name.removesuffix(".tar.gz").rsplit("/", 1)[-1]
