"""Random access into stored containers: zip central-directory and tar header indexes, and `BlobReader`.

Nothing is scanned per read: a zip's central directory is parsed once (one ranged read at the end of the
file) into a member -> offset index, a tar's headers are walked once into the same kind of index, and each
read is then a single `pread` of the member's bytes on a cached file handle. `pread` carries no shared file
offset, so readers are thread-safe and survive `fork` (PyTorch DataLoader workers).
"""

from __future__ import annotations

import os
import struct
import tarfile
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

from oiv4.contracts.errors import BadArchiveError, CorruptImageError
from oiv4.io.locations import Location
from oiv4.io.storage import Storage

# --------------------------------------------------------------------------------------------------
# containers: zip central directory and tar header indexes


class Member(NamedTuple):
    """One member of a container: where its stored bytes start and how to turn them into the file."""

    offset: int  # zip: offset of the local file header; tar: offset of the data
    size: int  # uncompressed size
    compressed_size: int
    method: int  # zip compression method (0 stored, 8 deflate); 0 for tar
    crc: int | None  # zip CRC-32; None for tar


_EOCD = struct.Struct("<4s4H2LH")
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_LOCAL = struct.Struct("<4s2B4HL2L2H")
_MAX_EOCD_SEARCH = _EOCD.size + 0xFFFF  # the EOCD record plus the longest possible archive comment


def index_zip(read_at: Callable[[int, int], bytes], file_size: int, name: str) -> dict[str, Member]:
    """Member index of a zip from its central directory alone (Zip64 aware); raises BadArchiveError.

    `read_at(offset, length)` reads raw bytes: two reads in total, the tail and the central directory.
    Checks that the directory is where the end record says, that every entry parses and that every
    member's header offset lies inside the file: the "central directory is sound" check of verify.
    """
    if file_size < _EOCD.size:
        raise BadArchiveError(f"{name}: {file_size} bytes is too small to be a zip")
    tail_len = min(file_size, _MAX_EOCD_SEARCH)
    tail = read_at(file_size - tail_len, tail_len)
    pos = tail.rfind(b"PK\x05\x06")
    while pos >= 0 and pos + _EOCD.size + struct.unpack_from("<H", tail, pos + 20)[0] != len(tail):
        pos = tail.rfind(b"PK\x05\x06", 0, pos)  # a signature inside the comment, keep looking
    if pos < 0:
        raise BadArchiveError(f"{name}: no end-of-central-directory record (truncated or not a zip)")
    _, _, _, _, n_total, cd_size, cd_offset, _ = _EOCD.unpack_from(tail, pos)
    eocd_at = file_size - tail_len + pos
    loc_at = pos - _EOCD64_LOCATOR.size
    if loc_at >= 0 and tail[loc_at : loc_at + 4] == b"PK\x06\x07":
        _, _, eocd64_at, _ = _EOCD64_LOCATOR.unpack_from(tail, loc_at)
        rec = read_at(eocd64_at, _EOCD64.size)
        if len(rec) != _EOCD64.size or rec[:4] != b"PK\x06\x06":
            raise BadArchiveError(f"{name}: Zip64 end record missing at offset {eocd64_at}")
        _, _, _, _, _, _, _, n_total, cd_size, cd_offset = _EOCD64.unpack(rec)
        eocd_at = eocd64_at
    if cd_offset + cd_size > eocd_at:
        raise BadArchiveError(
            f"{name}: central directory ({cd_size} bytes at {cd_offset}) overlaps its end record at {eocd_at}"
        )
    cd = read_at(cd_offset, cd_size)
    if len(cd) != cd_size:
        raise BadArchiveError(f"{name}: central directory cut short ({len(cd)} of {cd_size} bytes)")
    members: dict[str, Member] = {}
    p = 0
    unpack = _CENTRAL.unpack_from
    for i in range(n_total):
        if cd[p : p + 4] != b"PK\x01\x02":
            raise BadArchiveError(f"{name}: central directory entry {i} at offset {cd_offset + p} is damaged")
        (_, _, _, _, _, flags, method, _, _, crc, csize, usize, n_len, x_len, c_len, _, _, _, offset) = unpack(cd, p)
        p += _CENTRAL.size
        raw_name = cd[p : p + n_len]
        extra = cd[p + n_len : p + n_len + x_len]
        p += n_len + x_len + c_len
        if p > cd_size:
            raise BadArchiveError(f"{name}: central directory entry {i} runs past the directory's end")
        if 0xFFFFFFFF in (usize, csize, offset):
            usize, csize, offset = _zip64_extra(extra, usize, csize, offset, name)
        member = raw_name.decode("utf-8" if flags & 0x800 else "cp437")
        if member.endswith("/"):
            continue  # a directory entry (`zip -r` writes them): not an image
        if flags & 0x1:
            raise BadArchiveError(f"{name}: member {member!r} is encrypted")
        if offset + _LOCAL.size + csize > cd_offset:
            raise BadArchiveError(f"{name}: member {member!r} claims data past the central directory")
        members[member] = Member(offset, usize, csize, method, crc)
    if p != cd_size:
        raise BadArchiveError(f"{name}: central directory holds {cd_size - p} bytes after its {n_total} entries")
    return members


def _zip64_extra(extra: bytes, usize: int, csize: int, offset: int, name: str) -> tuple[int, int, int]:
    p = 0
    while p + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, p)
        if tag == 0x0001:
            data, q = extra[p + 4 : p + 4 + length], 0
            vals = [usize, csize, offset]
            for k in range(3):  # present in this order, only for fields saturated in the fixed header
                if vals[k] == 0xFFFFFFFF:
                    if q + 8 > len(data):
                        raise BadArchiveError(f"{name}: Zip64 extra field too short")
                    vals[k] = struct.unpack_from("<Q", data, q)[0]
                    q += 8
            return vals[0], vals[1], vals[2]
        p += 4 + length
    raise BadArchiveError(f"{name}: sizes saturated at 4 GiB but no Zip64 extra field")


def index_tar(fileobj: Any, file_size: int, name: str) -> dict[str, Member]:
    """Member index of an uncompressed tar from one walk over its headers; raises BadArchiveError."""
    members: dict[str, Member] = {}
    try:
        with tarfile.open(fileobj=fileobj, mode="r:") as tf:
            for ti in tf:
                if not ti.isfile():
                    continue
                if ti.offset_data + ti.size > file_size:
                    raise BadArchiveError(
                        f"{name}: member {ti.name!r} needs {ti.size} bytes at {ti.offset_data}, file has {file_size}"
                    )
                members[ti.name] = Member(ti.offset_data, ti.size, ti.size, 0, None)
    except tarfile.TarError as exc:
        raise BadArchiveError(f"{name}: not a readable tar ({exc})") from exc
    return members


# --------------------------------------------------------------------------------------------------
# byte access with cached handles


class BlobReader:
    """Reads image bytes by `Location` under a Storage root; caches container indexes and file handles.

    Local roots use `os.pread` on cached file objects (at most `max_open`, least recently used
    closed first); fsspec roots use one ranged read per member. Safe to share between threads and
    to pickle (handles and indexes are rebuilt lazily on the other side).
    """

    def __init__(self, storage: Storage, max_open: int = 64) -> None:
        self.storage = storage
        self.max_open = max_open
        self._lock = threading.Lock()
        self._handles: OrderedDict[str, Any] = OrderedDict()
        self._indexes: dict[str, dict[str, Member]] = {}
        self._index_errors: dict[str, BadArchiveError] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"storage": self.storage, "max_open": self.max_open}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["storage"], state["max_open"])  # type: ignore[misc]

    # raw access ----------------------------------------------------------------------------
    def _handle(self, rel: str) -> Any:
        with self._lock:
            fh = self._handles.get(rel)
            if fh is not None:
                self._handles.move_to_end(rel)
                return fh
        fh = open(self.storage.local_path(rel), "rb", buffering=0)  # noqa: SIM115 - cached, closed on eviction
        with self._lock:
            other = self._handles.get(rel)
            if other is not None:  # another thread opened it meanwhile: share theirs
                fh.close()
                return other
            self._handles[rel] = fh
            while len(self._handles) > self.max_open:
                # Dropped, not closed: a thread may still be reading it; refcounting closes it after.
                self._handles.popitem(last=False)
        return fh

    def read_at(self, rel: str, offset: int, length: int) -> bytes:
        """`length` bytes of file `rel` from `offset` (fewer only at the end of the file)."""
        if self.storage.round_trips:  # one ranged GET; a cached handle would buy nothing
            return self.storage.read_range(rel, offset, length)
        fh = self._handle(rel)  # held until the reads are done: eviction must not close it under us
        fd = fh.fileno()
        out = os.pread(fd, length, offset)
        while len(out) < length:  # pread may return short on some filesystems; stop only at EOF
            more = os.pread(fd, length - len(out), offset + len(out))
            if not more:
                break
            out += more
        del fh
        return out

    def close(self) -> None:
        with self._lock:
            for fh in self._handles.values():
                fh.close()
            self._handles.clear()

    # containers ----------------------------------------------------------------------------
    def index(self, container: str) -> dict[str, Member]:
        """The member index of a zip or tar, built on first use and kept; raises BadArchiveError."""
        idx = self._indexes.get(container)
        if idx is not None:
            return idx
        if container in self._index_errors:
            raise self._index_errors[container]
        try:
            size = self.storage.size(container)
        except FileNotFoundError as exc:
            raise BadArchiveError(f"{container}: archive file is missing") from exc
        try:
            if container.endswith(".zip"):
                idx = index_zip(lambda o, n: self.read_at(container, o, n), size, container)
            else:
                with self.storage.open(container) as fh:
                    idx = index_tar(fh, size, container)
        except BadArchiveError as exc:
            self._index_errors[container] = exc
            raise
        self._indexes[container] = idx
        return idx

    def find_member(self, loc: Location) -> tuple[str, Member] | None:
        """The member `loc` names, as (member name, entry); None when the container lacks it.

        A webdataset location may name the sample key (`<tar>:<id>`, as the fetch stage writes it)
        rather than the member (`<tar>:<id>.jpg`): the key resolves to its `.jpg` member.
        """
        assert loc.container is not None
        idx = self.index(loc.container)
        member = idx.get(loc.path)
        if member is not None:
            return loc.path, member
        if loc.kind == "tar" and not loc.path.endswith(".jpg"):
            member = idx.get(f"{loc.path}.jpg")
            if member is not None:
                return f"{loc.path}.jpg", member
        return None

    def read(self, loc: Location) -> bytes:
        """The stored bytes at `loc`: a file's content or a container member's uncompressed data."""
        if loc.container is None:
            try:
                return self.storage.read_bytes(loc.path)
            except FileNotFoundError as exc:
                raise CorruptImageError(f"{loc}: file is missing") from exc
        found = self.find_member(loc)
        if found is None:
            raise CorruptImageError(f"{loc}: no such member in {loc.container}")
        name, member = found
        if loc.kind == "tar":
            data = self.read_at(loc.container, member.offset, member.size)
            if len(data) != member.size:
                raise CorruptImageError(f"{loc}: member cut short ({len(data)} of {member.size} bytes)")
            return data
        return self._read_zip_member(loc, name, member)

    def _read_zip_member(self, loc: Location, name: str, m: Member) -> bytes:
        container = loc.container
        assert container is not None
        # One read covers the local header, the name, a typical extra field and the data.
        want = _LOCAL.size + len(name.encode()) + 64 + m.compressed_size
        buf = self.read_at(container, m.offset, want)
        if len(buf) < _LOCAL.size or buf[:4] != b"PK\x03\x04":
            raise CorruptImageError(f"{loc}: local file header damaged at offset {m.offset}")
        n_len, x_len = struct.unpack_from("<HH", buf, 26)
        start = _LOCAL.size + n_len + x_len
        data = buf[start : start + m.compressed_size]
        if len(data) < m.compressed_size:
            data = self.read_at(container, m.offset + start, m.compressed_size)
        if len(data) != m.compressed_size:
            raise CorruptImageError(f"{loc}: member data cut short ({len(data)} of {m.compressed_size} bytes)")
        if m.method == 8:
            try:
                d = zlib.decompressobj(-15)
                data = d.decompress(data) + d.flush()
            except zlib.error as exc:
                raise CorruptImageError(f"{loc}: deflate data damaged ({exc})") from exc
        elif m.method != 0:
            data = self._read_zip_member_fallback(loc)
        if len(data) != m.size or zlib.crc32(data) != m.crc:
            raise CorruptImageError(f"{loc}: CRC-32 or size mismatch (member damaged)")
        return data

    def _read_zip_member_fallback(self, loc: Location) -> bytes:
        # bzip2/lzma members: rare enough that the stdlib's slower path is fine.
        import zipfile

        assert loc.container is not None
        with self.storage.open(loc.container) as fh, zipfile.ZipFile(fh) as zf:
            try:
                return zf.read(loc.path)
            except (zipfile.BadZipFile, NotImplementedError, OSError) as exc:
                raise CorruptImageError(f"{loc}: {exc}") from exc

    def stored_size(self, loc: Location) -> int | None:
        """Size of the stored image (file size or member's uncompressed size); None when absent."""
        if loc.container is None:
            try:
                return self.storage.size(loc.path)
            except FileNotFoundError:
                return None
        found = self.find_member(loc)
        return None if found is None else found[1].size
