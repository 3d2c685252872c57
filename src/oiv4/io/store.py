"""Output layouts of the URL sets: where a shard's finished JPEGs go.

- `folder` (default, the seed notebook's): `<set>/images/<id[:2]>/<id>.jpg`, one atomic write per image.
- `zip`: one `<set>/images/<set>_NNNNN.zip` per shard, members `<id>.jpg` (stored, not deflated: JPEGs
  do not compress), in manifest order.
- `webdataset`: one `<set>/webdataset/<set>-NNNNN.tar` per shard, keys `<id>` with `<id>.jpg` and
  `<id>.json` (the manifest row), in manifest order.

Archive layouts cannot grow in place atomically, so a shard *stages* each finished image as its own small
file under `<set>/staging/shard-NNNNN/` (atomic, resumable exactly like the folder layout) and packs them
into the archive once, atomically, when the shard ends. Archives are deterministic (fixed timestamps and
ownership, manifest order): the same images always give byte-identical archives. A later
`--retry-failed` that turns failures into successes rebuilds the shard's archive atomically, copying the
existing members byte for byte.

ImageIDs become names only through `LAYOUT.image()`, which refuses anything but 16 hex characters.
"""

from __future__ import annotations

import io
import json
import math
import tarfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.io.locations import member_location
from oiv4.io.storage import TMP_MARK, Storage
from oiv4.io.temps import remove_dead_temps

#: Fixed archive timestamps (zip: 1980-01-01, the earliest DOS date; tar: the epoch) for reproducibility.
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)


def member_name(image_set: ImageSet | str, image_id: str) -> str:
    """`<id>.jpg`, derived from (and so checked by) `LAYOUT.image`."""
    return PurePosixPath(LAYOUT.image(image_set, image_id)).name


def json_metadata(row: Mapping[str, Any]) -> bytes:
    """The webdataset `.json` member: the manifest row, NaN as null, keys in manifest order."""
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
    return json.dumps(clean, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass
class ShardWriter:
    """Puts one shard's finished JPEGs into a layout. Subclasses differ in where bytes go and in `finalize`."""

    storage: Storage
    image_set: ImageSet
    shard: int

    def __post_init__(self) -> None:
        """Subclasses derive their archive path here (the generated __init__ calls it)."""

    # where a finished image's bytes are written while the shard runs
    def staged_path(self, image_id: str) -> str:
        raise NotImplementedError

    def location(self, image_id: str) -> str:
        """The ledger's `location` of a finished image (a path, or `<archive>:<member>`)."""
        raise NotImplementedError

    def put(self, image_id: str, data: bytes) -> str:
        """Write one finished image atomically; returns its location."""
        self.storage.write_bytes(self.staged_path(image_id), data)
        return self.location(image_id)

    def has_staged(self, image_id: str) -> bool:
        return self.storage.exists(self.staged_path(image_id))

    def read_staged(self, image_id: str) -> bytes:
        return self.storage.read_bytes(self.staged_path(image_id))

    def available(self, image_ids: Iterable[str]) -> set[str]:
        """Which of these finished images can still be read (to re-fetch any that were lost)."""
        return set(image_ids)

    def finalize(self, finished: list[Mapping[str, Any]]) -> None:
        """Called once every row of the shard is finished; `finished` = ok manifest rows in row order."""


class FolderWriter(ShardWriter):
    """The seed layout: every image written straight to its final path, atomically."""

    def staged_path(self, image_id: str) -> str:
        return LAYOUT.image(self.image_set, image_id)

    def location(self, image_id: str) -> str:
        return LAYOUT.image(self.image_set, image_id)


class _ArchiveWriter(ShardWriter):
    archive_rel: str = ""

    def staging_dir(self) -> str:
        return LAYOUT.staging_dir(self.image_set, self.shard)

    def staged_path(self, image_id: str) -> str:
        return LAYOUT.staged_image(self.image_set, self.shard, image_id)

    def archive_members(self) -> set[str]:
        raise NotImplementedError

    def available(self, image_ids: Iterable[str]) -> set[str]:
        ids = list(image_ids)
        if not ids:
            return set()
        members = self.archive_members() if self.storage.exists(self.archive_rel) else set()
        staged = {PurePosixPath(p).name for p in self.storage.glob(f"{self.staging_dir()}/*.jpg")}
        return {i for i in ids if f"{i}.jpg" in members or f"{i}.jpg" in staged}

    def finalize(self, finished: list[Mapping[str, Any]]) -> None:
        names = [member_name(self.image_set, r["ImageID"]) for r in finished]
        exists = self.storage.exists(self.archive_rel)
        have = {m for m in self.archive_members() if m.endswith(".jpg")} if exists else set()
        staged = {PurePosixPath(p).name for p in self.storage.glob(f"{self.staging_dir()}/*.jpg")}
        # Rebuild only when something is new (a staged file wins over an old member: it is the re-fetch of
        # an image `verify` found broken) or when members must go; otherwise the archive is left untouched.
        if not exists or set(names) != have or staged & set(names):
            old = self._open_old() if have else None
            try:
                with self.storage.open_atomic(self.archive_rel) as fh:
                    self._pack(fh, finished, have - staged, old)
            finally:
                if old is not None:
                    old.close()
        self.storage.remove(self.staging_dir())
        # The shared `<set>/staging` folder goes with the last shard's staging (others may still use it).
        self.storage.remove_empty_folder(LAYOUT.staging_root(self.image_set))

    def _open_old(self) -> Any:
        raise NotImplementedError

    def _pack(self, fh: Any, finished: list[Mapping[str, Any]], have: set[str], old: Any) -> None:
        raise NotImplementedError


class ZipWriter(_ArchiveWriter):
    """One stored (uncompressed) zip per shard: `<set>/images/<set>_NNNNN.zip`, members `<id>.jpg`."""

    def __post_init__(self) -> None:
        self.archive_rel = LAYOUT.shard_zip(self.image_set, self.shard)

    def location(self, image_id: str) -> str:
        return member_location(self.archive_rel, member_name(self.image_set, image_id))

    def archive_members(self) -> set[str]:
        with self.storage.open(self.archive_rel) as fh, zipfile.ZipFile(fh) as zf:
            return set(zf.namelist())

    def _open_old(self) -> Any:
        return zipfile.ZipFile(self.storage.open(self.archive_rel))

    def _pack(self, fh: Any, finished: list[Mapping[str, Any]], have: set[str], old: Any) -> None:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
            for row in finished:
                name = member_name(self.image_set, row["ImageID"])
                data = old.read(name) if name in have else self.read_staged(row["ImageID"])
                info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
                info.external_attr = 0o644 << 16
                zf.writestr(info, data, compress_type=zipfile.ZIP_STORED)


class WebDatasetWriter(_ArchiveWriter):
    """One tar per shard: `<set>/webdataset/<set>-NNNNN.tar`, `<id>.jpg` + `<id>.json` per key."""

    def __post_init__(self) -> None:
        self.archive_rel = LAYOUT.shard_tar(self.image_set, self.shard)

    def location(self, image_id: str) -> str:
        return member_location(self.archive_rel, member_name(self.image_set, image_id).removesuffix(".jpg"))

    def archive_members(self) -> set[str]:
        with self.storage.open(self.archive_rel) as fh, tarfile.open(fileobj=fh, mode="r:") as tf:
            return set(tf.getnames())

    def _open_old(self) -> Any:
        return tarfile.open(fileobj=self.storage.open(self.archive_rel), mode="r:")

    def _pack(self, fh: Any, finished: list[Mapping[str, Any]], have: set[str], old: Any) -> None:
        # Stream mode ("w|"): works on non-seekable object-store uploads too.
        with tarfile.open(fileobj=fh, mode="w|", format=tarfile.USTAR_FORMAT) as tf:
            for row in finished:
                name = member_name(self.image_set, row["ImageID"])
                if name in have:
                    member = old.extractfile(name)
                    data = member.read() if member else b""
                else:
                    data = self.read_staged(row["ImageID"])
                _add(tf, name, data)
                _add(tf, name.removesuffix(".jpg") + ".json", json_metadata(row))


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tf.addfile(info, io.BytesIO(data))


WRITERS: dict[str, type[ShardWriter]] = {"folder": FolderWriter, "zip": ZipWriter, "webdataset": WebDatasetWriter}


def shard_writer(layout: str, storage: Storage, image_set: ImageSet | str, shard: int) -> ShardWriter:
    """The writer of `layout` ("folder", "zip" or "webdataset") for one shard."""
    try:
        cls = WRITERS[layout]
    except KeyError:
        raise ValueError(f"unknown layout {layout!r}: use one of {', '.join(WRITERS)}") from None
    return cls(storage, ImageSet(image_set), shard)


def remove_stale_temps(storage: Storage, image_set: ImageSet | str) -> int:
    """Delete temp files an interrupted run left beside final paths (local roots; object stores have none).

    Temp files never sit *at* a final path (writes are temp + rename), but a kill between the two leaves
    `<id>.jpg.oiv4tmp-<pid>-...` beside it. Temps of a process still running are left alone.
    """
    images = LAYOUT.images_dir(image_set)
    return remove_dead_temps(
        storage,
        (f"{images}/*/*{TMP_MARK}*", f"{images}/*{TMP_MARK}*", f"{LAYOUT.webdataset_dir(image_set)}/*{TMP_MARK}*"),
    )
