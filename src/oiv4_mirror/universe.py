"""A deterministic mini OpenImages V4 universe: metadata rows, original bytes, CVDF archives.

Everything derives from `UniverseSpec` (above all its `seed`): two universes built from equal specs
have byte-identical CSVs, originals and archives; another seed gives other bytes. Rows are cheap and
built at once; pixels are rendered lazily (threads; Pillow and numpy release the GIL) and cached on
disk under `cache_dir` (default: `<tmp>/oiv4-mirror-<hash of the spec>`), written atomically so that
parallel test workers can share one cache.

See `oiv4_mirror` for the universe and the misbehaviours it serves.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import math
import os
import re
import tarfile
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from oiv4.contracts.schema import COLUMNS, Outcome
from oiv4.io.storage import Storage
from oiv4_mirror.images import (
    PLACEHOLDER_PATHS,
    SPECIAL_KINDS,
    ImageKind,
    decompression_bomb_png,
    encode,
    encode_jpeg,
    html_page,
    noise_tile,
    placeholder_png,
    render_picture,
    shrunk_size,
    stored_orientation,
)

#: Bump when generation changes, so stale caches are not reused.
GENERATOR_VERSION = 2

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
            raise ValueError("n_images must be >= 1")
        lo, hi = self.megapixels
        if not 0 < lo <= hi:
            raise ValueError(f"megapixels must be 0 < min <= max, got {self.megapixels}")
        for f in fields(self):
            if f.name.endswith("_fraction") and not 0.0 <= getattr(self, f.name) <= 1.0:
                raise ValueError(f"{f.name} must be within [0, 1]")
        if self.validation_fraction + self.test_fraction > 1.0:
            raise ValueError("validation_fraction + test_fraction must be <= 1")
        unknown = set(self.misbehaviours) - set(ALL_MISBEHAVIOURS)
        if unknown:
            raise ValueError(f"unknown misbehaviours {sorted(unknown)}; known: {', '.join(ALL_MISBEHAVIOURS)}")
        # Accept lists (e.g. from JSON) but keep the dataclass hashable.
        object.__setattr__(self, "megapixels", (float(lo), float(hi)))
        object.__setattr__(self, "misbehaviours", tuple(self.misbehaviours))
        object.__setattr__(self, "corrupt_archives", tuple(_archive_stem(a) for a in self.corrupt_archives))
        bad = [a for a in self.corrupt_archives if not re.fullmatch(r"train_[0-9a-f]|validation", a)]
        if bad:
            raise ValueError(f"corrupt_archives must name train_<hex digit> or validation archives, got {bad}")

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


def default_cache_dir(spec: UniverseSpec) -> Path:
    return Path(tempfile.gettempdir()) / f"oiv4-mirror-{spec.cache_key()}"


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


_LICENSES = (
    "https://creativecommons.org/licenses/by/2.0/",
    "https://creativecommons.org/licenses/by-sa/2.0/",
    "https://creativecommons.org/licenses/by-nc/2.0/",
)
_ASPECTS = (4 / 3, 3 / 2, 16 / 9, 1.0, 3 / 4, 2 / 3)
# Titles and authors exercise CSV quoting: commas, double quotes, non-ASCII, leading dots.
_WORDS = (
    "sunset", "Café", "Straße", "東京", "Москва", "naïve", "fjörd", "...die FNF-Kerze", "garden", "beach",
    "São Paulo", "🐱", "l'été", "bridge", "night, city", 'the "best" day', "Zürich", "crème brûlée",
)  # fmt: skip
_AUTHORS = ("Michael Beat", "José Ñúñez", "Zoë O'Brien", 'Anna "Nan" Li', "山田 太郎", "Smith, John", "Ólafur")


class Universe:
    """The mini OpenImages universe described by `spec`. Thread-safe; pixels are made on first use."""

    def __init__(self, spec: UniverseSpec | None = None, cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.spec = spec or UniverseSpec()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(self.spec)
        self._storage = Storage(str(self.cache_dir))
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._meta: dict[str, tuple[int, str]] = {}  # image_id -> (size, md5 of the served body)
        self._csv_cache: dict[tuple[str, str], bytes] = {}
        self._tile: Any = None
        self.images: list[ImageInfo] = self._build_rows()
        self._by_id = {info.image_id: info for info in self.images}
        self._by_path: dict[str, tuple[str, ImageInfo]] = {}
        for info in self.images:
            self._by_path[info.original_path] = ("original", info)
            if info.thumbnail_path:
                self._by_path[info.thumbnail_path] = ("thumbnail", info)
        self._boxable_order: list[ImageInfo] = self._boxable_file_order()
        in_archives = sorted(self.boxable_ids()) + self.validation_ids()
        n_missing = round(self.spec.archive_missing_fraction * len(in_archives))
        picks = np.random.default_rng([self.spec.seed, 2]).permutation(len(in_archives))[:n_missing].tolist()
        self._missing_from_archive = {in_archives[j] for j in picks}
        self._load_index()

    # ---- rows -----------------------------------------------------------------------------
    def _build_rows(self) -> list[ImageInfo]:
        spec = self.spec
        n = spec.n_images
        rng = np.random.default_rng([spec.seed, 1])
        ids: list[str] = []
        seen: set[str] = set()
        while len(ids) < n:
            for v in rng.integers(0, 2**64, n, dtype=np.uint64).tolist():
                hid = f"{v:016x}"
                if hid not in seen and len(ids) < n:
                    seen.add(hid)
                    ids.append(hid)

        order = rng.permutation(n).tolist()
        n_val = round(spec.validation_fraction * n)
        n_test = round(spec.test_fraction * n)
        subsets = ["train"] * n
        for i in order[:n_val]:
            subsets[i] = "validation"
        for i in order[n_val : n_val + n_test]:
            subsets[i] = "test"
        train = [i for i in range(n) if subsets[i] == "train"]
        n_box = round(spec.boxable_fraction * len(train))
        boxable = {train[j] for j in rng.permutation(len(train))[:n_box].tolist()}
        url_rows = [i for i in train if i not in boxable]

        misbehaviour = [Misbehaviour.none] * n
        if spec.misbehaviours:
            n_bad = round(spec.misbehaviour_fraction * len(url_rows))
            for k, j in enumerate(rng.permutation(len(url_rows))[:n_bad].tolist()):
                misbehaviour[url_rows[j]] = Misbehaviour(spec.misbehaviours[k % len(spec.misbehaviours)])

        # Awkward formats go to well-behaved rows, so each one really reaches the fetcher's decoder.
        kinds = [ImageKind.jpeg] * n
        n_special = round(spec.special_kind_fraction * n)
        plain = [i for i in range(n) if misbehaviour[i] is Misbehaviour.none]
        for k, j in enumerate(rng.permutation(len(plain))[:n_special].tolist()):
            kinds[plain[j]] = SPECIAL_KINDS[k % len(SPECIAL_KINDS)]

        rotations = [0.0] * n
        n_rot = round(spec.rotated_fraction * n)
        n_nan = round(spec.nan_rotation_fraction * n)
        perm = rng.permutation(n).tolist()
        for k, i in enumerate(perm[:n_rot]):
            rotations[i] = (90.0, 180.0, 270.0)[k % 3]
        for i in perm[n_rot : n_rot + n_nan]:
            rotations[i] = math.nan
        no_thumb = set(rng.permutation(n)[: round(spec.missing_thumbnail_fraction * n)].tolist())

        lo, hi = spec.megapixels
        infos = []
        for i in range(n):
            mp = float(rng.uniform(lo, hi))
            aspect = _ASPECTS[int(rng.integers(len(_ASPECTS)))]
            width = max(8, round(math.sqrt(mp * 1e6 * aspect)))
            height = max(8, round(width / aspect))
            photo = int(rng.integers(10**9, 10**10))
            secret, secret2 = (f"{int(x):010x}" for x in rng.integers(0, 2**40, 2))
            farm, server = int(rng.integers(1, 10)), int(rng.integers(1000, 10000))
            author = _AUTHORS[int(rng.integers(len(_AUTHORS)))]
            slug = f"user{int(rng.integers(10**6)):06d}"
            words = [_WORDS[int(j)] for j in rng.integers(0, len(_WORDS), int(rng.integers(1, 4)))]
            kind, bad = kinds[i], misbehaviour[i]
            if bad is Misbehaviour.decompression_bomb:
                kind = ImageKind.png_rgb
            ext = "jpg" if bad is Misbehaviour.wrong_content_type else kind.extension
            infos.append(
                ImageInfo(
                    index=i,
                    image_id=ids[i],
                    subset=subsets[i],
                    boxable=i in boxable,
                    misbehaviour=bad,
                    kind=kind,
                    width=width,
                    height=height,
                    rotation=rotations[i],
                    original_path=f"/farm{farm}/{server}/{photo}_{secret}_o.{ext}",
                    thumbnail_path="" if i in no_thumb else f"/c1/{farm}/{server}/{photo}_{secret2}_z.jpg",
                    landing_url=f"https://www.flickr.com/photos/{slug}/{photo}",
                    license=_LICENSES[int(rng.integers(len(_LICENSES)))],
                    author_profile_url=f"https://www.flickr.com/people/{slug}/",
                    author=author,
                    title=" ".join(words),
                )
            )
        self._boxable_perm = rng.permutation(n).tolist()
        return infos

    def _boxable_file_order(self) -> list[ImageInfo]:
        # The boxable file has its own order (neither sorted nor the full file's).
        return [self.images[i] for i in self._boxable_perm if self.images[i].boxable]

    def info(self, image_id: str) -> ImageInfo:
        """Everything known about `image_id` (KeyError if it is not in the universe)."""
        return self._by_id[image_id]

    @property
    def image_ids(self) -> list[str]:
        """All ImageIDs in full-CSV order."""
        return [i.image_id for i in self.images]

    def boxable_ids(self) -> list[str]:
        """The targets set: boxable train rows, in boxable-CSV order."""
        return [i.image_id for i in self._boxable_order]

    def validation_ids(self) -> list[str]:
        return [i.image_id for i in self.images if i.subset == "validation"]

    def url_set_ids(self) -> list[str]:
        """Train rows not in the boxable file, in full-CSV order (train then extended_targets)."""
        return [i.image_id for i in self.images if i.role == "url"]

    def ids_with(self, misbehaviour: Misbehaviour | str) -> list[str]:
        m = Misbehaviour(misbehaviour)
        return [i.image_id for i in self.images if i.misbehaviour is m]

    def expected(self, image_id: str) -> str:
        """The outcome (an `oiv4.contracts.schema.Outcome` value) a correct fetcher records for the original URL.

        `timeout` assumes a client deadline below `spec.trickle_seconds`; `ok` for `slow_ok` assumes one
        above `spec.slow_ok_seconds` plus the transfer; `ok` for 429/503 assumes the client retries at
        least `spec.transient_failures` times, honouring Retry-After.
        """
        return self._by_id[image_id].expected

    def resolve(self, path: str) -> tuple[str, ImageInfo] | None:
        """('original' | 'thumbnail', info) for a mirror URL path, None if it is not one."""
        return self._by_path.get(path)

    # ---- cache plumbing ---------------------------------------------------------------------
    def _key_lock(self, key: str) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def _cached(self, rel: str, make: Callable[[], bytes], *, shared: bool = False) -> Path:
        """Path of the cache file `rel`, made (once, atomically) by `make` if missing.

        `shared` also takes a lock file, so that processes sharing the cache (pytest-xdist workers)
        do not all build the same expensive file; cheap files are just made twice, harmlessly.
        """
        path = self.cache_dir / rel
        if path.exists():
            return path
        with self._key_lock(rel), _file_lock(self.cache_dir / "locks" / rel) if shared else nullcontext():
            if not path.exists():
                self._storage.write_bytes(rel, make())
        return path

    def _noise(self) -> Any:
        with self._lock:
            if self._tile is None:
                self._tile = noise_tile(self.spec.seed)
            return self._tile

    def _load_index(self) -> None:
        path = self.cache_dir / "index.json"
        if path.exists():
            try:
                data = json.loads(path.read_text())
            except ValueError:  # a foreign or damaged file: regenerate the metadata
                return
            with self._lock:
                self._meta.update({k: (int(v[0]), str(v[1])) for k, v in data.items() if k in self._by_id})

    # ---- originals ---------------------------------------------------------------------------
    def _make_original(self, info: ImageInfo) -> bytes:
        if info.misbehaviour is Misbehaviour.wrong_content_type:
            return html_page(info.image_id)
        if info.misbehaviour is Misbehaviour.decompression_bomb:
            return self.bomb_bytes()
        upright = render_picture(self.spec.seed, info.index, info.width, info.height, self._noise())
        return encode(stored_orientation(upright, info.rotation), info.kind)

    def original_path(self, image_id: str) -> Path:
        """Cache file holding the body served at OriginalURL (made if needed)."""
        info = self._by_id[image_id]
        path = self._cached(f"originals/{image_id}", lambda: self._make_original(info))
        if image_id not in self._meta:
            data = path.read_bytes()
            with self._lock:
                self._meta[image_id] = (len(data), md5_b64(data))
        return path

    def original(self, image_id: str) -> bytes:
        """The body served at the row's OriginalURL when it answers 200 (for `placeholder`, 403, 404,
        410 and 500 rows: the photo as it was when the CSV was written)."""
        return self.original_path(image_id).read_bytes()

    def original_meta(self, image_id: str) -> tuple[int, str]:
        """(size, base64 MD5) of the original body."""
        if image_id not in self._meta:
            self.original_path(image_id)
        return self._meta[image_id]

    def bomb_bytes(self) -> bytes:
        side = self.spec.bomb_side
        return self._cached(f"bomb-{side}.png", lambda: decompression_bomb_png(side, side)).read_bytes()

    def ensure_originals(self, workers: int | None = None, progress: ProgressFn | None = None) -> None:
        """Render every original not yet cached (in parallel), then record sizes and MD5s in index.json.

        `progress("originals", done, total)` is called as images are finished (from worker threads).
        """
        if all(i.image_id in self._meta for i in self.images):
            return
        # One process renders, the others wait and then read its index.json.
        with _file_lock(self.cache_dir / "locks" / "originals"):
            self._load_index()
            todo = [i.image_id for i in self.images if i.image_id not in self._meta]
            if not todo:
                return
            _parallel(self.original_path, todo, workers, _stage(progress, "originals", len(todo)))
            index = {k: list(v) for k, v in sorted(self._meta.items())}
            self._storage.write_bytes("index.json", json.dumps(index).encode())

    # ---- shrunk copies --------------------------------------------------------------------------
    def _make_scaled(self, info: ImageInfo, max_side: int) -> bytes:
        w, h = shrunk_size(info.width, info.height, max_side)
        upright = render_picture(self.spec.seed, info.index, w, h, self._noise())
        return encode_jpeg(stored_orientation(upright, info.rotation))

    def small_image(self, image_id: str) -> bytes:
        """The CVDF copy: at most `archive_max_side` px on the longest side, RGB JPEG, stored orientation."""
        info = self._by_id[image_id]
        rel = f"small/{image_id}.jpg"
        return self._cached(rel, lambda: self._make_scaled(info, self.spec.archive_max_side)).read_bytes()

    def thumbnail(self, image_id: str) -> bytes:
        """The ~300K-pixel JPEG served at Thumbnail300KURL (no checksum can verify it)."""
        info = self._by_id[image_id]
        rel = f"thumbs/{image_id}.jpg"
        return self._cached(rel, lambda: self._make_scaled(info, self.spec.thumbnail_max_side)).read_bytes()

    def placeholder(self, path: str) -> bytes:
        """The 'photo unavailable' PNG served at one of `PLACEHOLDER_PATHS`."""
        large = path.endswith("_l.png")
        return self._cached(f"placeholder{'_l' if large else ''}.png", lambda: placeholder_png(large)).read_bytes()

    # ---- metadata CSVs -------------------------------------------------------------------------
    def row(self, image_id: str, base_url: str) -> dict[str, Any]:
        """The CSV row of `image_id` as typed values (OriginalSize int, Rotation float, NaN if empty)."""
        info = self._by_id[image_id]
        size, md5 = self.original_meta(image_id)
        if info.misbehaviour is Misbehaviour.md5_mismatch:
            md5 = md5_b64(self.original(image_id) + b"oiv4-mirror")
        base = base_url.rstrip("/")
        return {
            "ImageID": info.image_id,
            "Subset": info.subset,
            "OriginalURL": base + info.original_path,
            "OriginalLandingURL": info.landing_url,
            "License": info.license,
            "AuthorProfileURL": info.author_profile_url,
            "Author": info.author,
            "Title": info.title,
            "OriginalSize": size,
            "OriginalMD5": md5,
            "Thumbnail300KURL": base + info.thumbnail_path if info.thumbnail_path else "",
            "Rotation": info.rotation,
        }

    def rows(self, base_url: str, ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """CSV rows (typed) for `ids` (default: the full file, in its order), URLs under `base_url`."""
        self.ensure_originals()
        return [self.row(i, base_url) for i in (self.image_ids if ids is None else ids)]

    def _csv(self, ids: list[str], base_url: str) -> bytes:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        for r in self.rows(base_url, ids):
            rot = r["Rotation"]
            r["Rotation"] = "" if math.isnan(rot) else f"{rot:.1f}"
            writer.writerow([r[c] for c in COLUMNS])
        return out.getvalue().encode("utf-8")

    def full_csv(self, base_url: str) -> bytes:
        """`image_ids_and_rotation.csv`: every row (train, validation, test), not sorted by ImageID."""
        key = ("full", base_url)
        if key not in self._csv_cache:
            self._csv_cache[key] = self._csv(self.image_ids, base_url)
        return self._csv_cache[key]

    def boxable_csv(self, base_url: str) -> bytes:
        """`train-images-boxable-with-rotation.csv`: the boxable train rows, in their own order."""
        key = ("boxable", base_url)
        if key not in self._csv_cache:
            self._csv_cache[key] = self._csv(self.boxable_ids(), base_url)
        return self._csv_cache[key]

    # ---- CVDF archives ---------------------------------------------------------------------------
    def _archive_groups(self) -> dict[str, list[str]]:
        """Archive stem -> the ImageIDs that belong in it (whether or not they are missing from it)."""
        groups: dict[str, list[str]] = {}
        for image_id in sorted(self.boxable_ids()):
            groups.setdefault(f"train_{image_id[0]}", []).append(image_id)
        validation = sorted(self.validation_ids())
        if validation:
            groups["validation"] = validation
        return groups

    def _archive_ids(self) -> dict[str, list[str]]:
        """Archive stem -> the ImageIDs really inside it."""
        return {
            stem: [i for i in ids if i not in self._missing_from_archive]
            for stem, ids in self._archive_groups().items()
        }

    def expected_archive(self, image_id: str) -> str:
        """The outcome the archive stage records for a targets/validation image: `ok` or `missing_from_archive`.

        (Images of a `corrupt_archives` archive depend on how much the stage can salvage, so they are not
        predicted here.)
        """
        return Outcome.missing_from_archive if image_id in self._missing_from_archive else Outcome.ok

    def archive_of(self, image_id: str) -> str | None:
        """The archive file name an image belongs in (`train_3.tar.gz`), None for URL-set and test rows."""
        info = self._by_id[image_id]
        if info.role == "targets":
            return f"train_{image_id[0]}.tar.gz"
        return "validation.tar.gz" if info.role == "validation" else None

    def _hostile_members(self, stem: str) -> list[tarfile.TarInfo]:
        if not self.spec.hostile_archive_members or stem != next(iter(self._archive_groups())):
            return []
        members = []
        for name, kind, link in (
            (f"../{stem}_escape.jpg", tarfile.REGTYPE, ""),
            ("/tmp/oiv4-mirror-absolute.jpg", tarfile.REGTYPE, ""),
            (f"{stem}/NOT-A-HEX-ID.jpg", tarfile.REGTYPE, ""),
            (f"{stem}/{'f' * 16}.jpg", tarfile.SYMTYPE, "/etc/passwd"),
            (f"{stem}/{'e' * 16}.jpg", tarfile.LNKTYPE, "../../etc/passwd"),
        ):
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mtime, info.mode = kind, link, 1525132800, 0o644
            members.append(info)
        return members

    def archive_names(self) -> list[str]:
        """File names under `tar/`: `train_<x>.tar.gz` for each hex digit with boxable images, `validation.tar.gz`."""
        return [f"{stem}.tar.gz" for stem in self._archive_ids()]

    def archive_members(self, name: str) -> list[str]:
        """Image member names of archive `name`, in archive order (`train_<x>/<id>.jpg`).

        The archive also starts with a `train_<x>/` directory entry, like a `tar czf` of a folder, and holds
        the hostile members when `spec.hostile_archive_members` is set; neither is listed here.
        """
        stem = _archive_stem(name)
        return [f"{stem}/{i}.jpg" for i in self._archive_ids()[stem]]

    def hostile_archive_members(self) -> dict[str, list[str]]:
        """Archive file name -> names of the members an extractor must refuse (empty unless enabled)."""
        out = {}
        for stem in self._archive_groups():
            names = [m.name for m in self._hostile_members(stem)]
            if names:
                out[f"{stem}.tar.gz"] = names
        return out

    def corrupt_offset(self, name: str) -> int | None:
        """Byte offset, in the .tar.gz file, of the invalid deflate block of a `corrupt_archives` archive
        (None for intact ones). Everything before it decompresses fine."""
        stem = _archive_stem(name)
        if stem not in self.spec.corrupt_archives or stem not in self._archive_groups():
            return None
        self.archive_path(name)  # building it records the offset
        return int((self.cache_dir / "archives" / f"{stem}.corrupt-offset").read_text())

    def _make_archive(self, stem: str) -> bytes:
        ids = self._archive_ids()[stem]
        _parallel(self.small_image, ids, None)
        raw = io.BytesIO()
        mtime = 1525132800  # 2018-05-01; fixed metadata: the same spec must give byte-identical archives
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
            folder = tarfile.TarInfo(stem)
            folder.type, folder.mtime, folder.mode = tarfile.DIRTYPE, mtime, 0o755
            tar.addfile(folder)
            for image_id in ids:
                data = self.small_image(image_id)
                member = tarfile.TarInfo(f"{stem}/{image_id}.jpg")
                member.size, member.mtime, member.mode = len(data), mtime, 0o644
                tar.addfile(member, io.BytesIO(data))
            for hostile in self._hostile_members(stem):
                body = b"\xff\xd8 not really a jpeg" if hostile.isreg() else b""
                hostile.size = len(body)
                tar.addfile(hostile, io.BytesIO(body) if body else None)
        payload = raw.getvalue()
        corrupt = stem in self.spec.corrupt_archives
        data, offset = _gzip(payload, corrupt_at=len(payload) // 2 if corrupt else None)
        if corrupt:
            self._storage.write_bytes(f"archives/{stem}.corrupt-offset", str(offset).encode())
        return data

    def archive_path(self, name: str) -> Path:
        """Cache file of archive `name` (`train_3.tar.gz`, `validation.tar.gz`), built on first use."""
        stem = _archive_stem(name)
        if stem not in self._archive_ids():
            raise KeyError(f"no archive {name!r}; this universe has {', '.join(self.archive_names())}")
        return self._cached(f"archives/{stem}.tar.gz", lambda: self._make_archive(stem), shared=True)

    def archive_bytes(self, name: str) -> bytes:
        return self.archive_path(name).read_bytes()

    def prepare(
        self,
        *,
        archives: bool = True,
        thumbnails: bool = False,
        workers: int | None = None,
        progress: ProgressFn | None = None,
    ) -> None:
        """Generate everything up front (originals, CSV metadata, optionally archives and thumbnails)."""
        self.ensure_originals(workers, progress)
        if archives:
            names = self.archive_names()
            for done, name in enumerate(names, 1):
                self.archive_path(name)
                if progress is not None:
                    progress("archives", done, len(names))
        if thumbnails:
            _parallel(self.thumbnail, [i.image_id for i in self.images if i.thumbnail_path], workers)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock between processes (no-op where fcntl does not exist)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: duplicated work, still correct (atomic writes)
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _gzip(payload: bytes, corrupt_at: int | None = None) -> tuple[bytes, int]:
    """A deterministic single-member gzip of `payload` (mtime 0), and the offset of any damage.

    With `corrupt_at`, the deflate stream is flushed to a byte boundary after that many input bytes and a
    block header of the reserved type 3 is inserted: every inflater stops there with "invalid block type"
    (what `pigz -d` reports as invalid deflate data), and the CRC no longer matches.
    """
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    comp = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [header]
    offset = -1
    if corrupt_at is None:
        parts.append(comp.compress(payload))
    else:
        parts += [comp.compress(payload[:corrupt_at]), comp.flush(zlib.Z_FULL_FLUSH)]
        offset = sum(map(len, parts))
        parts += [b"\x06", comp.compress(payload[corrupt_at:])]  # BFINAL=0, BTYPE=11 (reserved)
    parts.append(comp.flush())
    parts.append(zlib.crc32(payload).to_bytes(4, "little") + (len(payload) & 0xFFFFFFFF).to_bytes(4, "little"))
    return b"".join(parts), offset


def _archive_stem(name: str) -> str:
    return name.removesuffix(".tar.gz").rsplit("/", 1)[-1]


def _stage(progress: ProgressFn | None, stage: str, total: int) -> Callable[[int], None] | None:
    if progress is None:
        return None
    return lambda done: progress(stage, done, total)


def _parallel(
    fn: Callable[[str], object], items: list[str], workers: int | None, tick: Callable[[int], None] | None = None
) -> None:
    if not items:
        return
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        for done, _ in enumerate(pool.map(fn, items), 1):
            if tick is not None:
                tick(done)


__all__ = [
    "ALL_MISBEHAVIOURS",
    "ARCHIVE_PREFIX",
    "BOXABLE_CSV_PATH",
    "FULL_CSV_PATH",
    "METADATA_PREFIX",
    "PLACEHOLDER_PATHS",
    "ImageInfo",
    "ImageKind",
    "Misbehaviour",
    "Universe",
    "UniverseSpec",
    "default_cache_dir",
    "md5_b64",
]
