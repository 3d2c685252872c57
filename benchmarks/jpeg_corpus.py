"""Which libjpeg warnings do real-world-like JPEGs raise, and how does scaled DCT decoding compare to `draft()`?

Part 1 (warnings): a corpus of photo-like JPEGs (the mirror's renderer) encoded by Pillow with every option a
camera or editor produces -- baseline, progressive, optimised Huffman, restart markers, EXIF, ICC, CMYK (Adobe),
greyscale, 4:2:0 / 4:2:2 / 4:4:4 -- plus damaged variants of each: a zeroed 2,000-byte block mid-scan, one
flipped byte, a truncation at 60%, and appended junk. For each file it prints what libjpeg-turbo reports
(`simplejpeg.decode_jpeg(strict=True)`), what Pillow does (`load()`), and what `oiv4.io.strict_decode` classifies.

Part 2 (scaled decoding): for 2-12 MP photos, decode-and-shrink-to-1024 via libjpeg-turbo's M/8 scaling
(`decode_strict(..., target_side=1024)`) vs Pillow `draft()` + bilinear resize (what fetch/transform.py does),
CPU ms per image and PSNR against a full-size Lanczos shrink.

    PYTHONPATH=src .venv/bin/python benchmarks/jpeg_corpus.py
"""

from __future__ import annotations

import argparse
import io
import math
import time

import numpy as np
import simplejpeg
from PIL import Image, ImageCms

from oiv4.contracts.errors import OutcomeError
from oiv4.io.strict_decode import decode_strict
from oiv4_mirror.images import noise_tile, render_picture


def _encode(img: Image.Image, **opts: object) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", **opts)
    return out.getvalue()


def corpus(seed: int = 7) -> dict[str, bytes]:
    """Clean encodings of one photo-like picture, each with the options a real file may carry."""
    tile = noise_tile(seed)
    img = render_picture(seed, 1, 1600, 1200, tile)
    exif = Image.Exif()
    exif[0x010F] = "Camera Maker"
    exif[0x0112] = 6  # orientation
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = {
        "baseline q90 4:2:0": _encode(img, quality=90),
        "baseline q95 4:4:4": _encode(img, quality=95, subsampling=0),
        "baseline q75 4:2:2": _encode(img, quality=75, subsampling=1),
        "progressive": _encode(img, quality=90, progressive=True),
        "optimized huffman": _encode(img, quality=90, optimize=True),
        "restart markers (every 4 rows)": _encode(img, quality=90, restart_marker_rows=4),
        "exif + orientation": _encode(img, quality=90, exif=exif.tobytes()),
        "greyscale": _encode(img.convert("L"), quality=90),
        "cmyk (adobe)": _encode(img.convert("CMYK"), quality=90),
        "mirror render 4000x3000": _encode(render_picture(seed, 2, 4000, 3000, tile), quality=90),
    }
    if icc:
        out["icc profile"] = _encode(img, quality=90, icc_profile=icc)
    return out


def damaged(data: bytes) -> dict[str, bytes]:
    """The damage the issue describes, applied mid-scan (after the headers)."""
    mid = len(data) // 2
    flipped = bytearray(data)
    flipped[mid] ^= 0x10
    return {
        "zeroed 2000 bytes": data[:mid] + b"\0" * 2000 + data[mid + 2000 :],
        "one flipped byte": bytes(flipped),
        "truncated at 60%": data[: int(len(data) * 0.6)],
        "appended junk": data + b"JUNK" * 100,
        "junk before a marker": data[:-2] + b"\x12\x34" + data[-2:],
    }


def libjpeg_says(data: bytes) -> str:
    try:
        simplejpeg.decode_jpeg(data, strict=True)
        return "-"
    except ValueError as exc:
        return str(exc)


def pillow_says(data: bytes) -> str:
    try:
        Image.open(io.BytesIO(data)).load()
        return "ok"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def we_say(data: bytes) -> str:
    try:
        d = decode_strict(data, max_pixels=200_000_000, target_side=1024)
        return "ok" + (f" ({'; '.join(d.warnings)})" if d.warnings else "")
    except OutcomeError as exc:
        return f"{exc.outcome}: {exc.reason}"


def part_warnings() -> None:
    print("| file | libjpeg-turbo (strict) | Pillow load() | decode_strict |")
    print("|---|---|---|---|")
    for name, data in corpus().items():
        print(f"| {name} | {libjpeg_says(data)} | {pillow_says(data)} | {we_say(data)} |")
        for dname, bad in damaged(data).items():
            print(f"| {name} / {dname} | {libjpeg_says(bad)} | {pillow_says(bad)} | {we_say(bad)} |")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * math.log10(255**2 / mse)


def _fit(w: int, h: int, side: int) -> tuple[int, int]:
    s = side / max(w, h)
    return (w, h) if s >= 1 else (max(1, round(w * s)), max(1, round(h * s)))


def part_scaled(n: int) -> None:
    tile = noise_tile(3)
    sizes = [(2000, 1500), (3000, 2000), (4000, 3000), (4240, 2832)]
    files = [_encode(render_picture(3, i, *sizes[i % len(sizes)], tile), quality=90) for i in range(n)]
    refs = []
    for data in files:
        im = Image.open(io.BytesIO(data))
        refs.append(np.asarray(im.convert("RGB").resize(_fit(*im.size, 1024), Image.Resampling.LANCZOS)))

    def pillow_draft(data: bytes) -> np.ndarray:
        im = Image.open(io.BytesIO(data))
        final = _fit(*im.size, 1024)
        im.draft("RGB", final)
        return np.asarray(im.convert("RGB").resize(final, Image.Resampling.BILINEAR, reducing_gap=2.0))

    def turbo_scaled(data: bytes) -> np.ndarray:
        d = decode_strict(data, max_pixels=200_000_000, target_side=1024)
        im = d.image
        final = _fit(*d.original_size, 1024)
        return np.asarray(im.resize(final, Image.Resampling.BILINEAR, reducing_gap=2.0) if im.size != final else im)

    print(f"\nscaled decode + shrink to 1024, {n} photos of 3-12 MP (CPU ms/image, PSNR vs full Lanczos):")
    for name, fn in (
        ("Pillow draft() + bilinear", pillow_draft),
        ("libjpeg-turbo M/8 strict + bilinear", turbo_scaled),
    ):
        fn(files[0])
        best = math.inf
        for _ in range(3):
            t0 = time.process_time()
            outs = [fn(d) for d in files]
            best = min(best, time.process_time() - t0)
        psnr = sum(_psnr(o, r) for o, r in zip(outs, refs, strict=True)) / n
        print(f"  {name:40s} {best / n * 1000:7.1f} ms  {psnr:5.1f} dB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=int, default=16)
    args = ap.parse_args()
    part_warnings()
    part_scaled(args.photos)


if __name__ == "__main__":
    main()
