"""Strict image decoding: a JPEG whose entropy-coded data is damaged is refused, never stored as `ok`.

Why not Pillow alone: Pillow installs a libjpeg error manager whose warning hook does nothing, so libjpeg's
"Corrupt JPEG data: premature end of data segment" (and every other recoverable warning) is swallowed and the
damaged photo decodes "fine" -- partly grey, MD5-identical to the damaged original. Pillow has no hook to see
those warnings. libjpeg-turbo's TurboJPEG API does report them: `simplejpeg.decode_jpeg(strict=True)` (a
manylinux wheel bundling libjpeg-turbo, no system library needed, unlike PyTurboJPEG) raises ValueError with the
first warning's text. So JPEG pixels come from libjpeg-turbo; Pillow still parses the header (format, mode,
size, ICC profile, EXIF) and decodes every other format, with a full `load()`.

How warnings are classified (measured with benchmarks/jpeg_corpus.py on photo-like JPEGs encoded baseline,
progressive, optimised, with restart markers, EXIF, greyscale, CMYK, 4:2:0/4:2:2/4:4:4, and damaged variants):

- clean files of every kind raise no warning at all, so any warning is news;
- truncation -> "Premature end of JPEG file"; a zeroed 2,000-byte block -> "premature end of data segment";
  one flipped byte (and a zeroed block in 4:4:4) -> "N extraneous bytes before marker 0xd9": the Huffman
  decoder desynchronised and finished the scan early, so everything after the damage is invented. Our first
  guess was that "extraneous bytes before 0xd9" is firmware padding and harmless; the corpus showed it is the
  commonest symptom of a flipped bit, so *every* "Corrupt JPEG data" message -> `corrupt_jpeg`, never ok;
- junk appended after EOI, or a few bytes slipped in just before EOI, draws no warning and the pixels are
  intact -> ok;
- blind spot: a flipped byte in a 4:2:0/4:2:2/greyscale/CMYK baseline file and a zeroed block in a progressive
  file often raise *no* warning (the damaged bits still form valid Huffman codes). No decoder can see that;
  only a checksum of the stored bytes (io.checksum) proves a stored file unchanged;
- JFIF/JFXX (APP0) oddities -- unknown revision, bad thumbnail -- do not touch the main image -> ok, with the
  warning in the reason (none occurred in the corpus; they are libjpeg's APP0-only warnings). simplejpeg raises
  them even with strict=False and stops before the scan, so the scan would go unchecked: we drop the APP0
  segments (JFIF carries only density and a thumbnail) and decode strictly again;
- anything else libjpeg-turbo reports is not known to be harmless -> `decode_error` (fail closed).

Scaled decoding: libjpeg-turbo scales by M/8 (M = 1..16) in the IDCT, a finer choice than Pillow's `draft()`
(1/1, 1/2, 1/4, 1/8). `target_side` picks the smallest M/8 scale that keeps both sides >= `draft_gap` x the
final size (see benchmarks/RESULTS.md, "Strict JPEG decoding", for speed and PSNR against `draft()`).
"""

from __future__ import annotations

import io
import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simplejpeg
from PIL import Image, ImageFile, UnidentifiedImageError

from oiv4.contracts.errors import JpegLayoutError, OutcomeError, UsageError
from oiv4.contracts.schema import Outcome
from oiv4.io.jpeg_layout import JpegLayout, read_layout
from oiv4.io.memory_budget import decoded_bytes, jpeg_decoded_bytes

#: Decoders we let near untrusted bytes (as fetch/transform.py): EPS would run Ghostscript, so it is refused.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")

#: libjpeg warnings that leave the image's pixels intact; matched against the start of the message.
HARMLESS_WARNINGS: tuple[re.Pattern[str], ...] = (
    re.compile(r"Warning: unknown JFIF revision number"),
    re.compile(r"Warning: thumbnail image size does not match data length"),
    re.compile(r"(Unsupported|Unknown) JFIF extension|JFIF extension marker: type"),
)
#: libjpeg warnings that mean the entropy-coded data is damaged: what follows is the decoder's invention.
DAMAGE_WARNINGS: tuple[re.Pattern[str], ...] = (
    # premature end of data segment, extraneous bytes before marker, bad Huffman/arithmetic code, RST resync
    re.compile(r"Corrupt JPEG data"),
    re.compile(r"Premature end of JPEG file"),
    re.compile(r"Inconsistent progression sequence"),
)


#: Most scans a JPEG may have to be decoded. libjpeg-turbo makes one pass over the whole coefficient buffer per
#: scan, so the cost is scans x pixels: a crafted 2 MB file with 2,647 valid scans declaring 196 MP took 121 s.
#: Encoders write 1 (baseline) to ~10-20 (progressive, mozjpeg's optimised scans); 100 leaves room and bounds
#: the worst case at 100 passes (a few seconds at the pixel limit).
MAX_SCANS = 100


@dataclass(frozen=True)
class Decoded:
    """A fully decoded image and what the decoder had to say about it."""

    image: Image.Image  # loaded; mode RGB, L or CMYK for JPEGs (CMYK as Pillow decodes it), any mode otherwise
    format: str  # Pillow's name: JPEG, MPO, PNG, ...
    original_size: tuple[int, int]  # as declared by the file, before any scaled decode
    warnings: tuple[str, ...] = field(default_factory=tuple)  # harmless libjpeg warnings, for the ledger reason


def classify_warning(message: str) -> str | None:
    """None when a libjpeg message is harmless; otherwise the outcome it leads to."""
    if any(p.match(message) for p in HARMLESS_WARNINGS):
        return None
    if any(p.match(message) for p in DAMAGE_WARNINGS):
        return Outcome.corrupt_jpeg
    return Outcome.decode_error


def open_header(data: bytes, max_pixels: int) -> Image.Image:
    """Parse the header only, through the allowed format plugins, with an explicit pixel limit.

    Bypasses `Image.open` for the same reason as fetch/transform.py: its process-global pixel limit would refuse
    real ~180 MP originals and cannot be raised without disabling bomb protection for the whole process.
    """
    Image.init()
    prefix = data[:16]
    im = None
    for fmt in ALLOWED_FORMATS:
        factory, accept = Image.OPEN[fmt]
        if accept is not None and accept(prefix) is not True:
            continue
        try:
            im = factory(io.BytesIO(data), "")
            break
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue  # as Image.open does: not this format after all
        except Exception as exc:  # any parser failure on untrusted bytes is a recorded outcome
            raise OutcomeError(Outcome.decode_error, f"cannot parse {fmt} header: {exc}") from None
    if im is None:
        raise OutcomeError(Outcome.not_image, f"body is not a supported image; starts {data[:24]!r}")
    w, h = im.size
    if w < 1 or h < 1:
        raise OutcomeError(Outcome.decode_error, f"image declares an empty size {w}x{h}")
    if w * h > max_pixels:
        raise OutcomeError(
            Outcome.decompression_bomb,
            f"{im.format} declares {w}x{h} = {w * h / 1e6:.0f} MP, above the {max_pixels / 1e6:.0f} MP limit; "
            "not decoded",
        )
    return im


def _min_size(size: tuple[int, int], target_side: int | None, draft_gap: float) -> tuple[int, int]:
    """The smallest (width, height) a scaled JPEG decode may produce and still shrink well to `target_side`."""
    w, h = size
    if not target_side or max(w, h) <= target_side:
        return 0, 0  # simplejpeg: <= 0 means no scaling
    scale = target_side / max(w, h)
    gap = max(1.0, draft_gap)
    return math.ceil(w * scale * gap), math.ceil(h * scale * gap)


def _without_app0(data: bytes) -> bytes | None:
    """`data` without its APP0 (JFIF/JFXX) segments, or None when the marker layout before SOS is malformed."""
    out, pos = [data[:2]], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xDA:  # start of scan: the rest is entropy-coded data and what follows it
            out.append(data[pos:])
            return b"".join(out)
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2:
            return None
        if marker != 0xE0:
            out.append(data[pos : pos + 2 + length])
        pos += 2 + length
    return None


def _strict_pixels(
    data: bytes, colorspace: str, min_size: tuple[int, int], size: tuple[int, int], out: Any = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """libjpeg-turbo's pixels of `data` with every warning checked; raises OutcomeError for damage."""
    warnings: list[str] = []
    scan = data
    while True:  # a second pass only after dropping APP0 for a harmless JFIF warning; a third never
        try:
            arr = simplejpeg.decode_jpeg(
                scan, colorspace=colorspace, min_width=min_size[0], min_height=min_size[1], buffer=out, strict=True
            )
            return arr, tuple(warnings)
        except ValueError as exc:
            message = str(exc).strip()
            outcome = classify_warning(message)
            stripped = _without_app0(scan) if outcome is None and not warnings else None
            if stripped is None:
                w, h = size
                raise OutcomeError(outcome or Outcome.decode_error, f"JPEG {w}x{h}: libjpeg-turbo: {message}") from None
            warnings.append(message)
            scan = stripped


def _decode_jpeg(data: bytes, header: Image.Image, target_side: int | None, draft_gap: float) -> Decoded:
    mode = header.mode
    colorspace = {"L": "GRAY", "CMYK": "CMYK"}.get(mode, "RGB")
    arr, warnings = _strict_pixels(data, colorspace, _min_size(header.size, target_side, draft_gap), header.size)
    if colorspace == "GRAY":
        image = Image.fromarray(arr[:, :, 0] if arr.ndim == 3 else arr, "L")
    elif colorspace == "CMYK":
        # Pillow decodes every CMYK JPEG as Adobe-inverted ("CMYK;I"); do the same so colours match.
        image = Image.fromarray(np.subtract(255, arr, dtype=np.uint8), "CMYK")
    else:
        image = Image.fromarray(arr, "RGB")
    for key in ("icc_profile", "exif", "adobe", "adobe_transform"):
        if key in header.info:
            image.info[key] = header.info[key]
    return Decoded(image, header.format or "JPEG", header.size, warnings)


def decode_colour_jpeg(
    data: bytes,
    *,
    max_pixels: int,
    target_side: Callable[[int, int], int],
    colorspace: str = "RGB",
    buffer: Callable[[int], Any] | None = None,
) -> tuple[np.ndarray, tuple[int, int]] | None:
    """The pixels of a 3-component (colour) JPEG and its declared (width, height), as strictly as `decode_strict`, without parsing it with Pillow.

    For a caller that wants pixels only (no ICC profile, no EXIF): the marker layout (`read_layout`, needed for
    the scan limit anyway) gives the size, so Pillow's header parse and the array -> Image copy are skipped.
    Scaled by M/8 so both sides stay >= what `target_side(width, height)` asks of the longer one; `colorspace`
    is simplejpeg's (RGB, or RGBX: 4 bytes per pixel, Pillow's own layout for RGB). `buffer(nbytes)`, when
    given, returns writable memory of at least `nbytes` to decode into (the result is then a view of it): a
    caller decoding many images reuses one, where a fresh array per image costs a page fault per 4 KiB. Returns None for anything
    else (not a JPEG, a malformed layout, grey or CMYK): `decode_strict` then decides, with its own words.
    Raises OutcomeError (damage, a pixel count over `max_pixels`, too many scans) as `decode_strict` does.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise UsageError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on in this process; strict decoding refuses to run")
    try:
        layout = read_layout(data)
    except JpegLayoutError:
        return None
    w, h = layout.width, layout.height
    if layout.components != 3 or w < 1 or h < 1:
        return None
    if w * h > max_pixels:
        raise OutcomeError(
            Outcome.decompression_bomb,
            f"JPEG declares {w}x{h} = {w * h / 1e6:.0f} MP, above the {max_pixels / 1e6:.0f} MP limit; not decoded",
        )
    if layout.scans > MAX_SCANS:
        raise OutcomeError(Outcome.too_many_scans, _too_many_scans(layout))
    out = buffer(w * h * 4) if buffer is not None else None  # 4 B per pixel bounds every colorspace, any scale
    return _strict_pixels(data, colorspace, _min_size((w, h), target_side(w, h), 1.0), (w, h), out)[0], (w, h)


def _too_many_scans(layout: JpegLayout) -> str:
    return (
        f"JPEG {layout.width}x{layout.height} has {layout.scans:,} scans, more than {MAX_SCANS}: not decoded "
        "(each scan is a pass over the whole image; a crafted progression would cost minutes of CPU)"
    )


def scan_problem(data: bytes) -> str | None:
    """Why a JPEG must not be decoded for its cost (more than MAX_SCANS scans, counted from the markers), or None."""
    try:
        layout = read_layout(data)
    except JpegLayoutError:
        return None  # the decoder reports a broken layout with its own words
    return _too_many_scans(layout) if layout.scans > MAX_SCANS else None


def decode_charge(data: bytes, header: Image.Image) -> int:
    """What decoding `data` (whose parsed header is `header`) holds at its peak, for the memory budget.

    JPEG: 4 B per declared pixel (decoded scaled), plus the coefficient buffer of a multi-scan file (2 B per
    pixel and component); other formats: 16 B per pixel (an RGBA PNG keeps the decode, an RGBA copy, the RGB
    copy, the canvas and the alpha band alive at once; benchmarks/decode_budget.py).
    """
    w, h = header.size
    if header.format not in ("JPEG", "MPO"):
        return decoded_bytes(w, h, 16)
    try:
        layout = read_layout(data)
        return jpeg_decoded_bytes(w, h, layout.components, layout.scans > 1 or layout.progressive)
    except JpegLayoutError:  # the decode will refuse it; charge as if it were a progressive 4-component file
        return jpeg_decoded_bytes(w, h, 4, True)


def decode_strict(data: bytes, *, max_pixels: int, target_side: int | None = None, draft_gap: float = 1.0) -> Decoded:
    """Fully decode `data`, refusing damaged pixel data; raises OutcomeError (outcome + one-line reason).

    JPEG (and MPO's first frame) through libjpeg-turbo with every warning checked, scaled by M/8 towards
    `target_side` when given; other formats through Pillow with truncation tolerance off and a full `load()`.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # A process-wide Pillow switch someone else turned on: every truncated PNG/GIF would then "decode".
        raise UsageError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on in this process; strict decoding refuses to run")
    header = open_header(data, max_pixels)
    fmt = header.format or "?"
    if fmt in ("JPEG", "MPO"):
        costly = scan_problem(data)
        if costly is not None:
            raise OutcomeError(Outcome.too_many_scans, costly)
    if fmt in ("JPEG", "MPO") and header.mode in ("RGB", "L", "CMYK"):
        return _decode_jpeg(data, header, target_side, draft_gap)
    try:
        header.load()
    except UnidentifiedImageError as exc:
        raise OutcomeError(Outcome.not_image, f"{fmt}: {exc}") from None
    except Exception as exc:  # truncated/garbled pixel data in untrusted bytes is a recorded outcome
        w, h = header.size
        raise OutcomeError(Outcome.decode_error, f"cannot decode {fmt} {w}x{h}: {type(exc).__name__}: {exc}") from None
    return Decoded(header, fmt, header.size)
