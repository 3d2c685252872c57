"""io.strict_decode: damaged JPEG data is an outcome with libjpeg's words as the reason, never an `ok` image."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from oiv4.contracts.errors import OutcomeError
from oiv4.contracts.schema import Outcome
from oiv4.io.strict_decode import classify_warning, decode_strict
from oiv4_mirror.images import noise_tile, render_picture

LIMIT = 200_000_000


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return render_picture(11, 1, 1600, 1200, noise_tile(11))


def _jpeg(img: Image.Image, **opts: object) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90, **opts)
    return out.getvalue()


def _zeroed(data: bytes) -> bytes:
    mid = len(data) // 2
    return data[:mid] + b"\0" * 2000 + data[mid + 2000 :]


def test_a_jpeg_with_a_zeroed_block_that_pillow_decodes_is_refused_as_corrupt(photo):
    bad = _zeroed(_jpeg(photo))
    Image.open(io.BytesIO(bad)).load()  # the bug: Pillow says nothing
    with pytest.raises(OutcomeError) as err:
        decode_strict(bad, max_pixels=LIMIT)
    assert err.value.outcome == Outcome.corrupt_jpeg
    assert "premature end of data segment" in err.value.reason


def test_flipped_bytes_that_desynchronise_huffman_decoding_are_refused_never_ok_with_a_warning(photo):
    clean = _jpeg(photo, subsampling=0)
    reasons = []
    for pos in range(len(clean) // 2, len(clean) // 2 + 400, 25):
        data = bytearray(clean)
        data[pos] ^= 0x10
        try:
            got = decode_strict(bytes(data), max_pixels=LIMIT)
        except OutcomeError as exc:
            # a flip that forms a marker byte is a fatal libjpeg error ("Unsupported marker type"): decode_error
            assert exc.outcome in (Outcome.corrupt_jpeg, Outcome.decode_error)
            reasons.append(exc.reason)
        else:
            assert got.warnings == ()  # the decoder's blind spot: only a checksum can see these
    assert any("extraneous bytes before marker" in r for r in reasons)


def test_a_truncated_jpeg_is_refused_as_corrupt(photo):
    data = _jpeg(photo, progressive=True)
    with pytest.raises(OutcomeError) as err:
        decode_strict(data[: len(data) * 6 // 10], max_pixels=LIMIT)
    assert err.value.outcome == Outcome.corrupt_jpeg
    assert "Premature end of JPEG file" in err.value.reason


@pytest.mark.parametrize(
    "opts",
    [{}, {"progressive": True}, {"optimize": True}, {"restart_marker_rows": 4}, {"subsampling": 0}],
    ids=["baseline", "progressive", "optimize", "restarts", "444"],
)
def test_clean_jpegs_of_every_encoding_decode_with_no_warnings_and_match_pillow(photo, opts):
    data = _jpeg(photo, **opts)
    got = decode_strict(data, max_pixels=LIMIT)
    ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)
    assert got.warnings == ()
    assert got.image.mode == "RGB" and got.original_size == (1600, 1200)
    assert np.abs(np.asarray(got.image, dtype=np.int16) - ref).mean() < 1.0


def test_junk_appended_after_the_image_is_harmless(photo):
    got = decode_strict(_jpeg(photo) + b"JUNK" * 100, max_pixels=LIMIT)
    assert got.warnings == () and got.image.size == (1600, 1200)


def test_a_harmless_jfif_warning_is_ok_with_the_warning_kept_and_the_scan_still_checked(photo):
    data = bytearray(_jpeg(photo))
    assert data[6:11] == b"JFIF\0"
    data[11] = 2  # JFIF major version 2: libjpeg warns, the pixels are unaffected
    got = decode_strict(bytes(data), max_pixels=LIMIT)
    assert got.warnings == ("Warning: unknown JFIF revision number 2.01",)
    with pytest.raises(OutcomeError) as err:  # the same warning does not hide damage further on
        decode_strict(_zeroed(bytes(data)), max_pixels=LIMIT)
    assert err.value.outcome == Outcome.corrupt_jpeg


def test_cmyk_and_greyscale_jpegs_decode_like_pillow(photo):
    for mode in ("CMYK", "L"):
        data = _jpeg(photo.convert(mode))
        got = decode_strict(data, max_pixels=LIMIT)
        ref = Image.open(io.BytesIO(data))
        assert got.image.mode == mode
        diff = np.abs(np.asarray(got.image, dtype=np.int16) - np.asarray(ref, dtype=np.int16))
        assert diff.mean() < 1.0


def test_a_target_side_decodes_at_a_reduced_scale_no_smaller_than_the_target(photo):
    got = decode_strict(_jpeg(photo), max_pixels=LIMIT, target_side=400)
    assert got.original_size == (1600, 1200)
    assert 400 <= got.image.width < 1600 and got.image.height >= 300


def test_an_image_above_the_pixel_limit_is_refused_before_decoding(photo):
    with pytest.raises(OutcomeError) as err:
        decode_strict(_jpeg(photo), max_pixels=1_000_000)
    assert err.value.outcome == Outcome.decompression_bomb


def test_a_truncated_png_is_refused_and_a_whole_one_decodes(photo):
    out = io.BytesIO()
    photo.save(out, "PNG", compress_level=1)
    data = out.getvalue()
    assert decode_strict(data, max_pixels=LIMIT).image.size == (1600, 1200)
    with pytest.raises(OutcomeError) as err:
        decode_strict(data[: len(data) // 2], max_pixels=LIMIT)
    assert err.value.outcome == Outcome.decode_error


def test_bytes_that_are_no_image_are_not_image():
    with pytest.raises(OutcomeError) as err:
        decode_strict(b"<html>gone</html>", max_pixels=LIMIT)
    assert err.value.outcome == Outcome.not_image


def test_unknown_libjpeg_messages_fail_closed():
    assert classify_warning("Corrupt JPEG data: bad Huffman code") == Outcome.corrupt_jpeg
    assert classify_warning("Something libjpeg never said before") == Outcome.decode_error
    assert classify_warning("Warning: unknown JFIF revision number 3.00") is None
