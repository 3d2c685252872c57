"""Bytes -> stored JPEG, checked by pixels: rotation, colour modes, shrinking, and refusing bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms

from oiv4.contracts.errors import OutcomeError
from oiv4.stages.fetch.settings import TransformSettings
from oiv4.stages.fetch.transform import fit_size, open_image, transform_image

RED = (255, 0, 0)


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(data))
    assert im.format == "JPEG" and im.mode == "RGB"
    return np.asarray(im, dtype=np.int32)


def _marked(w: int, h: int) -> Image.Image:
    """Mid-grey with a red block top-left."""
    im = Image.new("RGB", (w, h), (128, 128, 128))
    im.paste(RED, (0, 0, w // 5, h // 5))
    return im


def _is_red(px: np.ndarray) -> bool:
    return bool(px[0] > 200 and px[1] < 60 and px[2] < 60)


@pytest.mark.parametrize(
    ("rotation", "corner"),
    [(0.0, "top-left"), (90.0, "bottom-left"), (180.0, "bottom-right"), (270.0, "top-right")],
)
def test_rotation_turns_the_image_counter_clockwise(rotation, corner):
    out = _decode(transform_image(_encode(_marked(300, 200), "JPEG"), rotation, TransformSettings()).data)
    corners = {"top-left": out[3, 3], "bottom-left": out[-4, 3], "bottom-right": out[-4, -4], "top-right": out[3, -4]}
    assert [name for name, px in corners.items() if _is_red(px)] == [corner]
    assert out.shape[:2] == ((200, 300) if rotation in (0.0, 180.0) else (300, 200))


def test_no_rotate_and_an_empty_rotation_keep_the_stored_orientation():
    data = _encode(_marked(300, 200), "JPEG")
    kept = transform_image(data, 90.0, TransformSettings(rotate=False))
    assert _is_red(_decode(kept.data)[3, 3]) and "not applied" in kept.description
    unknown = transform_image(data, float("nan"), TransformSettings())
    assert _is_red(_decode(unknown.data)[3, 3]) and "unknown" in unknown.description


def test_shrinks_to_fit_1024_keeping_aspect_and_never_enlarges():
    big = transform_image(_encode(_marked(3000, 1200), "JPEG"), 0.0, TransformSettings())
    assert big.stored_size == (1024, 410) == fit_size(3000, 1200, 1024)
    tall = transform_image(_encode(_marked(900, 2000), "PNG"), 0.0, TransformSettings())
    assert tall.stored_size == (461, 1024)
    small = transform_image(_encode(_marked(200, 100), "JPEG"), 0.0, TransformSettings())
    assert small.stored_size == (200, 100)
    assert transform_image(_encode(_marked(3000, 1200), "JPEG"), 0.0, TransformSettings(max_side=256)).stored_size == (
        256,
        102,
    )


def test_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (64, 64), (0, 0, 255, 255))
    rgba.paste((0, 0, 255, 0), (0, 0, 64, 32))  # top half fully transparent blue
    rgba.paste((255, 0, 0, 128), (0, 48, 64, 64))  # bottom strip half-transparent red
    out = _decode(transform_image(_encode(rgba, "PNG"), 0.0, TransformSettings()).data)
    assert np.abs(out[10, 32] - [255, 255, 255]).max() <= 3  # transparent -> white, not the hidden blue
    assert np.abs(out[40, 32] - [0, 0, 255]).max() <= 6
    assert np.abs(out[58, 32] - [255, 127, 127]).max() <= 6  # 50% red over white


def test_palette_with_transparency_and_greyscale_alpha_become_rgb_on_white():
    pal = Image.new("P", (32, 32), 1)
    pal.putpalette([0, 255, 0] + [200, 0, 0] + [0, 0, 0] * 254)
    pal.paste(0, (0, 0, 32, 16))
    out = _decode(transform_image(_encode(pal, "GIF", transparency=0), 0.0, TransformSettings()).data)
    assert np.abs(out[4, 16] - [255, 255, 255]).max() <= 3 and np.abs(out[28, 16] - [200, 0, 0]).max() <= 8
    la = Image.new("LA", (32, 32), (40, 255))
    la.paste((40, 0), (0, 0, 32, 16))
    out = _decode(transform_image(_encode(la, "PNG"), 0.0, TransformSettings()).data)
    assert np.abs(out[4, 16] - 255).max() <= 3 and np.abs(out[28, 16] - 40).max() <= 3


def test_cmyk_jpeg_colours_come_out_close_to_the_rgb_they_encode():
    colour = (200, 60, 30)
    cmyk = Image.new("RGB", (64, 64), colour).convert("CMYK")  # Pillow writes Adobe-style inverted CMYK
    out = _decode(transform_image(_encode(cmyk, "JPEG", quality=95), 0.0, TransformSettings()).data)
    assert np.abs(out[32, 32] - colour).max() <= 8


def test_cmyk_with_a_broken_embedded_profile_falls_back_to_the_plain_conversion():
    im = Image.new("RGB", (32, 32), (30, 120, 200)).convert("CMYK")
    bogus = bytearray(128)
    bogus[16:20] = b"CMYK"  # claims to be a CMYK profile, is garbage
    out = transform_image(_encode(im, "JPEG", quality=95, icc_profile=bytes(bogus)), 0.0, TransformSettings())
    assert np.abs(_decode(out.data)[16, 16] - (30, 120, 200)).max() <= 8


def test_16_bit_greyscale_is_scaled_not_clipped():
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (16, 1))
    data = _encode(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    out = _decode(transform_image(data, 0.0, TransformSettings()).data)[8, :, 0]
    assert abs(int(out[128]) - 128) <= 4  # Pillow's convert("L") would clip this to 255
    assert out[0] <= 4 and out[-1] >= 251
    assert (np.diff(out[::16].astype(int)) > 0).all()  # the gradient survives


def test_rgb_icc_profiles_are_kept_and_others_dropped():
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = transform_image(_encode(_marked(64, 64), "JPEG", icc_profile=srgb), 0.0, TransformSettings())
    assert Image.open(io.BytesIO(out.data)).info.get("icc_profile") == srgb
    grey = transform_image(_encode(Image.new("L", (16, 16), 9), "PNG"), 0.0, TransformSettings())
    assert "icc_profile" not in Image.open(io.BytesIO(grey.data)).info


def _png_header(width: int, height: int) -> bytes:
    """A 1-bit PNG declaring width x height whose (zero) pixels are never needed by the size check."""
    import zlib

    def chunk(tag: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + tag + body + zlib.crc32(tag + body).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def test_decompression_bombs_are_refused_before_decoding_with_an_explicit_limit():
    with pytest.raises(OutcomeError) as err:
        transform_image(_png_header(30000, 30000), 0.0, TransformSettings())
    assert err.value.outcome == "decompression_bomb" and "900 MP" in err.value.reason
    # 190 MP is above Pillow's own global hard limit (~179 MP) but within ours (200 MP): it opens.
    assert open_image(_png_header(14000, 13572), TransformSettings().max_pixels).size == (14000, 13572)
    with pytest.raises(OutcomeError, match="above the 0 MP limit"):
        transform_image(_encode(_marked(100, 100), "JPEG"), 0.0, TransformSettings(max_pixels=9_999))


def test_not_an_image_and_corrupt_images_are_named_outcomes():
    with pytest.raises(OutcomeError) as err:
        transform_image(b"<!DOCTYPE html><html>gone</html>", 0.0, TransformSettings(), content_type="text/html")
    assert err.value.outcome == "not_image" and "text/html" in err.value.reason
    with pytest.raises(OutcomeError) as err:
        transform_image(_encode(_marked(400, 300), "JPEG")[:2000], 0.0, TransformSettings())
    assert err.value.outcome == "corrupt_jpeg"  # strict decoding: libjpeg says "Premature end of JPEG file"
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
    with pytest.raises(OutcomeError) as err:  # never handed to Ghostscript
        transform_image(eps, 0.0, TransformSettings())
    assert err.value.outcome == "not_image"


def test_output_is_deterministic():
    data = _encode(_marked(2000, 1500), "JPEG")
    assert (
        transform_image(data, 90.0, TransformSettings()).data == transform_image(data, 90.0, TransformSettings()).data
    )


def test_resample_filter_is_a_setting_and_unknown_ones_are_refused():
    data = _encode(_marked(2000, 1500), "JPEG")
    outs = {f: transform_image(data, 0.0, TransformSettings(resample=f)) for f in ("bicubic", "bilinear", "box")}
    assert {o.stored_size for o in outs.values()} == {(1024, 768)}
    assert len({o.data for o in outs.values()}) == 3
    with pytest.raises(ValueError, match="unknown resample"):
        TransformSettings(resample="nearest-ish")
