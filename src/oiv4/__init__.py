"""oiv4: build the OpenImages V4 image sets (targets, validation, train, extended_targets).

The CLI (`oiv4 ...`) is a thin layer over this API; every stage can be imported and run from Python.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from oiv4.read.dataset import Dataset


def open(root: str, **storage_options: Any) -> Dataset:
    """Open the sets built under `root` (a folder or fsspec URL) for reading by ImageID."""
    from oiv4.read.dataset import open_dataset

    return open_dataset(root, **storage_options)
