"""The features input pipeline: a colour JPEG is decoded at the smallest M/8 scale that still covers the
resize, as strictly as everywhere else (damage is an outcome, never a crop), to the same crop bytes as the
Pillow-image path and close to what torchvision's Resize + CenterCrop sees; the batch is normalised to the
same bits as (x / 255 - mean) / std written out per channel."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from oiv4.contracts.errors import OutcomeError
from oiv4.contracts.schema import Outcome
from oiv4.io.strict_decode import decode_colour_jpeg, decode_strict
from oiv4.stages.features.loader import Normalise
from oiv4.stages.features.preprocess import IMAGENET, TINY, dct_scale


def _jpeg(w: int, h: int, seed: int = 0, mode: str = "RGB", detail: int = 8) -> bytes:
    """A JPEG whose detail is `detail` px across: random colours upsampled."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h // detail + 1, w // detail + 1, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC).convert(mode)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("size", "decoded"),
    [((1024, 683), (384, 257)), ((1024, 768), (384, 288)), ((683, 1024), (257, 384)), ((300, 300), (263, 263))],
)
def test_the_decode_scale_is_the_smallest_eighth_whose_shorter_side_still_covers_the_resize(size, decoded):
    colour = decode_colour_jpeg(_jpeg(*size), max_pixels=10**8, target_side=IMAGENET.target_side, colorspace="RGBX")
    assert colour is not None and colour[1] == size
    rgbx = colour[0]
    assert (rgbx.shape[1], rgbx.shape[0]) == decoded and rgbx.shape[2] == 4
    assert min(decoded) >= min(IMAGENET.resize, *size)


def _baseline_crop(data: bytes) -> np.ndarray:
    """What ImageFolder + Resize(256) + CenterCrop(224) sees: Pillow's full decode, resized, cropped."""
    full = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = full.size
    size = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
    resized = full.resize(size, Image.Resampling.BILINEAR)
    left, top = round((size[0] - 224) / 2), round((size[1] - 224) / 2)
    return np.asarray(resized.crop((left, top, left + 224, top + 224))).astype(np.int16)


# 683 and 800 px are no multiple of 8/M at their scale (3/8 -> 257 rows for 256.125, 5/8 -> 313 for 312.5):
# a crop box mapped through decoded / original instead of M/8 slid there, 16.7 and 10.2 off on 8-px detail.
@pytest.mark.parametrize(("detail", "tolerance"), [(32, 1.0), (8, 3.0)])
def test_the_scaled_crop_is_the_pillow_path_bytes_and_close_to_full_decode_resize_then_center_crop(detail, tolerance):
    for w, h in ((1024, 683), (768, 1024), (500, 800)):
        data = _jpeg(w, h, seed=w, detail=detail)
        ours = IMAGENET.from_bytes(data)
        decoded = decode_strict(data, max_pixels=10**8, target_side=IMAGENET.target_side(w, h))
        assert decoded.image.size != (w, h)  # a scaled decode, so the mapping is what is tested
        assert np.array_equal(ours, IMAGENET.pixels(decoded.image, decoded.original_size))
        assert ours.shape == (224, 224, 3)
        assert np.abs(ours.astype(np.int16) - _baseline_crop(data)).mean() < tolerance, (w, h)


def test_dct_scale_is_libjpegs_m_over_8_not_the_ratio_of_the_rounded_sides():
    assert dct_scale((1024, 683), (384, 257)) == 3 / 8
    assert dct_scale((500, 800), (313, 500)) == 5 / 8
    assert dct_scale((640, 480), (640, 480)) == 1.0
    assert dct_scale((640, 480), (320, 240)) == 1 / 2


def test_a_truncated_or_bit_flipped_jpeg_is_an_outcome_not_a_crop():
    data = _jpeg(1024, 683, seed=3)
    with pytest.raises(OutcomeError) as truncated:
        IMAGENET.from_bytes(data[: len(data) * 2 // 3])
    assert truncated.value.outcome == Outcome.corrupt_jpeg
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x5A
    with pytest.raises(OutcomeError) as damaged:
        IMAGENET.from_bytes(bytes(flipped))
    assert damaged.value.outcome == Outcome.corrupt_jpeg


def test_grey_and_non_jpeg_images_take_the_pillow_path_and_give_rgb_crops():
    grey = _jpeg(640, 480, mode="L")
    assert decode_colour_jpeg(grey, max_pixels=10**8, target_side=IMAGENET.target_side) is None
    png = io.BytesIO()
    Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(png, "PNG")
    for data in (grey, png.getvalue()):
        assert IMAGENET.from_bytes(data).shape == (224, 224, 3)


def test_a_declared_size_over_the_pixel_limit_is_refused_before_any_decode():
    with pytest.raises(OutcomeError) as bomb:
        IMAGENET.from_bytes(_jpeg(1024, 683), max_pixels=500_000)
    assert bomb.value.outcome == Outcome.decompression_bomb


@pytest.mark.parametrize("preprocess", [IMAGENET, TINY])
def test_normalise_gives_the_per_channel_formula_bit_for_bit_in_channels_last_layout(preprocess):
    normalise = Normalise(preprocess)
    scale, shift = (torch.tensor(v).view(1, 3, 1, 1) for v in preprocess.affine())
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (preprocess.mean, preprocess.std))
    for n in (5, 2, 7):  # the kept buffer grows, then serves a smaller batch
        crops = torch.randint(0, 256, (n, preprocess.crop, preprocess.crop, 3), dtype=torch.uint8)
        got = normalise(crops)
        want = crops.permute(0, 3, 1, 2).float().mul(scale).add(shift)
        assert torch.equal(got, want) and got.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(got, (crops.permute(0, 3, 1, 2).float() / 255 - mean) / std)
