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
