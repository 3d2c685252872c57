"""Read the built sets by ImageID, whatever layout they were stored in.

    ds = oiv4.open("/data/open_images")
    img = ds["train"]["000002b66c9c498e"]          # a PIL image
    for image_id, img in ds["validation"]: ...     # plan order

A set's images are found through its ledger: each `ok` row's `location` is either a relative file path
(seed layout `<set>/images/<id[:2]>/<id>.jpg`) or `<container>:<member>` where the container is a zip
(per-shard zips, the CVDF archives converted to zip) or an uncompressed webdataset tar. Sets without a
ledger (built by the old notebook) are found from the files present instead.

Random access is the point, so nothing is scanned per read: a zip's central directory is parsed once
(one ranged read at the end of the file) into a member -> offset index, a tar's headers are walked once
into the same kind of index, and each read is then a single `pread` of the member's bytes on a cached
file handle. `pread` carries no shared file offset, so readers are thread-safe and survive `fork`
(PyTorch DataLoader workers).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.contracts.vectors import DEFAULT_MODEL
from oiv4.io.containers import BlobReader
from oiv4.io.ledger import ledger_started
from oiv4.io.storage import Storage
from oiv4.read.set_reader import SetReader


class Dataset:
    """The sets built under one root. `ds.sets` maps set name -> SetReader; `ds["train"]` is one of them."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.blobs = BlobReader(storage)
        self._sets: dict[str, SetReader] | None = None

    @property
    def root(self) -> str:
        return self.storage.root

    @property
    def sets(self) -> dict[str, SetReader]:
        """Sets with anything under the root (a plan, a ledger or image files), in pipeline order."""
        if self._sets is None:
            found: dict[str, SetReader] = {}
            for s in ImageSet:
                if (
                    self.storage.exists(LAYOUT.plan(s))
                    or ledger_started(self.storage, s)
                    or self.storage.exists(LAYOUT.images_dir(s))
                    or self.storage.exists(LAYOUT.webdataset_dir(s))
                ):
                    found[s.value] = SetReader(self.storage, s, self.blobs)
            self._sets = found
        return self._sets

    def __getitem__(self, image_set: str) -> SetReader:
        try:
            return self.sets[ImageSet(image_set).value]
        except (KeyError, ValueError):
            have = ", ".join(self.sets) or "none"
            raise KeyError(f"no set {image_set!r} under {self.root} (sets present: {have})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.sets)

    def __contains__(self, image_set: object) -> bool:
        return image_set in self.sets

    def __repr__(self) -> str:
        return f"<oiv4 dataset at {self.root}: {', '.join(self.sets) or 'no sets'}>"

    def neighbors(self, model: str = DEFAULT_MODEL, name: str | None = None, *, duckdb: bool = False) -> Any:
        """Ground truth from `oiv4 neighbors` as a pa.Table (or a DuckDB relation); see `oiv4.read.neighbors`."""
        from oiv4.read.neighbors import neighbors_relation, read_neighbors

        return (neighbors_relation if duckdb else read_neighbors)(self.storage, model, name)

    def close(self) -> None:
        self.blobs.close()

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_dataset(root: str | os.PathLike[str], **storage_options: Any) -> Dataset:
    """Open the sets built under `root` (a local folder or any fsspec URL such as `s3://bucket/prefix`).

    Raises FileNotFoundError when a local root does not exist. Opening reads nothing else: each set
    loads its ledger on first use.
    """
    storage = Storage(str(root), storage_options)
    path = storage.local_path("")
    if path is not None and not path.is_dir():
        raise FileNotFoundError(f"no oiv4 data at {storage.root}: folder does not exist")
    return Dataset(storage)
