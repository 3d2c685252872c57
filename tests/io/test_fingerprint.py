"""The perceptual hash: cheap from decoded pixels, stable under copies, rotatable without the pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from oiv4.io.fingerprint import hamming, phash, phash_stored, rotate90, rotations
from oiv4.stages.dedup.index import canonical
from oiv4_mirror.images import noise_tile, render_picture

_TURNS = {1: Image.Transpose.ROTATE_90, 2: Image.Transpose.ROTATE_180, 3: Image.Transpose.ROTATE_270}


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    tile = noise_tile(5)
    return [render_picture(5, i, 400 + 16 * i, 300, tile) for i in range(6)]


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


def test_rotating_a_hash_gives_the_hash_of_the_rotated_picture(photos: list[Image.Image]) -> None:
    for img in photos:
        rots = rotations(phash(img))[:, 0]
        for turn, transpose in _TURNS.items():
            # at most one bit: the 32x32 resample of a non-square picture is not exactly rotation-symmetric
            assert hamming(phash(img.transpose(transpose)), rots[turn]) <= 1
            assert hamming(phash(img.transpose(transpose)), rots[0]) > 12  # unrotated they look unrelated


def test_four_quarter_turns_of_any_hash_return_it_unchanged() -> None:
    h = np.random.default_rng(0).integers(0, 2**63, 1000, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    assert np.array_equal(rotate90(rotate90(rotate90(rotate90(h)))), h)
    assert not np.array_equal(rotate90(h), h)


def test_every_rotation_of_a_hash_has_the_same_canonical_form() -> None:
    h = np.random.default_rng(1).integers(0, 2**63, 500, dtype=np.uint64)
    rots = rotations(h)
    forms = [canonical(rots[r])[0] for r in range(4)]
    for form in forms[1:]:
        assert np.array_equal(form, forms[0])


def test_reencoded_and_resized_copies_hash_within_two_bits(photos: list[Image.Image]) -> None:
    for img in photos:
        h = phash(img)
        assert hamming(phash(_jpeg(img, 50)), h) <= 2
        assert hamming(phash(img.resize((img.width // 3, img.height // 3))), h) <= 2


def test_different_photos_hash_far_apart(photos: list[Image.Image]) -> None:
    hashes = np.array([phash(p) for p in photos], dtype=np.uint64)
    d = hamming(hashes[:, None], hashes[None, :])
    assert d[~np.eye(len(photos), dtype=bool)].min() > 12


def test_the_hash_does_not_depend_on_the_image_mode(photos: list[Image.Image]) -> None:
    img = photos[0]
    h = phash(img)
    assert hamming(phash(img.convert("L")), h) <= 1
    assert hamming(phash(img.convert("RGBA")), h) <= 1
    assert phash(img).dtype == np.uint64


def test_hashing_a_stored_jpeg_matches_hashing_its_decoded_pixels(photos: list[Image.Image]) -> None:
    for img in photos:
        big = img.resize((1024, 768))
        buf = io.BytesIO()
        big.save(buf, "JPEG", quality=90)
        assert hamming(phash_stored(buf.getvalue()), phash(big)) <= 2


def test_hashing_bytes_that_are_not_an_image_is_a_clear_error() -> None:
    with pytest.raises(Exception, match="cannot identify image file"):
        phash_stored(b"<html>not a photo</html>")
