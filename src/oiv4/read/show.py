"""`.show()` on an image read from a build: opens a viewer when the machine has one, else says where it wrote it.

Pillow's `Image.show()` hands the image to the first registered viewer (xdg-open, display, eog, ... on Linux)
and, on a machine with none (a server, a container, an SSH session), silently does nothing. Images the
reader returns carry this `show` instead: the same viewers first, then a PNG in the temp folder whose path
is printed on stderr, so `ds["train"][image_id].show()` never ends without a word.
"""

from __future__ import annotations

import os
import sys
import tempfile
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image


def _show(image: Image.Image, title: str | None = None, **options: Any) -> None:
    from PIL import ImageShow

    if ImageShow.show(image, title, **options):
        return
    fd, path = tempfile.mkstemp(prefix="oiv4-show-", suffix=".png")
    with os.fdopen(fd, "wb") as f:
        image.save(f, format="PNG")
    print(f"no image viewer found on this machine; wrote the image to {path}", file=sys.stderr)


def showable(image: Image.Image) -> Image.Image:
    """`image` with a `show()` that, when no viewer opens, writes a PNG to the temp folder and prints its path."""
    image.show = types.MethodType(_show, image)  # type: ignore[method-assign]
    return image


__all__ = ["showable"]
