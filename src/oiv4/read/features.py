"""One set's image features, as `oiv4 features` stored them: ids and a memory-mapped (N, d) array.

feats = ds["targets"].features("vgg16-fc2")
feats.ids            # ImageIDs in plan order
feats.array[10:20]   # rows read from the memory-mapped shards, never the whole set at once
feats.vector("000002b66c9c498e")
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from oiv4.contracts.errors import ImageNotFoundError
from oiv4.io.storage import Storage
from oiv4.io.vector_shards import FeatureStore, open_features
from oiv4.read.id_index import IdIndex


class ShardedArray:
    """A read-only (N, d) view over the per-shard memmaps: indexing reads only the rows asked for."""

    def __init__(self, store: FeatureStore) -> None:
        self._store = store

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self._store), self._store.dim)

    @property
    def dtype(self) -> np.dtype:
        return self._store.dtype

    def __len__(self) -> int:
        return len(self._store)

    def __getitem__(self, key: int | slice | np.ndarray) -> np.ndarray:
        n = len(self._store)
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                return self._store.block(start, max(start, stop))
            return self._store.take(np.arange(start, stop, step))
        if isinstance(key, (int, np.integer)):
            i = int(key) + (n if key < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"row {key} out of range for {n} vectors")
            return self._store.take(np.array([i]))[0]
        return self._store.take(np.asarray(key))

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        # Explicit np.asarray(feats.array) loads every row: the caller asked for it.
        out = self._store.block(0, len(self._store))
        return out if dtype is None else out.astype(dtype)


class Features:
    """The vectors of one model for one set: `.ids`, `.rows`, `.array`, `.vector(image_id)`, `.dim`, `.dtype`."""

    def __init__(self, storage: Storage, model: str, image_set: str) -> None:
        # A truncated npy is a DamagedFeaturesError naming the file (io.vector_shards, the one reader).
        self._store = open_features(storage, model, image_set)
        self.model = model
        self.image_set = self._store.image_set
        self.array = ShardedArray(self._store)
        self._index: IdIndex | None = None

    def __repr__(self) -> str:
        return f"<oiv4 features {self.model} of {self.image_set}: {len(self)} x {self.dim} {self.dtype}>"

    def __len__(self) -> int:
        return len(self._store)

    @property
    def ids(self) -> pa.Array:
        """ImageIDs, one per row of `.array`, in plan order."""
        return self._store.ids

    @property
    def rows(self) -> np.ndarray:
        """Manifest (plan) row of each vector."""
        return self._store.rows

    @property
    def dim(self) -> int:
        return self._store.dim

    @property
    def dtype(self) -> np.dtype:
        return self._store.dtype

    def position(self, image_id: str) -> int | None:
        """Row of `image_id` in `.array`, or None when it has no vector."""
        if self._index is None:
            self._index = IdIndex(pa.chunked_array([self._store.ids]))
        return self._index.find(image_id)

    def vector(self, image_id: str) -> np.ndarray:
        """The vector of `image_id`; ImageNotFoundError when it has none."""
        pos = self.position(image_id)
        if pos is None:
            raise ImageNotFoundError(f"{image_id} has no {self.model} vector in {self.image_set}")
        return self.array[pos]
