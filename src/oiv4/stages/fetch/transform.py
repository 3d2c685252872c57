"""Verified original bytes -> the stored JPEG: decode (guarded), RGB, shrink, rotate, encode.

Pure functions over bytes, safe to call from several threads at once: Pillow releases the GIL while
decoding, resampling and encoding, so a small thread pool per worker process uses the cores.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass

from PIL import Image, ImageCms, UnidentifiedImageError

from oiv4.contracts.errors import InputError
from oiv4.contracts.schema import Outcome
from oiv4.stages.fetch.settings import TransformSettings

#: Decoders we let near untrusted bytes. Flickr originals are JPEG (the JPEG opener also returns MPO), PNG or GIF;
#: WebP/BMP/TIFF are harmless extras. Everything else (EPS would run Ghostscript!) is refused.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")

_TRANSPOSE = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}
_WHITE = (255, 255, 255)
_FILTERS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "box": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}


class TransformError(InputError):
    """The bytes cannot become a stored image; `outcome` is the ledger outcome, the message its reason."""

    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


@dataclass(frozen=True)
class StoredImage:
    """The encoded JPEG and what happened on the way."""

    data: bytes
    original_size: tuple[int, int]  # as decoded (stored orientation)
    stored_size: tuple[int, int]  # as written (after rotation)
    description: str  # human-readable, goes into the ledger reason


def fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) scaled to fit `max_side` x `max_side`, aspect kept, never enlarged."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def rotation_degrees(rotation: float | None) -> int | None:
    """The CSV Rotation as 0/90/180/270, or None when it is empty (NaN) or not a right angle."""
    if rotation is None or (isinstance(rotation, float) and math.isnan(rotation)):
        return None
    deg = round(rotation) % 360
    return deg if deg in (0, 90, 180, 270) and abs(rotation - round(rotation)) < 1e-6 else None


def _open_plugins(data: bytes) -> Image.Image:
    """`Image.open(data, formats=ALLOWED_FORMATS)` without Pillow's global pixel-limit check."""
    Image.init()
    prefix = data[:16]
    for fmt in ALLOWED_FORMATS:
        factory, accept = Image.OPEN[fmt]
        if accept is not None and accept(prefix) is not True:
            continue
        try:
            return factory(io.BytesIO(data), "")
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue  # as Image.open does: not this format after all
    raise UnidentifiedImageError("cannot identify image file")


def open_image(data: bytes, max_pixels: int, content_type: str | None = None) -> Image.Image:
    """Open (header only) with our own, explicit pixel limit; raises TransformError."""
    # `max_pixels` is applied below, on the declared size, before a single pixel is decoded. Pillow's own
    # check reads a process-wide global (Image.MAX_IMAGE_PIXELS, hard limit ~179 MP) which would refuse
    # real 180-200 MP originals; switching it off would silently disable bomb protection for everything
    # else in the process (a user's notebook, the reader). So we open through the format plugins directly,
    # which is all `Image.open` does besides that global check.
    try:
        im = _open_plugins(data)
    except UnidentifiedImageError:
        head = data[:24]
        served = f" (served as {content_type})" if content_type else ""
        raise TransformError(Outcome.not_image, f"body is not a supported image{served}; starts {head!r}") from None
    except Exception as exc:  # any parser failure on untrusted bytes is a recorded outcome
        raise TransformError(Outcome.decode_error, f"cannot parse image header: {type(exc).__name__}: {exc}") from None
    # Hand the decoder all bytes in one call: Pillow releases the GIL per call, and the default 64 KiB
    # blocks mean dozens of GIL re-acquisitions per photo, each a wait behind the event loop thread.
    im.decodermaxblock = max(im.decodermaxblock, len(data))
    w, h = im.size
    if w < 1 or h < 1:
        raise TransformError(Outcome.decode_error, f"image declares an empty size {w}x{h}")
    if w * h > max_pixels:
        raise TransformError(
            Outcome.decompression_bomb,
            f"{im.format} declares {w}x{h} = {w * h / 1e6:.0f} MP, above the {max_pixels / 1e6:.0f} MP limit "
            "(--max-megapixels); not decoded",
        )
    return im


def _icc_colour_space(icc: bytes | None) -> bytes:
    return icc[16:20] if icc and len(icc) >= 20 else b""


def to_rgb(im: Image.Image) -> tuple[Image.Image, str]:
    """Any decoded mode -> 8-bit RGB; returns (image, note). Alpha is composited on white."""
    mode = im.mode
    if mode == "RGB":
        return im, ""
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        # paste with the alpha as mask blends fg*a + white*(1-a): the photo as it looks on a white page.
        out = Image.new("RGB", rgba.size, _WHITE)
        out.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
        return out, f"{mode} with alpha composited on white"
    if mode == "CMYK":
        icc = im.info.get("icc_profile")
        if _icc_colour_space(icc) == b"CMYK":
            try:
                src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
                rgb = ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
                if rgb is not None:
                    return rgb, "CMYK converted to sRGB with its embedded ICC profile"
            except (ImageCms.PyCMSError, OSError, ValueError):
                pass  # a broken profile: fall back to the plain conversion below
        # Pillow already undoes Adobe's inverted CMYK when decoding ("CMYK;I"), so convert() is right here.
        return im.convert("RGB"), "CMYK converted to RGB"
    if mode.startswith("I;16") or mode in ("I", "F"):
        import numpy as np

        arr = np.asarray(im)
        if mode == "F":
            grey = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
            note = "32-bit float greyscale clipped to 8 bits"
        elif mode.startswith("I;16") or int(arr.max(initial=0)) > 255:
            # 16-bit samples: scale 0..65535 onto 0..255 (convert("L") would clip everything above 255 to white).
            grey = ((arr.astype(np.uint32) + 128) // 257).clip(0, 255).astype(np.uint8)
            note = "16-bit greyscale scaled to 8 bits"
        else:
            grey = arr.clip(0, 255).astype(np.uint8)
            note = "32-bit greyscale with 8-bit values"
        return Image.fromarray(grey, "L").convert("RGB"), note
    return im.convert("RGB"), f"{mode} converted to RGB"


def transform_image(
    data: bytes, rotation: float | None, settings: TransformSettings, content_type: str | None = None
) -> StoredImage:
    """Decode `data`, make it RGB, shrink to fit, rotate (CCW) and encode as JPEG. Raises TransformError."""
    im = open_image(data, settings.max_pixels, content_type)
    fmt = im.format or "?"
    src_mode = im.mode
    w, h = im.size
    final = fit_size(w, h, settings.max_side)
    try:
        if fmt in ("JPEG", "MPO") and final != (w, h) and settings.draft_gap:
            # Decode at 1/2, 1/4 or 1/8 scale straight from the DCT coefficients: most of the speed-up.
            im.draft(None, (math.ceil(final[0] * settings.draft_gap), math.ceil(final[1] * settings.draft_gap)))
        im.load()
        icc = im.info.get("icc_profile")
        rgb, note = to_rgb(im)
        if rgb.size != final:
            # reducing_gap 2.0 (as `thumbnail`): box-reduce by an integer factor only while staying >= 2x the
            # final size, so non-JPEG giants are cheap and the bicubic filter still does the final antialiasing.
            rgb = rgb.resize(final, _FILTERS[settings.resample], reducing_gap=2.0)
    except TransformError:
        raise
    except Exception as exc:  # corrupt pixel data in untrusted bytes is a recorded outcome
        raise TransformError(
            Outcome.decode_error, f"cannot decode {fmt} {w}x{h}: {type(exc).__name__}: {exc}"
        ) from None

    notes = [n for n in (note,) if n]
    deg = rotation_degrees(rotation)
    if settings.rotate:
        if deg:
            rgb = rgb.transpose(_TRANSPOSE[deg])
            notes.append(f"rotated {deg}° ccw")
        elif deg is None:
            notes.append(f"Rotation {rotation!r} unknown, not rotated")
    elif deg:
        notes.append(f"Rotation {deg} not applied (--no-rotate)")

    keep_icc = icc if src_mode in ("RGB", "RGBA") and _icc_colour_space(icc) == b"RGB " else None
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", quality=settings.quality, optimize=settings.optimize, icc_profile=keep_icc)
    desc = f"{fmt} {src_mode} {w}x{h} -> {rgb.width}x{rgb.height}"
    if notes:
        desc += "; " + "; ".join(notes)
    return StoredImage(buf.getvalue(), (w, h), rgb.size, desc)


def check_stored(data: bytes, max_pixels: int) -> tuple[int, int]:
    """Fully decode a stored JPEG (e.g. one found at its final path after a kill); returns its size."""
    im = open_image(data, max_pixels)
    try:
        im.load()
    except Exception as exc:
        raise TransformError(
            Outcome.decode_error, f"stored file does not decode: {type(exc).__name__}: {exc}"
        ) from None
    return im.size
