"""Cheap, deterministic, photo-like pictures and the odd bodies Flickr serves instead of photos.

A picture is a low-resolution colour field with a few blurred shapes and mid-frequency texture,
upscaled with Pillow, plus fine noise tiled from a per-universe noise tile. That costs ~0.03 s per
megapixel yet compresses like a photo (JPEG ~0.3 byte/pixel) and is never flat, so a shrink,
rotation or colour conversion bug shows up in the pixels.

Every upright picture has a pure red block in its top-left corner: after applying the CSV
`Rotation` (counter-clockwise) a correct fetcher finds it top-left again.
"""

from __future__ import annotations

import io
import zlib
from enum import StrEnum

import numpy as np
import simplejpeg
from PIL import Image, ImageChops, ImageDraw, ImageFilter

NOISE_TILE_SIDE = 1024

#: The body Flickr serves (with 200) after redirecting a removed photo's URL.
PLACEHOLDER_PATHS: tuple[str, ...] = (
    "/pw/images/en-us/photo_unavailable.png",
    "/pw/images/en-us/photo_unavailable_l.png",
)


class ImageKind(StrEnum):
    """How an original is encoded. Flickr originals are mostly JPEG but not only."""

    jpeg = "jpeg"
    png_rgb = "png_rgb"
    png_palette = "png_palette"
    png_rgba = "png_rgba"  # with a real alpha channel
    gif = "gif"
    jpeg_cmyk = "jpeg_cmyk"
    png_i16 = "png_i16"  # 16-bit greyscale, Pillow mode I;16

    @property
    def extension(self) -> str:
        if self in (ImageKind.jpeg, ImageKind.jpeg_cmyk):
            return "jpg"
        return "gif" if self is ImageKind.gif else "png"

    @property
    def content_type(self) -> str:
        return {"jpg": "image/jpeg", "png": "image/png", "gif": "image/gif"}[self.extension]


#: Every kind except plain JPEG, assigned round-robin to `UniverseSpec.special_kind_fraction` of the rows.
SPECIAL_KINDS: tuple[ImageKind, ...] = tuple(k for k in ImageKind if k is not ImageKind.jpeg)


def noise_tile(seed: int) -> Image.Image:
    """The fine-grain noise shared by all pictures of a universe (tiled, at a per-picture offset)."""
    rng = np.random.default_rng([seed, 0x6E6F697365])
    arr = rng.normal(128.0, 9.0, (NOISE_TILE_SIDE, NOISE_TILE_SIDE, 3)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def _tiled(tile: Image.Image, width: int, height: int, ox: int, oy: int) -> Image.Image:
    shifted = ImageChops.offset(tile, ox, oy)
    canvas = Image.new("RGB", (width, height))
    for y in range(0, height, tile.height):
        for x in range(0, width, tile.width):
            canvas.paste(shifted, (x, y))
    return canvas


def render_picture(seed: int, index: int, width: int, height: int, tile: Image.Image) -> Image.Image:
    """The upright RGB picture of image `index`, rendered at `width` x `height`.

    The same (seed, index) at another size gives the same scene (used for the shrunk archive copy
    and the thumbnail), so all three look alike.
    """
    rng = np.random.default_rng([seed, index])
    sw, sh = max(16, width // 8), max(12, height // 8)
    # Muted colours: real photos are rarely fully saturated.
    field = rng.integers(30, 226, (6, 8, 3), dtype=np.uint8)
    small = Image.fromarray(field, "RGB").resize((sw, sh), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(small)
    short = min(sw, sh)
    for _ in range(int(rng.integers(4, 10))):
        x0, y0 = int(rng.integers(0, sw)), int(rng.integers(0, sh))
        r = int(rng.integers(max(2, short // 20), max(3, short // 4)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=colour)
        else:
            draw.rectangle([x0 - r, y0 - r, x0 + r, y0 + r // 2], fill=colour)
    texture = rng.normal(128.0, 22.0, (sh, sw, 3)).clip(0, 255).astype(np.uint8)
    small = ImageChops.add(small, Image.fromarray(texture, "RGB"), 1.0, -128)
    small = small.filter(ImageFilter.GaussianBlur(1))
    # Upright marker, drawn last so blur and noise leave it clearly red.
    ox, oy = int(rng.integers(0, NOISE_TILE_SIDE)), int(rng.integers(0, NOISE_TILE_SIDE))
    img = small.resize((width, height), Image.Resampling.BILINEAR)
    img = ImageChops.add(img, _tiled(tile, width, height, ox, oy), 1.0, -128)
    marker = max(2, min(width, height) // 10)
    img.paste((255, 0, 0), (0, 0, marker, marker))
    return img


def stored_orientation(upright: Image.Image, rotation: float) -> Image.Image:
    """The picture as stored on Flickr: rotating it `rotation` degrees counter-clockwise makes it upright."""
    if not rotation or rotation != rotation:  # 0 or NaN
        return upright
    return upright.rotate(-rotation, expand=True)


def encode(img: Image.Image, kind: ImageKind) -> bytes:
    """Encode an RGB picture as `kind`. Deterministic (Pillow encoders are)."""
    out = io.BytesIO()
    if kind is ImageKind.jpeg:
        img.save(out, "JPEG", quality=90)
    elif kind is ImageKind.jpeg_cmyk:
        img.convert("CMYK").save(out, "JPEG", quality=90)
    elif kind is ImageKind.png_rgb:
        img.save(out, "PNG", compress_level=1)
    elif kind is ImageKind.png_palette:
        img.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(out, "PNG", compress_level=1)
    elif kind is ImageKind.png_rgba:
        # A vertical alpha ramp: a fetcher that drops alpha without compositing still gets colours,
        # one that composites on white gets a visibly lighter bottom.
        alpha = Image.linear_gradient("L").resize(img.size).point(lambda v: 64 + v * 3 // 4)
        rgba = img.copy()
        rgba.putalpha(alpha)
        rgba.save(out, "PNG", compress_level=1)
    elif kind is ImageKind.gif:
        img.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(out, "GIF")
    elif kind is ImageKind.png_i16:
        grey = np.asarray(img.convert("L"), dtype=np.uint16) * 257
        Image.fromarray(grey.astype("<u2")).save(out, "PNG", compress_level=1)
    else:  # pragma: no cover - exhaustive over ImageKind
        raise ValueError(kind)
    return out.getvalue()


def encode_jpeg(img: Image.Image, quality: int = 85) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def shrunk_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) scaled to fit `max_side` on the longest side, aspect kept, never enlarged."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def placeholder_png(large: bool = False) -> bytes:
    """A grey 'photo unavailable' card, like Flickr's (500x374, or 1024x768 for the `_l` variant)."""
    size = (1024, 768) if large else (500, 374)
    img = Image.new("RGB", size, (221, 221, 221))
    draw = ImageDraw.Draw(img)
    w, h = size
    draw.rectangle([w // 3, h // 3, 2 * w // 3, 2 * h // 3], outline=(150, 150, 150), width=6)
    draw.text((w // 3 + 10, h // 2 - 6), "This photo is no longer available", fill=(90, 90, 90))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def decompression_bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A valid ~100 KB 1-bit PNG declaring `width` x `height` pixels (900 MP by default).

    Pillow refuses to open it (DecompressionBombError above ~179 MP); a client that turned the limit
    off would decode 112 MB for 1-bit but far more after converting to RGB.
    """

    def chunk(tag: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + tag + data + zlib.crc32(tag + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])  # 1-bit grey
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + zero pixels
    comp = zlib.compressobj(9)
    parts = [comp.compress(row) for _ in range(height)]
    parts.append(comp.flush())
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def html_page(image_id: str) -> bytes:
    """What a CDN error page or captive portal serves with 200 and Content-Type text/html."""
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Flickr: page not found</title></head>\n"
        f"<body><h1>This page is private or doesn't exist</h1><p>ref {image_id}</p></body></html>\n"
    ).encode()


def damaged_jpeg(data: bytes) -> bytes:
    """`data` (a baseline JPEG) with 2,000 bytes zeroed mid-scan, as a bad disk sector or a broken upload leaves it.

    Pillow decodes it "fine" (partly grey); libjpeg reports "Corrupt JPEG data: premature end of data segment"
    (benchmarks/jpeg_corpus.py). The CSV's size and MD5 describe these damaged bytes, so only decoding sees it.
    """
    sos = data.index(b"\xff\xda")  # start of scan: damage the entropy-coded data, never the headers
    scan = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    end = len(data) - 2  # the EOI marker
    block = min(2000, (end - scan) // 4)
    at = scan + (end - scan) * 3 // 5
    damaged = data[:at] + bytes(block) + data[at + block :]
    # In a tiny scan the zeros can happen to decode as valid Huffman codes: the row would then be a healthy `ok`
    # while the universe expects `corrupt_jpeg`. Cut the scan short instead, which libjpeg always reports.
    try:
        simplejpeg.decode_jpeg(damaged, strict=True)
    except ValueError:
        return damaged
    return data[:at] + b"\xff\xd9"
