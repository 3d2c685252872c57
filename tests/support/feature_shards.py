"""Write feature shards in the `oiv4 features` on-disk format (random vectors) for the read-side tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from oiv4.contracts.layout import LAYOUT


def write_features(
    root: Path, model: str, image_set: str, vectors: np.ndarray, shard_rows: int = 50, ids: list[str] | None = None
) -> list[str]:
    """Shards of `vectors` with ids `<set-letter><row:015x>`; returns the ids in plan order."""
    prefix = {"train": "a", "validation": "b", "targets": "c", "extended_targets": "d"}[image_set]
    ids = ids or [f"{prefix}{i:015x}" for i in range(len(vectors))]
    for shard, start in enumerate(range(0, len(vectors), shard_rows)):
        npy = root / LAYOUT.features_npy(model, image_set, shard)
        meta = root / LAYOUT.features_metadata(model, image_set, shard)
        npy.parent.mkdir(parents=True, exist_ok=True)
        meta.parent.mkdir(parents=True, exist_ok=True)
        np.save(npy, vectors[start : start + shard_rows])
        rows = list(range(start, min(start + shard_rows, len(vectors))))
        pq.write_table(pa.table({"image_id": [ids[r] for r in rows], "row": pa.array(rows, pa.int64())}), meta)
    return ids
