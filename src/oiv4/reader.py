"""Read the built sets by ImageID, whatever layout they were stored in.

    ds = oiv4.open("/data/open_images")
    img = ds["train"]["000002b66c9c498e"]          # a PIL image
    for image_id, img in ds["validation"]: ...     # plan order

A set's images are found through its ledger: each `ok` row's `location` is either a relative file path
(seed layout `<set>/images/<id[:2]>/<id>.jpg`) or `<container>:<member>` where the container is a zip
(per-shard zips, the CVDF archives converted to zip) or an uncompressed webdataset tar. Sets without a
ledger (built by the old notebook) are found from the files present instead.

Random access is the point, so nothing is scanned per read: a zip's central directory is parsed once
(one ranged read at the end of the file) into a member -> offset index, a tar's headers are walked once
into the same kind of index, and each read is then a single `pread` of the member's bytes on a cached
file handle. `pread` carries no shared file offset, so readers are thread-safe and survive `fork`
(PyTorch DataLoader workers).
"""

from __future__ import annotations

import functools
import io
import os
import struct
import tarfile
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .layout import LAYOUT
from .schema import LEDGER_SCHEMA, ImageSet, Outcome, is_valid_image_id
from .storage import TMP_MARK, Storage

if TYPE_CHECKING:
    from PIL import Image

    from .torch_dataset import TorchImageDataset

# --------------------------------------------------------------------------------------------------
# errors


class ReaderError(Exception):
    """Base class of everything the reader raises on purpose."""


class ImageNotFoundError(ReaderError, KeyError):
    """The ImageID is not stored in this set (never planned, or planned but its outcome is not ok)."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else "image not found"


class BadArchiveError(ReaderError, OSError):
    """A zip or tar container cannot be indexed (truncated, not an archive, unsound central directory)."""


class CorruptImageError(ReaderError, OSError):
    """The stored bytes of one image are damaged (missing member data, CRC mismatch, short file)."""


class BadLocationError(ReaderError, ValueError):
    """A ledger `location` that cannot name a stored image (absolute, `..`, unknown container type)."""


# --------------------------------------------------------------------------------------------------
# locations


@dataclass(frozen=True)
class Location:
    """Where one image's bytes live: a plain file (`container` None) or a member of a zip/tar."""

    path: str  # the file, or the member name inside `container`
    container: str | None = None

    @property
    def kind(self) -> str:
        """ "file", "zip" or "tar"."""
        if self.container is None:
            return "file"
        return "zip" if self.container.endswith(".zip") else "tar"

    def __str__(self) -> str:
        return self.path if self.container is None else f"{self.container}:{self.path}"


def _is_plain_relpath(rel: str) -> bool:
    # Ledger locations are joined to the root: refuse anything that could step outside it.
    return bool(rel) and not rel.startswith("/") and "\\" not in rel and "" not in (parts := rel.split("/")) and (
        ".." not in parts
    )


@functools.lru_cache(maxsize=4096)
def _is_container(container: str) -> bool:
    # Millions of rows share a few hundred containers: check each once.
    return _is_plain_relpath(container)


def _check_relpath(rel: str, original: str, *, container: bool = False) -> None:
    if not (_is_container(rel) if container else _is_plain_relpath(rel)):
        raise BadLocationError(f"refusing location {original!r}: not a plain relative path under the root")


def parse_location(location: str) -> Location:
    """Parse a ledger `location`: `a/b/<id>.jpg`, `x.zip:<member>` or `x.tar:<member>`."""
    if not isinstance(location, str):
        raise BadLocationError(f"location must be a string, got {location!r}")
    container, sep, member = location.partition(":")
    if not sep:
        _check_relpath(location, location)
        return Location(location)
    _check_relpath(container, location, container=True)
    if not member or member.startswith("/") or ".." in member.split("/"):
        raise BadLocationError(f"refusing location {location!r}: bad member name")
    if not (container.endswith(".zip") or container.endswith(".tar")):
        raise BadLocationError(
            f"location {location!r}: container must be a .zip or an uncompressed .tar (random access)"
        )
    return Location(member, container)


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
        if not self.storage.local:
            return bytes(self.storage.fs.cat_file(self.storage.path(rel), start=offset, end=offset + length))
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


def staged_path(image_set: ImageSet | str, shard: int | None, image_id: str) -> str | None:
    """Where the fetch stage stages a finished image until its shard's zip/tar is packed.

    Mirrors `store._ArchiveWriter.staged_path` (a test keeps the two equal); spelled out here because
    verify asks for it once per row and building a writer per row would dominate its run time.
    """
    if shard is None or not is_valid_image_id(image_id):
        return None
    return f"{ImageSet(image_set).value}/staging/shard-{int(shard):05d}/{image_id}.jpg"


# --------------------------------------------------------------------------------------------------
# ledgers and inventories


#: Ledger columns the reader keeps in memory for every set (the manifest reads the rest on demand).
READER_COLUMNS = ("image_id", "shard", "row", "outcome", "location", "stored_bytes", "started_at")


def load_ledger(
    storage: Storage,
    image_set: ImageSet | str,
    columns: tuple[str, ...] | None = None,
    *,
    row_filter: int | None = None,
) -> pa.Table:
    """A set's ledger, latest row per manifest row, sorted by `row`: same rows as `ledger.read_set`.

    Reads only `columns`, one thread per file, and deduplicates only when a row was recorded twice (a
    retry): opening a million-row ledger takes a fraction of a second. `row_filter` reads one row's
    history only (files are first probed by their small `row` column).
    """
    image_set = ImageSet(image_set)
    d = LAYOUT.ledger_dir(image_set)
    rels = storage.glob(f"{d}/shard-*.parquet") + storage.glob(f"{d}/shard-*.parts/part-*.parquet")
    cols = list(columns or LEDGER_SCHEMA.names)
    for need in ("row", "started_at"):
        if need not in cols:
            cols.append(need)
    schema = pa.schema([LEDGER_SCHEMA.field(c) for c in cols])
    if row_filter is not None:
        probes = _read_files(storage, rels, ["row"])
        rels = [r for r, t in zip(rels, probes, strict=True) if pc.any(pc.equal(t["row"], row_filter)).as_py()]
    if not rels:
        return LEDGER_SCHEMA.empty_table().select(list(columns or LEDGER_SCHEMA.names))
    table = pa.concat_tables([t.cast(schema) for t in _read_files(storage, rels, cols)])
    if row_filter is not None:
        table = table.filter(pc.equal(table["row"], row_filter))
    rows = _int64s(table["row"])
    if len(rows) > 1 and not bool((rows[1:] > rows[:-1]).all()):
        if len(np.unique(rows)) != len(rows):
            table = _latest_per_row(table)
        else:
            table = table.take(pc.sort_indices(table["row"]))  # shards listed out of row order
    return table.select(list(columns or LEDGER_SCHEMA.names))


def _int64s(col: pa.ChunkedArray) -> np.ndarray:
    """A non-null int64 column as numpy, straight from its buffers (`to_numpy` imports pandas: +0.3 s)."""
    arr = col.combine_chunks()
    if arr.null_count:
        raise ValueError("ledger column `row` has nulls")
    return np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + len(arr)]


def _read_files(storage: Storage, rels: list[str], columns: list[str]) -> list[pa.Table]:
    # ParquetFile per file on a few threads: as fast as pyarrow.dataset here, without its import cost.
    from concurrent.futures import ThreadPoolExecutor

    def one(rel: str) -> pa.Table:
        with storage.open(rel) as fh:
            return pq.ParquetFile(fh).read(columns=columns)

    if len(rels) == 1:
        return [one(rels[0])]
    with ThreadPoolExecutor(min(8, len(rels))) as pool:
        return list(pool.map(one, rels))


def _latest_per_row(table: pa.Table) -> pa.Table:
    # Same rule as ledger._dedupe_latest: a retried row supersedes the one it retried.
    import duckdb

    con = duckdb.connect()
    con.register("t", table)
    return con.sql(
        """SELECT * EXCLUDE (rn) FROM (
             SELECT *, row_number() OVER (PARTITION BY "row" ORDER BY started_at DESC NULLS LAST) AS rn FROM t)
           WHERE rn = 1 ORDER BY "row" """
    ).to_arrow_table()


def read_plan(storage: Storage, image_set: ImageSet | str) -> pa.Table | None:
    """The set's plan manifest (12 metadata columns + `row`), or None when it was never planned."""
    rel = LAYOUT.plan(image_set)
    if not storage.exists(rel):
        return None
    with storage.open(rel) as fh:
        return pq.read_table(fh)


@dataclass
class Inventory:
    """What is on disk for a set: loose image files, containers, and temp files a kill left behind."""

    files: dict[str, int] = field(default_factory=dict)  # relpath -> size, loose `.jpg` files
    containers: dict[str, int] = field(default_factory=dict)  # relpath -> size, `.zip` / `.tar`
    temp: list[str] = field(default_factory=list)


def scan_set(storage: Storage, image_set: ImageSet | str) -> Inventory:
    """List every image file and container under `<set>/` with its size (one walk, no reads)."""
    top = ImageSet(image_set).value
    inv = Inventory()
    for rel, size in _walk(storage, top):
        name = rel.rsplit("/", 1)[-1]
        if TMP_MARK in name:
            inv.temp.append(rel)
        elif name.endswith((".zip", ".tar")):
            inv.containers[rel] = size
        elif name.endswith(".jpg"):
            inv.files[rel] = size
        # anything else (.tar.gz sources kept beside, features/*.h5) is not ours to judge
    inv.temp.sort()
    return inv


def _walk(storage: Storage, top: str) -> Iterator[tuple[str, int]]:
    if storage.local:
        base = storage.local_path(top)
        prefix = len(storage.root) + 1
        for dirpath, _dirs, files in os.walk(base):
            for f in files:
                full = os.path.join(dirpath, f)
                try:
                    yield full[prefix:].replace(os.sep, "/"), os.stat(full).st_size
                except FileNotFoundError:
                    continue  # removed while we walked (a writer's temp file being renamed)
        return
    fs = storage.fs
    root = fs._strip_protocol(storage.root).rstrip("/")
    if not fs.exists(f"{root}/{top}"):
        return
    for path, info in sorted(fs.find(f"{root}/{top}", detail=True).items()):
        if info.get("type", "file") == "file":
            yield path[len(root) + 1 :], int(info.get("size") or 0)


def _inventory_ledger(storage: Storage, blobs: BlobReader, image_set: ImageSet, plan: pa.Table | None) -> pa.Table:
    """Pseudo-ledger of `ok` rows for a set built without a ledger (the old notebook's output)."""
    inv = scan_set(storage, image_set)
    locs: dict[str, str] = {}
    for rel in inv.files:
        image_id = rel.rsplit("/", 1)[-1][:-4]
        if is_valid_image_id(image_id):
            locs[image_id] = rel
    for container in sorted(inv.containers):
        try:
            members = blobs.index(container)
        except BadArchiveError:
            continue  # verify reports it; the reader serves what it can
        for member in members:
            name = member.rsplit("/", 1)[-1]
            if name.endswith(".jpg") and is_valid_image_id(name[:-4]):
                locs.setdefault(name[:-4], f"{container}:{member}")
    if plan is not None:
        ids = plan["ImageID"].to_pylist()
        pairs = [(r, i) for r, i in enumerate(ids) if i in locs]
    else:
        pairs = list(enumerate(sorted(locs)))
    return pa.table(
        {
            "image_id": pa.array([i for _, i in pairs], pa.string()),
            "shard": pa.array([0] * len(pairs), pa.int32()),
            "row": pa.array([r for r, _ in pairs], pa.int64()),
            "outcome": pa.array([Outcome.ok.value] * len(pairs), pa.string()),
            "location": pa.array([locs[i] for _, i in pairs], pa.string()),
            "stored_bytes": pa.array([None] * len(pairs), pa.int64()),
            "started_at": pa.array([None] * len(pairs), pa.timestamp("ms", tz="UTC")),
        }
    )


# --------------------------------------------------------------------------------------------------
# ImageID lookup without a million-entry dict

_HEX = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i


def ids_to_keys(ids: pa.Array | pa.ChunkedArray) -> np.ndarray | None:
    """16-hex ImageIDs as uint64 keys (vectorised); None when any ID is not 16 lowercase hex."""
    arr = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    arr = arr.cast(pa.string())
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    if arr.null_count:
        return None
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset : arr.offset + n + 1]
    if not np.all(np.diff(offsets) == 16):
        return None
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]].reshape(n, 16)
    nibbles = _HEX[data]
    if (nibbles == 255).any():
        return None
    # Two nibbles per byte, then the 8 bytes of each row read as one big-endian integer.
    packed = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]
    return np.ascontiguousarray(packed).view(">u8").ravel().astype(np.uint64)


class _IdIndex:
    """ImageID -> position, as a sorted uint64 array (8 bytes per image instead of a ~100-byte dict entry)."""

    def __init__(self, ids: pa.ChunkedArray) -> None:
        keys = ids_to_keys(ids)
        self._dict: dict[str, int] | None = None
        if keys is None:  # not all hex (a pseudo-ledger of odd names): a dict is fine at that size
            self._dict = {i: p for p, i in enumerate(ids.to_pylist())}
            return
        self._order = np.argsort(keys, kind="stable")
        self._keys = keys[self._order]

    def find(self, image_id: str) -> int | None:
        if self._dict is not None:
            return self._dict.get(image_id)
        if not is_valid_image_id(image_id):
            return None
        key = np.uint64(int(image_id, 16))
        pos = int(np.searchsorted(self._keys, key))
        if pos < len(self._keys) and self._keys[pos] == key:
            return int(self._order[pos])
        return None


# --------------------------------------------------------------------------------------------------
# the public API


class SetReader:
    """One set's stored images: `len()`, `ids()`, `[image_id]`, iteration in plan order, `.manifest`.

    Only images whose latest ledger outcome is `ok` are part of the set as read; everything planned is
    in `.manifest` with its outcome and reason. Loading is lazy: nothing is read until first use.
    """

    def __init__(self, storage: Storage, image_set: ImageSet | str, blobs: BlobReader | None = None) -> None:
        self.storage = storage
        self.image_set = ImageSet(image_set)
        self.blobs = blobs or BlobReader(storage)
        self._ok: pa.Table | None = None
        self._index: _IdIndex | None = None
        self._not_ok: pa.Table | None = None
        self._has_ledger: bool | None = None

    def __repr__(self) -> str:
        return f"<oiv4 set {self.image_set.value!r}: {len(self)} images, layout {self.layout}>"

    def __getstate__(self) -> dict[str, Any]:
        # The in-memory ledger travels (cheap Arrow buffers); the ID index is rebuilt on demand.
        state = dict(self.__dict__)
        state["_index"] = None
        return state

    # loading -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.image_set.value

    @property
    def has_ledger(self) -> bool:
        """False for sets built without a ledger (their images are found from the files present)."""
        if self._has_ledger is None:
            d = LAYOUT.ledger_dir(self.image_set)
            self._has_ledger = bool(
                self.storage.glob(f"{d}/shard-*.parquet") or self.storage.glob(f"{d}/shard-*.parts/part-*.parquet")
            )
        return self._has_ledger

    def _load(self) -> pa.Table:
        if self._ok is None:
            if self.has_ledger:
                ledger = load_ledger(self.storage, self.image_set, READER_COLUMNS)
                is_ok = pc.equal(ledger["outcome"], Outcome.ok.value)
                if pc.all(is_ok).as_py() is not False:  # the common case for archive sets: nothing to drop
                    self._not_ok, ok = ledger.slice(0, 0).select(["image_id", "row", "outcome"]), ledger
                else:
                    # Kept to explain a miss ("planned, but http_404"); failures only, to stay small.
                    self._not_ok = ledger.filter(pc.invert(is_ok)).select(["image_id", "row", "outcome"])
                    ok = ledger.filter(is_ok)
            else:
                ok = _inventory_ledger(
                    self.storage, self.blobs, self.image_set, read_plan(self.storage, self.image_set)
                )
            self._ok = ok.combine_chunks()
        return self._ok

    def _position(self, image_id: str) -> int:
        if self._index is None:
            self._index = _IdIndex(self._load()["image_id"])
        pos = self._index.find(image_id)
        if pos is None:
            raise ImageNotFoundError(self._why_missing(image_id))
        return pos

    def _why_missing(self, image_id: str) -> str:
        if not is_valid_image_id(image_id):
            return f"{image_id!r} is not an ImageID (16 lowercase hex characters)"
        if self._not_ok is not None:
            t = self._not_ok
            hit = t.filter(pc.equal(t["image_id"], image_id))
            if hit.num_rows:
                outcome = hit["outcome"][0].as_py()
                reason = self.ledger_row(int(hit["row"][0].as_py())).get("reason")
                return f"{image_id} is not stored in {self.name}: outcome {outcome} ({reason})"
        return f"{image_id} is not in set {self.name}"

    # the set as a collection -----------------------------------------------------------------
    def __len__(self) -> int:
        return self._load().num_rows

    def __contains__(self, image_id: object) -> bool:
        return isinstance(image_id, str) and self._index_find(image_id) is not None

    def _index_find(self, image_id: str) -> int | None:
        if self._index is None:
            self._index = _IdIndex(self._load()["image_id"])
        return self._index.find(image_id)

    def ids(self) -> list[str]:
        """ImageIDs of the stored images, in plan order."""
        return self._load()["image_id"].to_pylist()

    def location(self, image_id: str) -> Location:
        """Where `image_id` is stored (file path, or container and member)."""
        return parse_location(self._location_at(self._position(image_id)))

    def _location_at(self, pos: int) -> str:
        ok = self._load()
        loc = ok["location"][pos].as_py()
        if loc is None:  # an ok row without a location: the seed layout is the only sane guess
            return LAYOUT.image(self.image_set, ok["image_id"][pos].as_py())
        return loc

    def read_bytes(self, image_id: str) -> bytes:
        """The stored JPEG bytes of `image_id`; raises ImageNotFoundError or CorruptImageError."""
        return self._read_pos(self._position(image_id))

    def _read_pos(self, pos: int) -> bytes:
        loc = parse_location(self._location_at(pos))
        try:
            return self.blobs.read(loc)
        except (CorruptImageError, BadArchiveError):
            if loc.container is None:
                raise
            # A shard that has not finished yet keeps its images staged beside the archive it will pack.
            ok = self._load()
            staged = staged_path(self.image_set, ok["shard"][pos].as_py(), ok["image_id"][pos].as_py())
            if staged is None or not self.storage.exists(staged):
                raise
            return self.storage.read_bytes(staged)

    def read_bytes_at(self, position: int) -> bytes:
        """Bytes of the `position`-th stored image in plan order (what a PyTorch Dataset indexes by)."""
        n = len(self)
        if not -n <= position < n:
            raise IndexError(f"position {position} out of range for {n} images")
        return self._read_pos(position % n)

    def image_id_at(self, position: int) -> str:
        return self._load()["image_id"][position].as_py()

    def __getitem__(self, key: str | int) -> Image.Image:
        """`reader[image_id]` (or `reader[position]`) -> the decoded PIL image."""
        data = self.read_bytes_at(key) if isinstance(key, int) else self.read_bytes(key)
        return decode(data, str(key))

    def get(self, image_id: str, default: Any = None) -> Image.Image | Any:
        try:
            return self[image_id]
        except ImageNotFoundError:
            return default

    def __iter__(self) -> Iterator[tuple[str, Image.Image]]:
        """(image_id, PIL image) pairs in plan order."""
        for pos, image_id in enumerate(self.ids()):
            yield image_id, decode(self.read_bytes_at(pos), image_id)

    def iter_bytes(self) -> Iterator[tuple[str, bytes]]:
        """(image_id, JPEG bytes) pairs in plan order, without decoding."""
        for pos, image_id in enumerate(self.ids()):
            yield image_id, self.read_bytes_at(pos)

    @property
    def layout(self) -> str:
        """How this set is stored: "folder", "zip", "tar", a mix ("folder+zip"), or "empty"."""
        ok = self._load()
        if ok.num_rows == 0:
            return "empty"
        locs = ok["location"]
        kinds = set()
        is_zip = pc.match_substring(locs, ".zip:")
        is_tar = pc.match_substring(locs, ".tar:")
        if pc.any(is_zip).as_py():
            kinds.add("zip")
        if pc.any(is_tar).as_py():
            kinds.add("tar")
        if pc.any(pc.invert(pc.or_(is_zip, is_tar))).as_py():
            kinds.add("folder")
        return "+".join(k for k in ("folder", "zip", "tar") if k in kinds)

    # the manifest ------------------------------------------------------------------------------
    @property
    def ledger(self) -> pa.Table:
        """Every ledger row of the set (latest per manifest row, all columns), sorted by `row`."""
        return load_ledger(self.storage, self.image_set)

    @property
    def manifest(self) -> pa.Table:
        """The plan's rows (all 12 metadata columns + `row`) joined with their ledger outcome.

        Rows not yet finished have a null `outcome`. Query it with DuckDB: `duckdb.sql("... FROM m")`.
        """
        plan = read_plan(self.storage, self.image_set)
        ledger = self.ledger if self.has_ledger else self._load()
        import duckdb

        con = duckdb.connect()
        con.register("l", ledger)
        extra = [c for c in ledger.column_names if c not in ("image_id", "set", "row")]
        if plan is None:
            return con.sql('SELECT * FROM l ORDER BY "row"').to_arrow_table()
        con.register("p", plan)
        sel = ", ".join(f'l."{c}"' for c in extra)
        return con.sql(f'SELECT p.*, {sel} FROM p LEFT JOIN l USING ("row") ORDER BY p."row"').to_arrow_table()

    def ledger_row(self, row: int) -> dict[str, Any]:
        """The latest ledger row for manifest row `row` as a dict (empty when it has none)."""
        hit = load_ledger(self.storage, self.image_set, row_filter=row)
        return hit.to_pylist()[-1] if hit.num_rows else {}

    # adapters ------------------------------------------------------------------------------
    def torch(
        self,
        transform: Callable[[Image.Image], Any] | None = None,
        *,
        with_ids: bool = False,
        to_tensor: bool = False,
    ) -> TorchImageDataset:
        """A PyTorch map-style Dataset over this set; see `oiv4.torch_dataset` (torch stays optional)."""
        from .torch_dataset import TorchImageDataset

        return TorchImageDataset(self, transform=transform, with_ids=with_ids, to_tensor=to_tensor)

    def close(self) -> None:
        self.blobs.close()


def decode(data: bytes, what: str = "image") -> Image.Image:
    """Decode stored bytes into a loaded PIL image; a damaged JPEG raises CorruptImageError."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except UnidentifiedImageError:
        raise CorruptImageError(f"{what}: stored bytes are not an image Pillow recognises") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptImageError(f"{what}: stored bytes do not decode ({exc})") from exc
    return img


class Dataset:
    """The sets built under one root. `ds.sets` maps set name -> SetReader; `ds["train"]` is one of them."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.blobs = BlobReader(storage)
        self._sets: dict[str, SetReader] | None = None

    @property
    def root(self) -> str:
        return self.storage.root

    @property
    def sets(self) -> dict[str, SetReader]:
        """Sets with anything under the root (a plan, a ledger or image files), in pipeline order."""
        if self._sets is None:
            found: dict[str, SetReader] = {}
            for s in ImageSet:
                if (
                    self.storage.exists(LAYOUT.plan(s))
                    or self.storage.glob(f"{LAYOUT.ledger_dir(s)}/shard-*")
                    or self.storage.exists(LAYOUT.images_dir(s))
                    or self.storage.exists(f"{s.value}/webdataset")
                ):
                    found[s.value] = SetReader(self.storage, s, self.blobs)
            self._sets = found
        return self._sets

    def __getitem__(self, image_set: str) -> SetReader:
        try:
            return self.sets[ImageSet(image_set).value]
        except (KeyError, ValueError):
            have = ", ".join(self.sets) or "none"
            raise KeyError(f"no set {image_set!r} under {self.root} (sets present: {have})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.sets)

    def __contains__(self, image_set: object) -> bool:
        return image_set in self.sets

    def __repr__(self) -> str:
        return f"<oiv4 dataset at {self.root}: {', '.join(self.sets) or 'no sets'}>"

    def close(self) -> None:
        self.blobs.close()

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_dataset(root: str | os.PathLike[str], **storage_options: Any) -> Dataset:
    """Open the sets built under `root` (a local folder or any fsspec URL such as `s3://bucket/prefix`).

    Raises FileNotFoundError when a local root does not exist. Opening reads nothing else: each set
    loads its ledger on first use.
    """
    storage = Storage(str(root), storage_options)
    if storage.local and not os.path.isdir(storage.root):
        raise FileNotFoundError(f"no oiv4 data at {storage.root}: folder does not exist")
    return Dataset(storage)
