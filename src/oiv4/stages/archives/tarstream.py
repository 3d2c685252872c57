"""A forward-only tar reader over decompressed pieces: headers parsed by hand, data handed out zero-copy.

`tarfile` would do, but it copies every member twice, hides where in the stream a header sits, and its
stream mode cannot skip a hostile member without reading it into a file object. This reader knows
ustar, GNU (long names `L`/`K`) and pax (`x`, `g`) headers, checks every header checksum, and reports
every member's type as it is, so the caller can refuse links, devices and the like by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from oiv4.contracts.errors import CorruptTarError

BLOCK = 512
MAX_META = 1 << 20  # GNU long names and pax headers larger than this are refused
_KINDS = {
    b"0": "file",
    b"\0": "file",
    b"7": "file",  # contiguous file: a regular file for every practical purpose
    b"1": "hardlink",
    b"2": "symlink",
    b"3": "chardev",
    b"4": "blockdev",
    b"5": "dir",
    b"6": "fifo",
}


@dataclass
class TarMember:
    index: int  # 0-based ordinal among real members (meta headers are not counted)
    name: str  # as stored (pax/GNU long name applied), decoded as UTF-8 with replacement
    raw_name: bytes
    kind: str  # file, dir, symlink, hardlink, chardev, blockdev, fifo, or "type <flag>"
    size: int
    linkname: str
    mtime: int
    offset: int  # uncompressed offset of the member's header


class PieceReader:
    """Exact-length reads over an iterator of byte pieces, returning views instead of copies."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self._it = iter(pieces)
        self._cur = memoryview(b"")
        self.offset = 0  # bytes consumed so far

    def _fill(self) -> bool:
        while not len(self._cur):
            nxt = next(self._it, None)
            if nxt is None:
                return False
            self._cur = memoryview(nxt)
        return True

    def views(self, n: int) -> list[memoryview]:
        """Exactly `n` bytes as a list of views (fewer only at end of stream)."""
        out: list[memoryview] = []
        while n > 0 and self._fill():
            take = self._cur[:n]
            self._cur = self._cur[len(take) :]
            out.append(take)
            n -= len(take)
            self.offset += len(take)
        return out

    def read(self, n: int) -> bytes:
        v = self.views(n)
        return v[0].tobytes() if len(v) == 1 else b"".join(v)

    def skip(self, n: int) -> int:
        skipped = 0
        while n > 0 and self._fill():
            k = min(n, len(self._cur))
            self._cur = self._cur[k:]
            n -= k
            skipped += k
            self.offset += k
        return skipped


def _octal(field: bytes, what: str, offset: int, archive: str) -> int:
    if field and field[0] & 0x80:  # GNU base-256 for values that do not fit in octal
        value = int.from_bytes(field[1:], "big")
        return -value if field[0] & 0x40 else value
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise CorruptTarError(
            archive, f"tar header at uncompressed byte {offset:,}: bad {what} field {field!r}"
        ) from None


def _cstr(field: bytes) -> bytes:
    return field.split(b"\0", 1)[0]


def _pax(data: bytes, offset: int, archive: str) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        sp = data.find(b" ", pos)
        if sp < 0:
            break
        try:
            length = int(data[pos:sp])
        except ValueError:
            raise CorruptTarError(archive, f"pax header at uncompressed byte {offset:,} is malformed") from None
        if length <= 0:
            break
        record = data[sp + 1 : pos + length - 1]  # drop the trailing newline
        key, _, value = record.partition(b"=")
        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


# Kept long: a streaming parser whose state (GNU long names, pax records) carries from one header into the
# next member, and whose every refusal names the byte offset it met; one loop keeps that state local.
def iter_members(
    reader: PieceReader, want: Callable[[TarMember], bool], archive: str = ""
) -> Iterator[tuple[TarMember, list[memoryview] | None]]:
    """Yield (member, data views if `want(member)` else None); data of unwanted members is skipped unread."""
    long_name: bytes | None = None
    long_link: bytes | None = None
    pax: dict[str, str] = {}
    index = 0
    while True:
        header_at = reader.offset
        block = reader.read(BLOCK)
        if not block:
            return  # no end-of-archive blocks; gzip's CRC already vouched for the bytes
        if len(block) < BLOCK:
            raise CorruptTarError(archive, f"tar stream ends inside a header at uncompressed byte {header_at:,}")
        if block == bytes(BLOCK):
            return  # end-of-archive marker
        stored = _octal(block[148:156], "checksum", header_at, archive)
        computed = sum(block[:148]) + 8 * 32 + sum(block[156:])
        if stored != computed:
            raise CorruptTarError(
                archive,
                f"tar header checksum mismatch at uncompressed byte {header_at:,} (member #{index}): not a tar stream",
            )
        flag = block[156:157]
        size = _octal(block[124:136], "size", header_at, archive)
        if size < 0:
            raise CorruptTarError(archive, f"negative member size in tar header at uncompressed byte {header_at:,}")
        padded = -(-size // BLOCK) * BLOCK
        if flag in (b"L", b"K", b"x", b"g"):
            if size > MAX_META:
                raise CorruptTarError(
                    archive, f"{size:,}-byte tar meta header at uncompressed byte {header_at:,} refused"
                )
            data = reader.read(size)
            reader.skip(padded - size)
            if len(data) < size:
                raise CorruptTarError(
                    archive, f"tar stream ends inside a meta header at uncompressed byte {header_at:,}"
                )
            if flag == b"L":
                long_name = _cstr(data)
            elif flag == b"K":
                long_link = _cstr(data)
            elif flag == b"x":
                pax = _pax(data, header_at, archive)
            continue  # b"g": global pax defaults carry nothing we use
        raw_name = _cstr(block[0:100])
        if block[257:263] == b"ustar\x00":  # POSIX ustar: name may be split into prefix + name
            prefix = _cstr(block[345:500])
            if prefix:
                raw_name = prefix + b"/" + raw_name
        linkname = _cstr(block[157:257])
        if long_name is not None:
            raw_name = long_name
        if long_link is not None:
            linkname = long_link
        if "path" in pax:
            raw_name = pax["path"].encode("utf-8", "surrogateescape")
        if "linkpath" in pax:
            linkname = pax["linkpath"].encode("utf-8", "surrogateescape")
        if "size" in pax:
            try:
                size = int(pax["size"])
            except ValueError:
                raise CorruptTarError(archive, f"pax size {pax['size']!r} at uncompressed byte {header_at:,}") from None
            padded = -(-size // BLOCK) * BLOCK
        long_name = long_link = None
        pax = {}
        member = TarMember(
            index=index,
            name=raw_name.decode("utf-8", "replace"),
            raw_name=raw_name,
            kind=_KINDS.get(flag, f"type {flag.decode('latin-1')!r}"),
            size=size,
            linkname=linkname.decode("utf-8", "replace"),
            mtime=_octal(block[136:148], "mtime", header_at, archive),
            offset=header_at,
        )
        index += 1
        take = want(member)  # asked for every member, so the caller sees (and can judge) each one
        if take and member.kind == "file":
            views = reader.views(size)
            got = sum(len(v) for v in views)
            if got < size:
                raise CorruptTarError(
                    archive, f"tar stream ends inside member {member.name!r} ({got:,} of {size:,} bytes)"
                )
            reader.skip(padded - size)
            yield member, views
        else:
            # Links, devices, fifos and dirs carry no data in practice, but honour the size field anyway.
            if reader.skip(padded) < padded and member.kind == "file":
                raise CorruptTarError(archive, f"tar stream ends inside member {member.name!r}")
            yield member, None
