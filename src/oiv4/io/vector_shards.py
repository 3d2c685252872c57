"""One set's feature shards (`features/<model>/<set>/`), memory-mapped, in plan order: the one reader of stored
vectors, for the neighbors stage and for `SetReader.features`.

A shard counts only when its metadata Parquet exists (written last); an `.npy` without metadata is an
unfinished shard and is ignored. Metadata whose `.npy` is missing or disagrees with it is damage.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from oiv4.contracts.errors import DamagedFeaturesError, NoFeaturesError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.io.storage import Storage


@dataclass
class FeatureStore:
    """The finished shards of one model and set: ids, plan rows, and one read-only memmap per shard."""

    model: str
    image_set: str
    ids: pa.Array
    rows: np.ndarray
    shards: list[np.ndarray]
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
    mm = getattr(arr, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mm.madvise(mmap.MADV_DONTNEED)


def stored_dim(storage: Storage, model: str, image_set: ImageSet | str) -> tuple[str, int] | None:
    """(path, d) of the first finished npy of this model and set, from its header only (None: there is none)."""
    for rel in sorted(storage.glob(LAYOUT.features_npy_glob(model, image_set))):
        with storage.open(rel) as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, _ = read(fh)
        return rel, int(shape[1])
    return None


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
        arr = np.load(storage.local_path(npy_rel), mmap_mode="r")
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
