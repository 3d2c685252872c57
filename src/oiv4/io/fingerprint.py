"""Pixels -> a 64-bit perceptual hash whose four right-angle rotations are known from the hash alone.

The hash is a DCT sign hash: the picture is reduced to 32x32 grey, transformed with a 2-D DCT-II, and
the 8x8 lowest frequencies each give one bit: 1 when the coefficient is positive (grey is centred on
mid-grey first, so the DC bit says "brighter than mid-grey"). The classic pHash thresholds the same
coefficients at their median instead; both (and dHash) were measured on planted duplicates
(`benchmarks/dedup_scale.py hashes`; RESULTS.md, "Duplicates"), and the sign hash was kept because of one
property the others lack:

A DCT-II basis function of frequency u satisfies C_u(N-1-x) = (-1)^u C_u(x), so mirroring the picture
negates the odd-frequency coefficients and transposing it swaps u and v. A rotation by 90 degrees is a
transpose plus a mirror, so its sign bits are a *fixed bit permutation of the original bits, XOR a fixed
mask*. `rotations(h)` therefore gives the hashes of all four orientations without the pixels: the dedup
stage also searches every hash in a canonical orientation derived from it, which finds the same photo
stored under two different CSV `Rotation` values. (A median threshold is not preserved by negation, so
the median hash of a rotated picture cannot be derived from the hash.)

Hash the picture as it is *stored* (after the CSV rotation is applied): every copy whose Rotation is right
is then upright and compares at rotation 0; a copy whose Rotation is wrong or differs still matches at 90,
180 or 270.

Cost: the fetch transform already holds the decoded, shrunk RGB picture; a box reduce, a 32x32 grey resize and
two small matrix products take ~0.6 CPU ms, 1.6% of the transform's ~37 CPU ms on 2-12 MP photos
(benchmarks/dedup_scale.py fingerprint; benchmarks/RESULTS.md, "Duplicates").
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

#: Side of the grey square the DCT is taken over; 32 is pHash's choice (the 8x8 low frequencies of 32x32
#: keep the layout of the scene and drop texture, noise and JPEG artefacts).
SIDE = 32
#: Frequencies kept per axis: 8x8 = 64 bits.
KEEP = 8
#: Above this side the picture is first box-reduced by an integer factor (Image.reduce, cheap), so the
#: final antialiasing resize always starts from a small copy.
_REDUCE_TO = 4 * SIDE


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: D @ x is the DCT of column vector x."""
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d


_DCT = _dct_matrix(SIDE)[:KEEP]  # only the rows we keep: (8, 32)

#: The (vertical, horizontal) frequency of each bit, most significant bit first.
_FREQS: tuple[tuple[int, int], ...] = tuple((v, u) for v in range(KEEP) for u in range(KEEP))


def _bit_tables() -> tuple[np.ndarray, int]:
    """Permutation and XOR mask of a 90-degree counter-clockwise rotation, in bit positions."""
    # Rotating an image 90 degrees CCW (PIL ROTATE_90): new[y, x] = old[x, N-1-y].
    # Its DCT: new coef (v, u) = old coef (u, v) * (-1)^v   (v the vertical frequency of the new image).
    perm = np.zeros(KEEP * KEEP, dtype=np.int64)  # new bit index -> old bit index
    mask = 0
    for i, (v, u) in enumerate(_FREQS):
        perm[i] = u * KEEP + v
        if v % 2 == 1:
            mask |= 1 << (63 - i)
    return perm, mask


_PERM90, _MASK90 = _bit_tables()


def grey_square(img: Image.Image) -> np.ndarray:
    """The picture as a 32x32 float grey array, reduced cheaply (box reduce, then one bilinear resize)."""
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    factor = min(img.width, img.height) // _REDUCE_TO
    if factor >= 2:
        img = img.reduce(factor)  # integer box reduce in C: far cheaper than resampling 1024 px at once
    grey = img.convert("L") if img.mode != "L" else img
    return np.asarray(grey.resize((SIDE, SIDE), Image.Resampling.BILINEAR), dtype=np.float64)


def dct_lowfreq(grey: np.ndarray) -> np.ndarray:
    """The 8x8 lowest-frequency DCT-II coefficients of a 32x32 grey array (mean removed)."""
    return _DCT @ (grey - 127.5) @ _DCT.T


def _pack(bits: np.ndarray) -> int:
    return int(np.packbits(bits.astype(np.uint8).ravel()).view(">u8")[0])


def phash(img: Image.Image) -> np.uint64:
    """The 64-bit DCT sign hash of a decoded picture, as stored (see the module docstring)."""
    coefs = dct_lowfreq(grey_square(img))
    return np.uint64(_pack(coefs > 0))


def phash_stored(data: bytes) -> np.uint64:
    """The hash of a stored file (our own JPEG of <= 1024 px, e.g. a zip member of an archive set).

    For `oiv4 hash` over images stored before the fetch transform hashed them: JPEGs are decoded straight at
    1/2..1/8 scale from the DCT (`draft`), never below 4x the 32 px the hash needs, so hashing costs a
    fraction of a full decode and matches the hash of the full decode within a bit or two.
    """
    with Image.open(io.BytesIO(data), formats=["JPEG", "PNG"]) as im:
        if im.format == "JPEG":
            im.draft("RGB", (_REDUCE_TO, _REDUCE_TO))
        im.load()
        return phash(im)


def phash_median(img: Image.Image) -> np.uint64:
    """Classic pHash (same coefficients, thresholded at their median). Kept only as the measured baseline."""
    coefs = dct_lowfreq(grey_square(img)).ravel()
    return np.uint64(_pack(coefs > np.median(coefs[1:])))


def dhash(img: Image.Image) -> np.uint64:
    """Classic 64-bit difference hash (9x8 grey, left < right). Kept only as the measured baseline."""
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    factor = min(img.width, img.height) // _REDUCE_TO
    if factor >= 2:
        img = img.reduce(factor)
    g = np.asarray(img.convert("L").resize((9, 8), Image.Resampling.BILINEAR), dtype=np.int16)
    return np.uint64(_pack(g[:, 1:] > g[:, :-1]))


def rotate90(hashes: np.ndarray | np.uint64 | int) -> np.ndarray:
    """Hash(es) of the picture(s) rotated 90 degrees counter-clockwise, computed from the hash alone."""
    h = np.atleast_1d(np.asarray(hashes, dtype=np.uint64))
    bits = np.unpackbits(h.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1)  # (n, 64), MSB first
    packed = np.ascontiguousarray(np.packbits(bits[:, _PERM90], axis=1))
    rotated = packed.view(">u8").ravel().astype(np.uint64)
    return rotated ^ np.uint64(_MASK90)


def rotations(hashes: np.ndarray | np.uint64 | int) -> np.ndarray:
    """(4, n) array: the hashes at 0, 90, 180 and 270 degrees counter-clockwise."""
    h0 = np.atleast_1d(np.asarray(hashes, dtype=np.uint64))
    h90 = rotate90(h0)
    h180 = rotate90(h90)
    return np.stack([h0, h90, h180, rotate90(h180)])


def hamming(a: np.ndarray | np.uint64 | int, b: np.ndarray | np.uint64 | int) -> np.ndarray:
    """Bitwise Hamming distance between uint64 hashes (broadcasting)."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    return popcount(x).astype(np.int64)


def popcount_swar(x: np.ndarray) -> np.ndarray:
    """Set bits per uint64 (uint8, same shape) by the SWAR bit trick: what `popcount` runs on numpy 1.x."""
    v = np.atleast_1d(np.asarray(x, dtype=np.uint64))  # arrays, not scalars: the multiply must wrap silently
    v = v - ((v >> np.uint64(1)) & np.uint64(0x5555555555555555))
    v = (v & np.uint64(0x3333333333333333)) + ((v >> np.uint64(2)) & np.uint64(0x3333333333333333))
    v = (v + (v >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return ((v * np.uint64(0x0101010101010101)) >> np.uint64(56)).astype(np.uint8).reshape(np.shape(x))


#: Set bits per uint64 (uint8, same shape). numpy >= 2.0 has it built in; numpy 1.26 (supported) does not.
popcount = getattr(np, "bitwise_count", popcount_swar)
