"""A forward-only writer of STORED zip archives (Zip64 when needed) for members already in memory.

Why not `zipfile`: it computes CRC-32 with stdlib zlib (~7 GB/s here; zlib-ng's is ~5x faster), and
for every member writes a provisional local header, the data, then seeks back to rewrite the header:
three writes, two seeks and a flush per member, on the converter thread that also hashes and parses.
Here each member's CRC is computed first (its bytes are in memory anyway), so the local header is final
when written and the output is never sought: it works on any stream (a pipe, an object-store upload).

Format (APPNOTE 6.3.x): local header + data per member; central directory; Zip64 end records when
there are >= 65,535 entries or an offset/size does not fit 32 bits (a CVDF train archive has ~110,000
members and ~35-50 GB). Members are limited to < 4 GiB each (JPEGs; the converter caps them far lower),
so only the local-header offset ever needs a Zip64 extra field. Python's `zipfile`, `unzip` and
`oiv4.read.dataset` read the result.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

try:  # zlib-ng's CRC-32 is much faster; stdlib zlib gives identical values
    from zlib_ng.zlib_ng import crc32
except ImportError:  # pragma: no cover - zlib-ng is a dependency
    from zlib import crc32

MAX_MEMBER = 0xFFFFFFFF - 1
_U32 = 0xFFFFFFFF
_U16 = 0xFFFF
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_ZIP64_EOCD = struct.Struct("<IQHHIIQQQQ")
_ZIP64_LOCATOR = struct.Struct("<IIQI")
_EOCD = struct.Struct("<IHHHHIIH")
_VERSION_MADE_BY = (3 << 8) | 45  # unix, spec 4.5
_REGULAR_0644 = (0o100644 << 16) & _U32


def dos_datetime(mtime: int) -> tuple[int, int]:
    """(time, date) fields of a Unix time, UTC, clamped to the DOS range 1980..2107."""
    t = time.gmtime(max(0, mtime))
    if t.tm_year < 1980:
        return 0, (0 << 9) | (1 << 5) | 1
    if t.tm_year > 2107:
        return (23 << 11) | (59 << 5) | 29, (127 << 9) | (12 << 5) | 31
    return (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2), ((t.tm_year - 1980) << 9) | (
        t.tm_mon << 5
    ) | t.tm_mday


@dataclass(frozen=True)
class _Entry:
    name: bytes
    crc: int
    size: int
    offset: int
    dos_time: int
    dos_date: int


class StoredZipWriter:
    """Append STORED members to `out`, then `close()` to write the central directory.

    `out` only needs `write`; nothing is sought or read back. `force_zip64` writes the Zip64 end
    records even when they are not needed (readers must cope; tests use it).
    """

    def __init__(self, out: IO[bytes], force_zip64: bool = False) -> None:
        self._out = out
        self._pos = 0
        self._entries: list[_Entry] = []
        self._force_zip64 = force_zip64
        self._closed = False

    def _write(self, data: bytes | memoryview) -> None:
        self._out.write(data)
        self._pos += len(data)

    def add(self, name: str, pieces: Sequence[bytes | memoryview], mtime: int = 0) -> int:
        """Store one member made of `pieces`; returns its CRC-32."""
        if self._closed:
            raise ValueError("zip already closed")
        raw_name = name.encode("ascii")  # member names are checked ASCII (`<stem>/<16 hex>.jpg`)
        size = sum(len(p) for p in pieces)
        if size > MAX_MEMBER:
            raise ValueError(f"{name}: {size} bytes does not fit a STORED member without Zip64 sizes")
        crc = 0
        for p in pieces:
            crc = crc32(p, crc)
        dos_time, dos_date = dos_datetime(mtime)
        entry = _Entry(raw_name, crc & _U32, size, self._pos, dos_time, dos_date)
        self._write(_LOCAL.pack(0x04034B50, 20, 0, 0, dos_time, dos_date, entry.crc, size, size, len(raw_name), 0))
        self._write(raw_name)
        for p in pieces:
            self._write(p)
        self._entries.append(entry)
        return entry.crc

    def close(self) -> None:
        """Write the central directory and end records. The caller closes `out`."""
        if self._closed:
            return
        self._closed = True
        cd_start = self._pos
        for e in self._entries:
            zip64 = e.offset >= _U32
            extra = struct.pack("<HHQ", 0x0001, 8, e.offset) if zip64 else b""
            self._write(
                _CENTRAL.pack(
                    0x02014B50,
                    _VERSION_MADE_BY,
                    45 if zip64 else 20,
                    0,  # flags
                    0,  # STORED
                    e.dos_time,
                    e.dos_date,
                    e.crc,
                    e.size,
                    e.size,
                    len(e.name),
                    len(extra),
                    0,  # comment
                    0,  # disk
                    0,  # internal attributes
                    _REGULAR_0644,
                    _U32 if zip64 else e.offset,
                )
            )
            self._write(e.name)
            self._write(extra)
        cd_size = self._pos - cd_start
        n = len(self._entries)
        if self._force_zip64 or n >= _U16 or cd_start >= _U32 or cd_size >= _U32:
            eocd64_at = self._pos
            self._write(_ZIP64_EOCD.pack(0x06064B50, 44, _VERSION_MADE_BY, 45, 0, 0, n, n, cd_size, cd_start))
            self._write(_ZIP64_LOCATOR.pack(0x07064B50, 0, eocd64_at, 1))
        self._write(
            _EOCD.pack(0x06054B50, 0, 0, min(n, _U16), min(n, _U16), min(cd_size, _U32), min(cd_start, _U32), 0)
        )
