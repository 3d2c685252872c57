"""A JPEG's marker layout, read without decoding: frame size, components, progressive or not, number of scans,
where the scan data starts and whether the file ends with EOI.

Two uses, both cheap (one walk over the header segments, then C-speed `bytes.count`/`rfind`/`find` over the
scan data; no pixel is decoded):
- the archive conversion's member check (`structure_problem`): a truncated member (no EOI after the first scan),
  a member whose header is garbage (e.g. zeros behind `FF D8 FF`) or whose scan data holds a long run of zero
  bytes is refused as `corrupt_jpeg`. A full strict decode of every member would cost more than the whole
  conversion (benchmarks/RESULTS.md, "Archive member check");
- the decode cost limit (`scan_count`): libjpeg-turbo decodes a progressive JPEG scan by scan, each scan a pass
  over the whole coefficient buffer, so a crafted file with thousands of tiny valid scans costs minutes. Scans are
  counted here before any decode; entropy-coded data escapes every 0xFF as FF 00, so FF DA in it is always a marker.
"""

from __future__ import annotations

from dataclasses import dataclass

from oiv4.contracts.errors import JpegLayoutError

#: Start-of-frame markers (every coding process); 0xC4 (DHT), 0xC8 (JPG), 0xCC (DAC) are not frames.
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
#: A run of zero bytes this long inside the scan data is a zero-filled body, not entropy-coded photo data.
ZERO_RUN = 65536


@dataclass(frozen=True)
class JpegLayout:
    """What the markers of a JPEG say, before any decode."""

    width: int
    height: int
    components: int
    progressive: bool
    scans: int  # SOS markers between the frame header and EOI (or the end of the data)
    scan_start: int  # offset of the first byte of the first scan's entropy-coded data
    end: int | None  # offset just past EOI, None when no EOI follows the first scan (truncated)


def read_layout(data: bytes) -> JpegLayout:
    """Walk the header segments of `data` (a JPEG) to the first scan; JpegLayoutError if they do not hold together."""
    n = len(data)
    if not data.startswith(b"\xff\xd8"):
        raise JpegLayoutError("does not start with the JPEG SOI marker")
    pos, frame = 2, None
    while True:
        if pos + 4 > n:
            raise JpegLayoutError(f"header ends at byte {n:,}, before the first scan (truncated)")
        if data[pos] != 0xFF:
            raise JpegLayoutError(f"no marker at byte {pos:,} of the header (found {data[pos]:02x})")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            raise JpegLayoutError(f"unexpected marker {marker:02x} at byte {pos:,} of the header")
        if marker in (0x00, 0xD9):
            raise JpegLayoutError(f"marker {marker:02x} at byte {pos:,}, before the first scan")
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2 or pos + 2 + length > n:
            raise JpegLayoutError(f"segment {marker:02x} at byte {pos:,} claims {length:,} bytes (truncated?)")
        if marker in _SOF:
            if length < 8:
                raise JpegLayoutError(f"frame header at byte {pos:,} is {length} bytes")
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            frame = (width, height, data[pos + 9], marker in _PROGRESSIVE)
        if marker == 0xDA:
            if frame is None:
                raise JpegLayoutError(f"scan at byte {pos:,} before any frame header")
            start = pos + 2 + length
            eoi = data.rfind(b"\xff\xd9", start)
            end = eoi + 2 if eoi >= 0 else None
            scans = 1 + data.count(b"\xff\xda", start, eoi if eoi >= 0 else n)
            return JpegLayout(*frame, scans=scans, scan_start=start, end=end)
        pos += 2 + length


def structure_problem(data: bytes) -> str | None:
    """None when `data` holds together as a JPEG (headers, scans, EOI, no zero-filled stretch); else why not."""
    try:
        layout = read_layout(data)
    except JpegLayoutError as exc:
        return str(exc)
    if layout.width < 1 or layout.height < 1:
        return f"frame declares an empty size {layout.width}x{layout.height}"
    if layout.end is None:
        return f"no end-of-image marker after the scan data ({len(data):,} bytes): truncated"
    zeros = data.find(bytes(ZERO_RUN), layout.scan_start, layout.end)
    if zeros >= 0:
        return f"{ZERO_RUN:,} or more zero bytes from byte {zeros:,} of the scan data: zero-filled"
    return None
