"""The CVDF side of a universe: `train_<x>.tar.gz` / `validation.tar.gz` archives of shrunk JPEGs, with the
optional damage (missing images, hostile members, a corrupt deflate block) tests ask for."""

from __future__ import annotations

import io
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path

from oiv4.contracts.schema import Outcome
from oiv4.io.storage import Storage
from oiv4_mirror.cache import parallel
from oiv4_mirror.spec import ImageInfo, UniverseSpec, archive_stem


class CvdfArchives:
    """The archive methods of `Universe` (a mixin: it relies on the attributes declared here)."""

    spec: UniverseSpec
    cache_dir: Path
    _storage: Storage
    _by_id: dict[str, ImageInfo]
    _missing_from_archive: set[str]
    boxable_ids: Callable[[], list[str]]
    validation_ids: Callable[[], list[str]]
    small_image: Callable[[str], bytes]
    _cached: Callable[..., Path]

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
        stem = archive_stem(name)
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
        stem = archive_stem(name)
        if stem not in self.spec.corrupt_archives or stem not in self._archive_groups():
            return None
        self.archive_path(name)  # building it records the offset
        return int((self.cache_dir / "archives" / f"{stem}.corrupt-offset").read_text())

    def _make_archive(self, stem: str) -> bytes:
        ids = self._archive_ids()[stem]
        parallel(self.small_image, ids, None)
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
        stem = archive_stem(name)
        if stem not in self._archive_ids():
            raise KeyError(f"no archive {name!r}; this universe has {', '.join(self.archive_names())}")
        return self._cached(f"archives/{stem}.tar.gz", lambda: self._make_archive(stem), shared=True)

    def archive_bytes(self, name: str) -> bytes:
        return self.archive_path(name).read_bytes()


def _gzip(payload: bytes, corrupt_at: int | None = None) -> tuple[bytes, int]:
    """A deterministic single-member gzip of `payload` (mtime 0), and the offset of any damage.

    With `corrupt_at`, the deflate stream is flushed to a byte boundary after that many input bytes and a
    block header of the reserved type 3 is inserted: every inflater stops there with "invalid block type"
    (what `pigz -d` reports as invalid deflate data), and the CRC does not match.
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
