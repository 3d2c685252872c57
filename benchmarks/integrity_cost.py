"""What integrity costs per fetched image: strict decoding + checksum vs both off, side by side in one run.

Both contenders do what fetch does to a verified original (stages/fetch/transform.py): MD5 of the original,
decode, RGB, shrink to fit 1024 (aspect kept), JPEG encode at q90, perceptual hash of the stored picture.
  on:  `transform_image` as shipped (strict decoding through `io.strict_decode.decode_strict`: libjpeg-turbo,
       every warning checked, M/8 scaled decode) + `io.checksum.checksum` of the stored bytes, as the fetch
       shard records it.
  off: the same steps with Pillow's lenient decode (`draft()` + `load()`; Pillow ignores libjpeg's warnings)
       and no checksum -- the transform as it was before integrity was wired in.
Photo-like originals of 2-12 MP from the mirror's renderer (JPEG q90; a few PNGs as Flickr has). Passes
alternate off/on so machine load hits both alike; CPU seconds (process_time), best pass of each.

    PYTHONPATH=src .venv/bin/python benchmarks/integrity_cost.py [--photos 24 --passes 5]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import time

from PIL import Image

from oiv4.io.checksum import checksum
from oiv4.io.fingerprint import phash
from oiv4.stages.fetch.settings import TransformSettings
from oiv4.stages.fetch.transform import fit_size, to_rgb, transform_image
from oiv4_mirror.images import ImageKind, encode, noise_tile, render_picture

SIZES = [(1600, 1200), (3000, 2000), (4000, 3000), (4240, 2832), (2448, 3264)]
_FILTER = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def originals(n: int) -> list[bytes]:
    tile = noise_tile(5)
    out = []
    for i in range(n):
        kind = ImageKind.png_rgb if i % 12 == 11 else ImageKind.jpeg
        out.append(encode(render_picture(5, i, *SIZES[i % len(SIZES)], tile), kind))
    return out


def integrity_off(data: bytes, settings: TransformSettings) -> bytes:
    hashlib.md5(data).digest()
    im = Image.open(io.BytesIO(data))
    final = fit_size(*im.size, settings.max_side)
    if im.format == "JPEG" and settings.draft_gap:
        im.draft("RGB", (int(final[0] * settings.draft_gap), int(final[1] * settings.draft_gap)))
    im.load()
    rgb, _ = to_rgb(im)
    if rgb.size != final:
        rgb = rgb.resize(final, _FILTER[settings.resample], reducing_gap=2.0)
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", quality=settings.quality, optimize=settings.optimize)
    phash(rgb)
    return buf.getvalue()


def integrity_on(data: bytes, settings: TransformSettings) -> tuple[bytes, str]:
    hashlib.md5(data).digest()
    stored = transform_image(data, 0.0, settings).data
    return stored, checksum(stored)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=int, default=24)
    ap.add_argument("--passes", type=int, default=5)
    args = ap.parse_args()
    settings = TransformSettings()
    files = originals(args.photos)
    mp = sum(Image.open(io.BytesIO(d)).size[0] * Image.open(io.BytesIO(d)).size[1] for d in files) / 1e6
    print(
        f"{len(files)} originals, {mp / len(files):.1f} MP and {sum(map(len, files)) / len(files) / 1e6:.2f} MB each on average"
    )
    best = {"off": float("inf"), "on": float("inf")}
    for _ in range(args.passes):
        for name, fn in (("off", integrity_off), ("on", integrity_on)):
            t0 = time.process_time()
            for d in files:
                fn(d, settings)
            best[name] = min(best[name], time.process_time() - t0)
    for name, label in (
        ("off", "integrity off (Pillow lenient decode, no checksum)"),
        ("on", "transform_image as shipped + checksum"),
    ):
        print(
            f"  {label:52s} {len(files) / best[name]:6.1f} images/CPU-s  ({best[name] / len(files) * 1000:.1f} ms each)"
        )
    print(f"  cost of integrity: {(best['on'] / best['off'] - 1) * 100:+.1f}% CPU per image (target < 5%)")


if __name__ == "__main__":
    main()
