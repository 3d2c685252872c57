"""ImageID -> position without a million-entry dict."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from oiv4.contracts.schema import is_valid_image_id

# --------------------------------------------------------------------------------------------------
# ImageID lookup without a million-entry dict

_HEX = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i


def ids_to_keys(ids: pa.Array | pa.ChunkedArray) -> np.ndarray | None:
    """16-hex ImageIDs as uint64 keys (vectorised); None when any ID is not 16 lowercase hex."""
    arr = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    arr = arr.cast(pa.string())
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    if arr.null_count:
        return None
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset : arr.offset + n + 1]
    if not np.all(np.diff(offsets) == 16):
        return None
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]].reshape(n, 16)
    nibbles = _HEX[data]
    if (nibbles == 255).any():
        return None
    # Two nibbles per byte, then the 8 bytes of each row read as one big-endian integer.
    packed = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]
    return np.ascontiguousarray(packed).view(">u8").ravel().astype(np.uint64)


class IdIndex:
    """ImageID -> position, as a sorted uint64 array (8 bytes per image instead of a ~100-byte dict entry)."""

    def __init__(self, ids: pa.ChunkedArray) -> None:
        keys = ids_to_keys(ids)
        self._dict: dict[str, int] | None = None
        if keys is None:  # not all hex (a pseudo-ledger of odd names): a dict is fine at that size
            self._dict = {i: p for p, i in enumerate(ids.to_pylist())}
            return
        self._order = np.argsort(keys, kind="stable")
        self._keys = keys[self._order]

    def find(self, image_id: str) -> int | None:
        if self._dict is not None:
            return self._dict.get(image_id)
        if not is_valid_image_id(image_id):
            return None
        key = np.uint64(int(image_id, 16))
        pos = int(np.searchsorted(self._keys, key))
        if pos < len(self._keys) and self._keys[pos] == key:
            return int(self._order[pos])
        return None


class ShardOfId:
    """ImageID -> shard, over some shards' sorted uint64 ImageID keys (e.g. the failed IDs a compacted shard
    file lists in its footer): one sorted array for all of them, 12 bytes per ID."""

    def __init__(self, keys_by_shard: dict[int, np.ndarray]) -> None:
        shards = [np.full(len(k), s, dtype=np.int32) for s, k in keys_by_shard.items()]
        keys = np.concatenate(list(keys_by_shard.values())) if keys_by_shard else np.zeros(0, dtype=np.uint64)
        order = np.argsort(keys, kind="stable")
        self._keys = keys[order].astype(np.uint64)
        self._shards = (np.concatenate(shards) if shards else np.zeros(0, dtype=np.int32))[order]

    def find(self, image_id: str) -> int | None:
        """The shard listing `image_id` (None when none does or it is not an ImageID)."""
        if not is_valid_image_id(image_id):
            return None
        key = np.uint64(int(image_id, 16))
        pos = int(np.searchsorted(self._keys, key))
        if pos < len(self._keys) and self._keys[pos] == key:
            return int(self._shards[pos])
        return None
