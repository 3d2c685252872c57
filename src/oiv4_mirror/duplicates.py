"""Planted duplicates and hard negatives: the ground truth a dedup is measured against.

Every base photo comes from the mirror's renderer. Its *copies* are what a photo sharing site produces
from one upload: a re-encode at another JPEG quality, a resized copy, a crop of a few percent, a slight
recolour, and the same file stored at 90/180/270 degrees (the Rotation column differing between two
ImageIDs of one file). Its *hard negatives* are other photos that look alike: a second shot of the same
scene framed elsewhere (a crop of the same wide render, shifted by a third of its width) and the
renderer's neighbouring indices (same palette statistics, same noise grain).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from PIL import Image, ImageEnhance

from oiv4_mirror.images import noise_tile, render_picture


@dataclass(frozen=True)
class Planted:
    """One picture of the planted corpus: `group` is the base photo it shows (-1: a distinct hard negative)."""

    key: str  # unique name, e.g. "7/crop"
    group: int
    variant: str
    image: Image.Image


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out


def _crop(img: Image.Image, frac: float) -> Image.Image:
    dx, dy = round(img.width * frac), round(img.height * frac)
    return img.crop((dx, dy, img.width - dx, img.height - dy))


#: name -> how a copy is made from the upright base photo. The rotations are the stored copies a differing
#: CSV Rotation produces (the fetcher stores what the CSV says is upright).
COPIES: dict[str, Callable[[Image.Image], Image.Image]] = {
    "reencode_q60": lambda im: _jpeg(im, 60),
    "resize_50": lambda im: _jpeg(im.resize((im.width // 2, im.height // 2), Image.Resampling.BICUBIC), 85),
    "crop_3pct": lambda im: _jpeg(_crop(im, 0.03), 90),
    "crop_5pct_one_side": lambda im: _jpeg(im.crop((0, 0, round(im.width * 0.95), im.height)), 90),
    "recolour": lambda im: _jpeg(ImageEnhance.Color(ImageEnhance.Brightness(im).enhance(1.08)).enhance(0.85), 90),
    "rot90": lambda im: _jpeg(im.transpose(Image.Transpose.ROTATE_90), 90),
    "rot180": lambda im: _jpeg(im.transpose(Image.Transpose.ROTATE_180), 90),
    "rot270": lambda im: _jpeg(im.transpose(Image.Transpose.ROTATE_270), 90),
}


def planted_corpus(n_photos: int, seed: int = 11, width: int = 480, height: int = 360) -> Iterator[Planted]:
    """For each of `n_photos` base photos: the original, one copy per COPIES entry, and two hard negatives.

    Hard negatives get group -1 (they duplicate nothing, and nothing duplicates them): the other shot of the
    same scene (left and right thirds of one wide render: the base is the left shot) and the photo rendered at
    the neighbouring index of a second sequence (indices are interleaved so neighbours never collide).
    """
    tile = noise_tile(seed)
    for g in range(n_photos):
        wide = render_picture(seed, 2 * g, width * 3 // 2, height, tile)
        base = _jpeg(wide.crop((0, 0, width, height)), 90)
        yield Planted(f"{g}/original", g, "original", base)
        for name, make in COPIES.items():
            yield Planted(f"{g}/{name}", g, name, make(base))
        other_shot = _jpeg(wide.crop((width // 2, 0, width // 2 + width, height)), 90)
        yield Planted(f"{g}/other_shot", -1, "other_shot", other_shot)
        neighbour = _jpeg(render_picture(seed, 2 * g + 1, width, height, tile), 90)
        yield Planted(f"{g}/neighbour", -1, "neighbour", neighbour)


# ---- planting copies into a mirror universe --------------------------------------------------------------

#: The copies a universe plants (`UniverseSpec.duplicate_fraction`), assigned round-robin. The rotations are
#: the *same stored file* under a different CSV Rotation: the copy's upright picture is the source turned.
UNIVERSE_COPIES: tuple[str, ...] = (
    "reencode_q60",
    "resize_50",
    "crop_3pct",
    "rot90",
    "crop_5pct_one_side",
    "recolour",
    "rot180",
    "rot270",
)
HARD_NEGATIVE = "hard_negative"
#: CSV Rotation of a rotated copy (its source has Rotation 0, so both store the same bytes).
COPY_ROTATION: dict[str, float] = {"rot90": 90.0, "rot180": 180.0, "rot270": 270.0}


def copy_size(variant: str, width: int, height: int) -> tuple[int, int]:
    """Upright (width, height) of a `variant` copy of a `width` x `height` source (or of its hard negative)."""
    if variant == "resize_50":
        return max(8, width // 2), max(8, height // 2)
    if variant == "crop_3pct":
        return width - 2 * round(width * 0.03), height - 2 * round(height * 0.03)
    if variant == "crop_5pct_one_side":
        return round(width * 0.95), height
    if variant in ("rot90", "rot270"):
        return height, width
    return width, height


def copy_picture(variant: str, source: Image.Image) -> Image.Image:
    """The upright picture of a `variant` copy of the upright `source` picture (full size)."""
    if variant in COPY_ROTATION:  # rotate(+r) is exact for quarter turns; stored_orientation(.., r) undoes it
        return source.rotate(COPY_ROTATION[variant], expand=True)
    if variant == "resize_50":
        return source.resize(copy_size(variant, *source.size), Image.Resampling.BICUBIC)
    if variant == "reencode_q60":
        return _jpeg(source, 60).convert("RGB")
    if variant == "recolour":
        return ImageEnhance.Color(ImageEnhance.Brightness(source).enhance(1.08)).enhance(0.85)
    if variant == "crop_3pct":
        return _crop(source, 0.03)
    if variant == "crop_5pct_one_side":
        return source.crop((0, 0, round(source.width * 0.95), source.height))
    raise ValueError(f"unknown copy variant {variant!r}")


def other_shot(wide: Image.Image, width: int) -> Image.Image:
    """A hard negative: the right-hand shot of a scene rendered 1.5x wide (its source shows the same scene)."""
    return wide.crop((width // 2, 0, width // 2 + width, wide.height))
