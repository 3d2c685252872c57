"""Decoding stored bytes into pixels, with damage raised as `CorruptImageError`."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from oiv4.contracts.errors import CorruptImageError

if TYPE_CHECKING:
    from PIL import Image


def decode(data: bytes, what: str = "image") -> Image.Image:
    """Decode stored bytes into a loaded PIL image; a damaged JPEG raises CorruptImageError."""
    from PIL import Image, UnidentifiedImageError

    from oiv4.io.strict_decode import scan_problem

    costly = scan_problem(data) if data[:2] == b"\xff\xd8" else None
    if costly is not None:
        raise CorruptImageError(f"{what}: {costly}")
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except UnidentifiedImageError:
        raise CorruptImageError(f"{what}: stored bytes are not an image Pillow recognises") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptImageError(f"{what}: stored bytes do not decode ({exc})") from exc
    return img
