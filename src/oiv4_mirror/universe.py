"""A deterministic mini OpenImages V4 universe: metadata rows, original bytes, CVDF archives.

Everything derives from `UniverseSpec` (above all its `seed`): two universes built from equal specs
have byte-identical CSVs, originals and archives; another seed gives other bytes. Rows are cheap and
built at once; pixels are rendered lazily (threads; Pillow and numpy release the GIL) and cached on
disk under `cache_dir` (default: `oiv4_mirror.cache.default_cache_dir`), written atomically so that
parallel test workers can share one cache.

See `oiv4_mirror` for the universe and the misbehaviours it serves.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import threading
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from oiv4.contracts.schema import COLUMNS
from oiv4.io.storage import Storage
from oiv4_mirror.archives import CvdfArchives
from oiv4_mirror.cache import default_cache_dir, file_lock, parallel, stage
from oiv4_mirror.duplicates import HARD_NEGATIVE, copy_picture, other_shot
from oiv4_mirror.images import (
    PLACEHOLDER_PATHS,
    ImageKind,
    damaged_jpeg,
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
from oiv4_mirror.rows import build_rows
from oiv4_mirror.spec import (
    ALL_MISBEHAVIOURS,
    ARCHIVE_PREFIX,
    BOXABLE_CSV_PATH,
    FULL_CSV_PATH,
    GENERATOR_VERSION,
    GONE_PHOTO,
    METADATA_PREFIX,
    ImageInfo,
    Misbehaviour,
    ProgressFn,
    UniverseSpec,
    md5_b64,
)


class Universe(CvdfArchives):
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
        self.images, self._boxable_perm = build_rows(self.spec)
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
        with self._key_lock(rel), file_lock(self.cache_dir / "locks" / rel) if shared else nullcontext():
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

    # ---- planted duplicates ---------------------------------------------------------------------
    def _upright(self, info: ImageInfo, width: int, height: int) -> Image.Image:
        """The upright picture of `info` at `width` x `height`; a planted row is made from its source's picture."""
        if not info.copy_of:
            return render_picture(self.spec.seed, info.index, width, height, self._noise())
        src = self._by_id[info.copy_of]
        if info.variant == HARD_NEGATIVE:
            wide = render_picture(self.spec.seed, src.index, src.width * 3 // 2, src.height, self._noise())
            picture = other_shot(wide, src.width)
        else:
            source = render_picture(self.spec.seed, src.index, src.width, src.height, self._noise())
            picture = copy_picture(info.variant, source)
        if picture.size != (width, height):
            picture = picture.resize((width, height), Image.Resampling.LANCZOS)
        return picture

    def planted_duplicates(self) -> list[tuple[str, str, str]]:
        """Ground truth: (copy ImageID, source ImageID, variant) for every planted copy, in full-CSV order."""
        return [(i.image_id, i.copy_of, i.variant) for i in self.images if i.copy_of and i.variant != HARD_NEGATIVE]

    def planted_negatives(self) -> list[tuple[str, str]]:
        """Ground truth: (hard negative ImageID, ImageID of the photo it resembles); neither duplicates the other."""
        return [(i.image_id, i.copy_of) for i in self.images if i.variant == HARD_NEGATIVE]

    # ---- originals ---------------------------------------------------------------------------
    def _make_original(self, info: ImageInfo) -> bytes:
        if info.misbehaviour is Misbehaviour.wrong_content_type:
            return html_page(info.image_id)
        if info.misbehaviour is Misbehaviour.decompression_bomb:
            return self.bomb_bytes()
        upright = self._upright(info, info.width, info.height)
        data = encode(stored_orientation(upright, info.rotation), info.kind)
        if info.misbehaviour is Misbehaviour.corrupt_jpeg:
            data = damaged_jpeg(data)
        return data

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
        with file_lock(self.cache_dir / "locks" / "originals"):
            self._load_index()
            todo = [i.image_id for i in self.images if i.image_id not in self._meta]
            if not todo:
                return
            parallel(self.original_path, todo, workers, stage(progress, "originals", len(todo)))
            index = {k: list(v) for k, v in sorted(self._meta.items())}
            self._storage.write_bytes("index.json", json.dumps(index).encode())

    # ---- shrunk copies --------------------------------------------------------------------------
    def _make_scaled(self, info: ImageInfo, max_side: int) -> bytes:
        w, h = shrunk_size(info.width, info.height, max_side)
        upright = self._upright(info, w, h)
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
            parallel(self.thumbnail, [i.image_id for i in self.images if i.thumbnail_path], workers)


__all__ = [
    "ALL_MISBEHAVIOURS",
    "ARCHIVE_PREFIX",
    "BOXABLE_CSV_PATH",
    "FULL_CSV_PATH",
    "GENERATOR_VERSION",
    "GONE_PHOTO",
    "METADATA_PREFIX",
    "PLACEHOLDER_PATHS",
    "ImageInfo",
    "ImageKind",
    "Misbehaviour",
    "ProgressFn",
    "Universe",
    "UniverseSpec",
    "default_cache_dir",
    "md5_b64",
]
