"""One set's feature shards (`features/<model>/<set>/`), memory-mapped, in plan order: the one reader of stored
vectors, for the neighbors stage and for `SetReader.features`.

A shard counts only when its metadata Parquet exists (written last); an `.npy` without metadata is an
unfinished shard and is ignored. Metadata whose `.npy` is missing or disagrees with it is damage.

On an object store (`s3://...`) there is nothing to memory-map: each shard's header is read where it is, and
the first read of its vectors copies the `.npy` into a local cache (`vector_cache_dir`), streamed in chunks,
hashed on the way and refused unless it matches the checksum `oiv4 features` recorded; the copy is named by
that checksum, so it is reused by every later run, process and root, and can never be a stale one.
"""

from __future__ import annotations

import json
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from oiv4.contracts.errors import DamagedFeaturesError, NoFeaturesError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.io.checksum import StreamingChecksum, parse
from oiv4.io.storage import Storage

#: Bytes read from the object store per request while copying a shard (bounds the copy's memory).
COPY_CHUNK = 8 << 20


def vector_cache_dir() -> Path:
    """Where copies of remote feature shards are kept: $OIV4_VECTOR_CACHE, else $XDG_CACHE_HOME/oiv4/vectors
    (~/.cache/oiv4/vectors). Copies are named by content, so the folder may be emptied at any time."""
    if folder := os.environ.get("OIV4_VECTOR_CACHE"):
        return Path(folder)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "oiv4" / "vectors"


class _RemoteShard:
    """A feature shard on an object store: shape and dtype from its header; its vectors are read from a checked
    local copy made on first use (numpy indexing goes to that copy's memory map)."""

    def __init__(self, shape: tuple[int, int], dtype: np.dtype, copy: Callable[[], Path]) -> None:
        self.shape, self.dtype, self.ndim = shape, dtype, 2
        self._copy = copy
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self._copy(), mmap_mode="r")
        return self._array

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.array[key]


@dataclass
class FeatureStore:
    """The finished shards of one model and set: ids, plan rows, and one read-only memmap per shard."""

    model: str
    image_set: str
    ids: pa.Array
    rows: np.ndarray
    shards: list[Any]  # np.memmap, or _RemoteShard on an object store
    offsets: np.ndarray  # offsets[i] = first position of shard i; offsets[-1] = total rows

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def dim(self) -> int:
        return int(self.shards[0].shape[1])

    @property
    def dtype(self) -> np.dtype:
        return self.shards[0].dtype

    def block(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as one in-memory array (copied from the shards that hold them)."""
        stop = min(stop, len(self))
        parts = []
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        for i in range(max(first, 0), len(self.shards)):
            lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
            if lo >= stop:
                break
            a, b = max(start, lo) - lo, min(stop, hi) - lo
            if b > a:
                parts.append(np.array(self.shards[i][a:b]))
                _release(self.shards[i])
        if not parts:
            return np.zeros((0, self.dim), dtype=self.dtype)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def take(self, positions: np.ndarray) -> np.ndarray:
        """Rows at `positions` (any order), reading only the shards that hold them."""
        positions = np.asarray(positions, dtype=np.int64)
        out = np.empty((len(positions), self.dim), dtype=self.dtype)
        shard_of = np.searchsorted(self.offsets, positions, side="right") - 1
        for i in np.unique(shard_of):
            sel = shard_of == i
            out[sel] = self.shards[int(i)][positions[sel] - self.offsets[int(i)]]
        return out


def _release(arr: np.ndarray) -> None:
    """Drop a memmap's pages from this process's resident set once copied (they stay in the page cache):
    streaming a 50 GB database through mmap must not count 50 GB against --memory-gb."""
    if isinstance(arr, _RemoteShard):
        arr = arr.array
    mm = getattr(arr, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mm.madvise(mmap.MADV_DONTNEED)


def _header(storage: Storage, rel: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of an npy, read from its first bytes wherever it is."""
    with storage.open(rel) as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(fh)
        return shape, dtype, fh.tell()


def stored_dim(storage: Storage, model: str, image_set: ImageSet | str) -> tuple[str, int] | None:
    """(path, d) of the first finished npy of this model and set, from its header only (None: there is none)."""
    for rel in sorted(storage.glob(LAYOUT.features_npy_glob(model, image_set))):
        return rel, int(_header(storage, rel)[0][1])
    return None


def _local_copy(storage: Storage, model: str, name: str, shard: int) -> Path:
    """The checked local copy of a remote shard's npy (made now if the cache lacks it)."""
    npy_rel, sums_rel = LAYOUT.features_npy(model, name, shard), LAYOUT.features_checksums(model, name, shard)
    if not storage.exists(sums_rel):
        raise DamagedFeaturesError(
            f"{storage.path(sums_rel)} is missing, so the copy of {storage.path(npy_rel)} cannot be checked: remove "
            f"the shard's metadata and run `oiv4 features {name} --model {model}` again"
        )
    expected = json.loads(storage.read_bytes(sums_rel))["npy"]["checksum"]
    algorithm, digest = parse(expected)
    folder = vector_cache_dir()
    path = folder / f"{algorithm}-{digest}.npy"
    if path.exists():  # only ever renamed into place after its check
        return path
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{path.name}.{os.getpid()}.tmp"
    summed = StreamingChecksum(algorithm)
    try:
        with storage.open(npy_rel) as src, open(tmp, "wb") as dst:
            while chunk := src.read(COPY_CHUNK):
                summed.update(chunk)
                dst.write(chunk)
        if summed.value != expected:
            raise DamagedFeaturesError(
                f"{storage.path(npy_rel)} ({summed.size:,} bytes) hashes to {summed.value}, but oiv4 features recorded "
                f"{expected}: remove it and its metadata, then run `oiv4 features {name} --model {model}` again"
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _map(storage: Storage, model: str, name: str, shard: int) -> Any:
    """The shard's vectors: a memory map of the file, or, on an object store, of its checked local copy."""
    npy_rel = LAYOUT.features_npy(model, name, shard)
    local = storage.local_path(npy_rel)
    if local is not None:
        return np.load(local, mmap_mode="r")
    shape, dtype, offset = _header(storage, npy_rel)
    size = storage.size(npy_rel)
    if len(shape) != 2 or offset + int(np.prod(shape)) * dtype.itemsize != size:
        raise DamagedFeaturesError(
            f"{storage.path(npy_rel)} is damaged ({size:,} bytes do not hold the {shape} {dtype} array its header "
            f"declares): remove it and its metadata {storage.path(LAYOUT.features_metadata(model, name, shard))}, "
            f"then run `oiv4 features {name} --model {model}` again"
        )
    return _RemoteShard((int(shape[0]), int(shape[1])), dtype, lambda: _local_copy(storage, model, name, shard))


def open_features(storage: Storage, model: str, image_set: ImageSet | str) -> FeatureStore:
    """The finished feature shards of `model` for `image_set`; NoFeaturesError when there are none."""
    name = ImageSet(image_set).value
    metas = sorted(
        (shard, p)
        for p in storage.glob(LAYOUT.features_metadata_glob(model, name))
        if (shard := LAYOUT.features_metadata_shard(p)) is not None
    )
    if not metas:
        raise NoFeaturesError(
            f"no {model} features for {name} under {storage.root}: run `oiv4 features {name} --model {model}`"
        )
    ids, rows, shards, offsets = [], [], [], [0]
    for shard, _ in metas:
        meta_rel, npy_rel = LAYOUT.features_metadata(model, name, shard), LAYOUT.features_npy(model, name, shard)
        if not storage.exists(npy_rel):
            raise DamagedFeaturesError(f"{storage.path(npy_rel)} is missing but its metadata exists")
        with storage.open(meta_rel) as fh:
            # ParquetFile, not read_table: the latter imports pyarrow.dataset (time and memory a --memory-gb
            # budget counts).
            meta = pq.ParquetFile(fh).read(columns=["image_id", "row"])
        try:
            arr = _map(storage, model, name, shard)
        except (ValueError, OSError) as exc:  # a truncated file or header: numpy's "mmap length is greater ..."
            raise DamagedFeaturesError(
                f"{storage.path(npy_rel)} is damaged ({' '.join(str(exc).split())[:120]}): remove it and its "
                f"metadata {storage.path(meta_rel)}, then run `oiv4 features {name} --model {model}` again"
            ) from exc
        if arr.ndim != 2 or arr.shape[0] != meta.num_rows:
            raise DamagedFeaturesError(
                f"{storage.path(npy_rel)} holds {arr.shape[0] if arr.ndim else 0} vectors but "
                f"{storage.path(meta_rel)} lists {meta.num_rows} images"
            )
        if shards and (arr.shape[1] != shards[0].shape[1] or arr.dtype != shards[0].dtype):
            raise DamagedFeaturesError(
                f"{storage.path(npy_rel)} is {arr.shape[1]}-d {arr.dtype}, earlier shards are "
                f"{shards[0].shape[1]}-d {shards[0].dtype}"
            )
        ids.append(meta["image_id"].combine_chunks().cast(pa.string()))
        rows.append(meta["row"].to_numpy().astype(np.int64))
        shards.append(arr)
        offsets.append(offsets[-1] + arr.shape[0])
    return FeatureStore(
        model=model,
        image_set=name,
        ids=pa.concat_arrays(ids),
        rows=np.concatenate(rows),
        shards=shards,
        offsets=np.asarray(offsets, dtype=np.int64),
    )
