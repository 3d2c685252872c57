"""Which CVDF archives make a set, which shard each one is, and what each must weigh and hash to.

The published sizes and SHA-256 digests ship as package data (`oiv4/data/archives.json`, from the
facts file / TensorFlow Datasets) so verification needs no network and no configuration.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from oiv4.contracts.errors import SettingError
from oiv4.contracts.schema import ImageSet

HEX_DIGITS = "0123456789abcdef"

#: Archive stems are the only archive-derived strings that become paths: anything else is refused.
STEM_RE = re.compile(r"^(train_[0-9a-f]|validation)$")


@dataclass(frozen=True)
class KnownArchive:
    """An archive as published: its exact size in bytes and the SHA-256 of those bytes."""

    name: str
    bytes: int
    sha256: str


def load_known_archives() -> dict[str, KnownArchive]:
    """The published table, name (`train_0.tar.gz`) -> KnownArchive."""
    raw = json.loads(resources.files("oiv4").joinpath("data/archives.json").read_text())
    return {n: KnownArchive(n, int(v["bytes"]), str(v["sha256"])) for n, v in raw["archives"].items()}


def archive_name(stem: str) -> str:
    """`train_3` -> `train_3.tar.gz`."""
    return f"{stem}.tar.gz"


def shard_of(stem: str) -> int:
    """The ledger shard of an archive: train_0..train_f -> 0..15, validation -> 0."""
    if not STEM_RE.match(stem):
        raise ValueError(f"not a CVDF archive stem: {stem!r}")
    return 0 if stem == "validation" else int(stem[-1], 16)


def all_stems(image_set: ImageSet | str) -> list[str]:
    """Every archive a set can draw from."""
    image_set = ImageSet(image_set)
    if image_set == ImageSet.validation:
        return ["validation"]
    if image_set == ImageSet.targets:
        return [f"train_{x}" for x in HEX_DIGITS]
    raise SettingError(f"{image_set.value} is not an archive set (use targets or validation)")


def rows_by_stem(image_set: ImageSet | str, ids: pa.Array | pa.ChunkedArray, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Plan row positions (indices into `ids`) grouped by the archive that must hold them.

    targets: the image `abc...` is in `train_a`, so only the archives whose hex digit starts a
    boxable ID are needed; validation: everything is in `validation`.
    """
    image_set = ImageSet(image_set)
    if image_set == ImageSet.validation:
        return {"validation": np.arange(len(rows))} if len(rows) else {}
    all_stems(image_set)  # raises for URL sets
    first = pc.utf8_slice_codeunits(ids, 0, 1).to_numpy(zero_copy_only=False).astype("<U1")
    out: dict[str, np.ndarray] = {}
    for x in HEX_DIGITS:
        idx = np.flatnonzero(first == x)
        if len(idx):
            out[f"train_{x}"] = idx
    return out
