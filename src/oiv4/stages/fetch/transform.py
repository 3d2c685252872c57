"""Verified original bytes -> the stored JPEG: decode (strict, guarded), RGB, shrink, rotate, encode, fingerprint.

Pure functions over bytes, safe to call from several threads at once: libjpeg-turbo (simplejpeg) and Pillow
release the GIL while decoding, resampling and encoding, so a small thread pool per worker process uses the cores.

Decoding is strict (`oiv4.io.strict_decode`): a JPEG whose entropy-coded data is damaged -- which Pillow alone
decodes "fine", partly grey -- becomes `corrupt_jpeg`, never `ok`; a harmless libjpeg warning stays `ok` with the
warning in the reason. The 64-bit perceptual hash (`oiv4.io.fingerprint.phash`) is taken from the shrunk picture
after rotation, i.e. as stored, so every upright copy of a photo compares at rotation 0.
"""

from __future__ import annotations

import io
import math
from contextlib import nullcontext
from dataclasses import dataclass

from PIL import Image, ImageCms

from oiv4.contracts.errors import OutcomeError
from oiv4.contracts.schema import Outcome
from oiv4.io.fingerprint import phash
from oiv4.io.memory_budget import MemoryBudget
from oiv4.io.strict_decode import ALLOWED_FORMATS, decode_charge, decode_strict, open_header
from oiv4.stages.fetch.settings import TransformSettings

__all__ = ["ALLOWED_FORMATS", "StoredImage", "check_stored", "open_image", "transform_image"]

_TRANSPOSE = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}
_WHITE = (255, 255, 255)
_FILTERS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "box": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class StoredImage:
    """The encoded JPEG and what happened on the way."""

    data: bytes
    original_size: tuple[int, int]  # as decoded (stored orientation)
    stored_size: tuple[int, int]  # as written (after rotation)
    description: str  # human-readable, goes into the ledger reason
    phash: int = 0  # io.fingerprint.phash of the picture as stored (after shrink and rotation)


@dataclass(frozen=True)
class StoredCheck:
    """A stored file that decodes strictly: its size and perceptual hash (for a recovered ledger row)."""

    size: tuple[int, int]
    phash: int


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


def _served(content_type: str | None) -> str:
    return f" (served as {content_type})" if content_type else ""


def _transform_error(exc: OutcomeError, content_type: str | None = None) -> OutcomeError:
    reason = exc.reason
    if exc.outcome == Outcome.not_image:
        reason = reason.replace("supported image;", f"supported image{_served(content_type)};", 1)
    elif exc.outcome == Outcome.decompression_bomb:
        reason = reason.replace("limit;", "limit (--max-megapixels);", 1)
    return OutcomeError(exc.outcome, reason)


def open_image(data: bytes, max_pixels: int, content_type: str | None = None) -> Image.Image:
    """Open (header only) with our own, explicit pixel limit; raises OutcomeError."""
    # `max_pixels` is applied on the declared size, before a single pixel is decoded. Pillow's own check
    # reads a process-wide global (Image.MAX_IMAGE_PIXELS, hard limit ~179 MP) which would refuse real
    # 180-200 MP originals; switching it off would silently disable bomb protection for everything else in
    # the process. `open_header` opens through the allowed format plugins directly instead.
    try:
        return open_header(data, max_pixels)
    except OutcomeError as exc:
        raise _transform_error(exc, content_type) from None


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
    data: bytes,
    rotation: float | None,
    settings: TransformSettings,
    content_type: str | None = None,
    budget: MemoryBudget | None = None,
) -> StoredImage:
    """Decode `data` strictly, make it RGB, shrink to fit, rotate (CCW), encode as JPEG and fingerprint it.

    `budget`, if given, is held for the decoded pixels (`decoded_bytes` of the declared size, read from the
    header before a pixel is decoded) until the shrunk copy exists, so concurrent decodes of giant images in
    one worker cannot together exceed it. Raises OutcomeError (outcome + one-line reason).
    """
    header = open_image(data, settings.max_pixels, content_type)
    w, h = header.size
    final = fit_size(w, h, settings.max_side)
    scaled = final != (w, h) and bool(settings.draft_gap)
    # What the decode + RGB conversion hold at their peak (io.strict_decode.decode_charge).
    with budget.hold(decode_charge(data, header)) if budget is not None else nullcontext():
        try:
            # JPEGs: libjpeg-turbo decodes at M/8 scale straight from the DCT while both sides stay >= draft_gap
            # x the final size (most of the speed-up), with every libjpeg warning checked.
            decoded = decode_strict(
                data,
                max_pixels=settings.max_pixels,
                target_side=settings.max_side if scaled else None,
                draft_gap=settings.draft_gap or 1.0,
            )
        except OutcomeError as exc:
            raise _transform_error(exc, content_type) from None
        im = decoded.image
        fmt, src_mode, warnings = decoded.format, header.mode, decoded.warnings
        try:
            icc = im.info.get("icc_profile")
            rgb, note = to_rgb(im)
            if rgb.size != final:
                # reducing_gap 2.0 (as `thumbnail`): box-reduce by an integer factor only while staying >= 2x the
                # final size, so non-JPEG giants are cheap and the filter still does the final antialiasing.
                rgb = rgb.resize(final, _FILTERS[settings.resample], reducing_gap=2.0)
        except Exception as exc:  # corrupt pixel data in untrusted bytes is a recorded outcome
            raise OutcomeError(
                Outcome.decode_error, f"cannot decode {fmt} {w}x{h}: {type(exc).__name__}: {exc}"
            ) from None
        del im, decoded  # the full-size pixels go before the budget is given back

    notes = [n for n in (note,) if n]
    notes += [f"libjpeg warning (harmless): {warning}" for warning in warnings]
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
    return StoredImage(buf.getvalue(), (w, h), rgb.size, desc, int(phash(rgb)))


def check_stored(data: bytes, max_pixels: int, budget: MemoryBudget | None = None) -> StoredCheck:
    """Fully and strictly decode a stored JPEG (e.g. one found at its final path after a kill).

    Returns its size and perceptual hash; raises OutcomeError when it does not decode or libjpeg reports
    damaged data (a file cut short by the kill, a flipped block). `budget` as in `transform_image`.
    """
    try:
        header = open_header(data, max_pixels)
        with budget.hold(decode_charge(data, header)) if budget is not None else nullcontext():
            decoded = decode_strict(data, max_pixels=max_pixels)
            return StoredCheck(decoded.image.size, int(phash(decoded.image)))
    except OutcomeError as exc:
        raise OutcomeError(exc.outcome, f"stored file does not decode: {exc.reason}") from None
