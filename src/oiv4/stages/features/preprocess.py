"""A model's input from stored bytes: decode only as large as needed, resize, center-crop, normalise.

The stored images are up to 1024 px and the models take 224 px, so JPEGs are decoded through the io layer's
strict decoder (`io.strict_decode`: libjpeg-turbo with damage refused, a pixel budget before any decode) at
the smallest M/8 DCT scale whose shorter side still covers the resize. The crop box is then mapped back onto
that decoded image, so the one resampling pass reads only the pixels inside the crop: the result is the
same as resize-then-crop (the box is the crop's pre-image), at a fraction of the cost.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

from oiv4.io.strict_decode import decode_colour_jpeg, decode_strict, open_header

#: Largest image decoded (declared pixels), as fetch's default: stored images are at most a few MP.
MAX_PIXELS = 200_000_000

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


_SCRATCH = threading.local()


def _scratch(nbytes: int) -> np.ndarray:
    """This thread's decode buffer, grown to `nbytes` when needed (threads of one process may decode at once)."""
    buf = getattr(_SCRATCH, "buffer", None)
    if buf is None or buf.size < nbytes:
        buf = _SCRATCH.buffer = np.empty(nbytes, dtype=np.uint8)
    return buf


def dct_scale(original: tuple[int, int], decoded: tuple[int, int]) -> float:
    """The M/8 (M = 1..16) that took `original` to `decoded` (each side ceil(side x M/8)); else decoded / original."""
    for m in range(1, 17):
        if all(-(-o * m // 8) == d for o, d in zip(original, decoded, strict=True)):
            return m / 8
    return decoded[0] / original[0]


@dataclass(frozen=True)
class Preprocess:
    """One model's preprocessing: shorter side to `resize`, center crop `crop` x `crop`, then (x/255 - mean)/std."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: str = "bilinear"

    def describe(self) -> str:
        """The recorded description: a change here is a change of the vectors."""
        return (
            f"decode>=shorter {self.resize} at M/8, crop box through M/8; resize shorter {self.resize} {self.resample}; center crop {self.crop}; "
            f"/255; mean {list(self.mean)}; std {list(self.std)}"
        )

    def target_side(self, width: int, height: int) -> int:
        """The longer side a scaled decode must keep so that the shorter one is still >= `resize`."""
        return math.ceil(self.resize * max(width, height) / max(1, min(width, height)))

    def crop_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """Where the `crop` x `crop` center crop of the resized image lies in an image of this size."""
        short, long = min(width, height), max(width, height)
        new_long = int(self.resize * long / short)  # torchvision's Resize truncates the longer side
        rw, rh = (self.resize, new_long) if width <= height else (new_long, self.resize)
        # torchvision's CenterCrop offsets, in resized pixels, mapped back through the scale of each axis
        left, top = round((rw - self.crop) / 2.0), round((rh - self.crop) / 2.0)
        sx, sy = width / rw, height / rh
        return left * sx, top * sy, (left + self.crop) * sx, (top + self.crop) * sy

    def pixels(self, image: Image.Image, original: tuple[int, int] | None = None) -> np.ndarray:
        """The crop as uint8 HWC RGB (a view of the resized image's bytes when `image` is RGBX).

        `original`: the stored image's size when `image` is a DCT-scaled decode of it. The crop box is then
        placed in the original's pixels and mapped through libjpeg's exact M/8: a scaled side is
        ceil(side x M/8), so decoded / original is not the scale when the side is not a multiple of 8/M
        (683 px at 3/8 -> 257 rows holding 256.125 rows of picture), and mapping through it slid the crop
        by up to ~1 decoded pixel.
        """
        if image.mode not in ("RGB", "RGBX"):
            image = image.convert("RGB")
        if original is None or original == image.size:
            box = self.crop_box(*image.size)
        else:
            scale = dct_scale(original, image.size)
            box = tuple(v * scale for v in self.crop_box(*original))  # type: ignore[assignment]
        out = image.resize((self.crop, self.crop), _RESAMPLE[self.resample], box=box)
        return np.asarray(out, dtype=np.uint8)[:, :, :3]

    def affine(self) -> tuple[list[float], list[float]]:
        """(scale, shift) per channel with x * scale + shift == (x / 255 - mean) / std: two passes, not three."""
        return [1.0 / (255.0 * s) for s in self.std], [-m / s for m, s in zip(self.mean, self.std, strict=True)]

    def normalise(self, hwc: np.ndarray) -> np.ndarray:
        """uint8 HWC (or NHWC) -> float32 CHW (NCHW), scaled and normalised."""
        x = hwc.astype(np.float32) * (1.0 / 255.0)
        x -= np.asarray(self.mean, dtype=np.float32)
        x /= np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(np.moveaxis(x, -1, -3))

    def from_bytes(self, data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
        """Stored bytes -> uint8 HWC crop; raises `OutcomeError` (outcome + reason) for damaged bytes.

        A colour JPEG (nearly every stored image) is decoded straight to RGBX, Pillow's own 4-byte layout for
        RGB, which `Image.frombuffer` maps without a copy; the resize reads the same RGB bytes either way. The
        decode goes into this thread's scratch buffer, which the next decode overwrites: only the crop, the
        resize's own new image, leaves this method.
        """
        colour = decode_colour_jpeg(
            data, max_pixels=max_pixels, target_side=self.target_side, colorspace="RGBX", buffer=_scratch
        )
        if colour is not None:
            rgbx, original = colour
            h, w = rgbx.shape[:2]
            return self.pixels(Image.frombuffer("RGBX", (w, h), rgbx, "raw", "RGBX", 0, 1), original)
        w, h = open_header(data, max_pixels).size
        decoded = decode_strict(data, max_pixels=max_pixels, target_side=self.target_side(w, h))
        return self.pixels(decoded.image, decoded.original_size)


#: torchvision's ImageNet weights: resize 256, crop 224, ImageNet statistics.
IMAGENET = Preprocess(256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
#: OpenAI CLIP: resize 224 bicubic, crop 224, CLIP's statistics.
CLIP = Preprocess(
    224, 224, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711), resample="bicubic"
)
#: The test network: small input, ImageNet statistics.
TINY = Preprocess(72, 64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
