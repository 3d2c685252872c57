"""One features shard: the stored images of plan rows [start, stop) -> `img_emb_NNNNN.npy` + `metadata_NNNNN.parquet`.

While it runs, every batch leaves its vectors in `work/shard-NNNNN/chunk-<first row>.npy` and then one
ledger part naming each image of the batch (a vector, or why not). A resumed shard reads the parts, skips
the rows they cover and goes on from the next batch boundary, so its batches (and therefore every float the
model computes) are those of an uninterrupted run. When all rows are recorded the chunks are concatenated
into the npy (written first), the metadata (written last: its presence means the pair is complete), their
checksums, the compacted ledger; then the chunks are removed. Every step is idempotent, so a kill anywhere
is finished by the next run.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from oiv4.contracts.errors import FeaturesError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.io.checksum import checksum
from oiv4.io.storage import Storage
from oiv4.stages.base import ShardResult, ShardTask
from oiv4.stages.features import ledger
from oiv4.stages.features.loader import Normalise, StoredImages, make_loader
from oiv4.stages.features.models import ModelSpec, load_model, model_spec
from oiv4.stages.features.settings import FeaturesSettings

METADATA_SCHEMA = pa.schema(
    [pa.field("image_id", pa.string(), nullable=False), pa.field("row", pa.int64(), nullable=False)]
)


def pick_device(device: str) -> str:
    """auto -> cuda when torch sees a GPU, else cpu; cuda without one is refused."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise FeaturesError("--device cuda: torch sees no CUDA GPU here (use --device cpu, or auto)")
    return device


def loader_workers(settings: FeaturesSettings, device: str) -> int:
    """Decode processes per shard: one keeps a CPU model fed (it is ~100x slower than decoding); a GPU needs more."""
    if settings.loader_workers is not None:
        return settings.loader_workers
    import os

    return 1 if device == "cpu" else max(1, min(8, (os.cpu_count() or 2) - 1))


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _chunk_rel(task: ShardTask[FeaturesSettings], model: str, chunk: int) -> str:
    return f"{LAYOUT.features_work_dir(model, task.image_set, task.shard)}/chunk-{chunk:012d}.npy"


def _extract(
    task: ShardTask[FeaturesSettings], s: FeaturesSettings, spec: ModelSpec, rows: list[tuple[int, str, str]]
) -> Counter[str]:
    """Run the model over `rows` batch by batch, leaving chunks and ledger parts; returns outcome counts."""
    import torch

    storage = task.storage
    device = pick_device(s.device)
    model = load_model(spec, s.weights_path).to(device)
    normalise = Normalise(spec.preprocess, device)
    dtype = np.dtype(s.dtype)
    batches = [list(range(i, min(i + s.batch_size, len(rows)))) for i in range(0, len(rows), s.batch_size)]
    dataset = StoredImages(task.storage, rows, spec.preprocess)
    counts: Counter[str] = Counter()
    for indices, batch in zip(batches, make_loader(dataset, batches, loader_workers(s, device)), strict=True):
        chunk = rows[indices[0]][0]
        vectors = np.zeros((0, spec.dim), dtype=dtype)
        if batch.crops is not None:
            x = normalise(batch.crops)
            with torch.inference_mode(), torch.autocast("cuda", enabled=device == "cuda"):
                out = model(x)
            if out.shape[1] != spec.dim:
                raise FeaturesError(
                    f"model {spec.name} gave {out.shape[1]}-d vectors, its registry entry says {spec.dim}"
                )
            vectors = out.float().cpu().numpy().astype(dtype)
        storage.write_bytes(_chunk_rel(task, s.model, chunk), npy_bytes(vectors))
        recorded: list[dict[str, Any]] = [
            {"image_id": r[1], "row": r[0], "outcome": ledger.VECTOR, "reason": None} for r in batch.rows
        ]
        recorded += [
            {"image_id": f.image_id, "row": f.row, "outcome": f.outcome, "reason": f.reason} for f in batch.failed
        ]
        for r in recorded:
            r.update(set=task.image_set.value, shard=task.shard, chunk=chunk)
        ledger.write_part(storage, s.model, task.image_set, task.shard, chunk, sorted(recorded, key=lambda r: r["row"]))
        counts[ledger.VECTOR] += len(batch.rows)
        counts.update(f.outcome for f in batch.failed)
    return counts


def _write_pair(storage: Storage, task: ShardTask[FeaturesSettings], s: FeaturesSettings, spec: ModelSpec) -> None:
    """Concatenate the chunks the ledger names into the npy, then write the metadata."""
    parts = ledger.read_parts(storage, s.model, task.image_set, task.shard)
    ok = parts.filter(pc.equal(parts["outcome"], ledger.VECTOR))
    chunks = sorted(set(parts["chunk"].to_pylist()))
    arrays = [np.load(io.BytesIO(storage.read_bytes(_chunk_rel(task, s.model, c))), allow_pickle=False) for c in chunks]
    vectors = np.concatenate(arrays) if arrays else np.zeros((0, spec.dim), dtype=np.dtype(s.dtype))
    if vectors.shape != (ok.num_rows, spec.dim):
        raise FeaturesError(
            f"{task.image_set.value} shard {task.shard}: {vectors.shape[0]} vectors for {ok.num_rows} images in the "
            f"features ledger: remove {LAYOUT.features_work_dir(s.model, task.image_set, task.shard)} and re-run"
        )
    meta = pa.table({"image_id": ok["image_id"], "row": ok["row"]}, schema=METADATA_SCHEMA)
    storage.write_bytes(LAYOUT.features_npy(s.model, task.image_set, task.shard), npy_bytes(vectors), fsync=True)
    storage.write_bytes(LAYOUT.features_metadata(s.model, task.image_set, task.shard), _parquet_bytes(meta), fsync=True)


def _finish(storage: Storage, task: ShardTask[FeaturesSettings], model: str) -> None:
    """Checksums of the pair, the compacted ledger, no chunks: each step safe to repeat after a kill."""
    image_set = task.image_set
    npy_rel, meta_rel = (
        LAYOUT.features_npy(model, image_set, task.shard),
        LAYOUT.features_metadata(model, image_set, task.shard),
    )
    files = {}
    for key, rel in (("npy", npy_rel), ("metadata", meta_rel)):
        data = storage.read_bytes(rel)
        files[key] = {"path": rel, "bytes": len(data), "checksum": checksum(data)}
    storage.write_bytes(LAYOUT.features_checksums(model, image_set, task.shard), json.dumps(files, indent=1).encode())
    if storage.exists(LAYOUT.features_ledger_shard(model, image_set, task.shard)):
        storage.remove(LAYOUT.features_ledger_parts_dir(model, image_set, task.shard))
    else:
        ledger.compact(storage, model, image_set, task.shard)
    storage.remove(LAYOUT.features_work_dir(model, image_set, task.shard))


def run_features_shard(task: ShardTask[FeaturesSettings]) -> ShardResult[None]:
    """Vectors for every stored image of the shard; safe to re-run (recorded batches are not redone)."""
    s, storage = task.settings, task.storage
    spec = model_spec(s.model)
    image_set = ImageSet(task.image_set)
    result: ShardResult[None] = ShardResult(image_set, task.shard)
    if not storage.exists(LAYOUT.features_metadata(s.model, image_set, task.shard)):
        done = set(ledger.read_parts(storage, s.model, image_set, task.shard)["row"].to_pylist())
        rows = [r for r in s.todo if r[0] not in done]
        result.skipped = len(s.todo) - len(rows)
        if rows:
            result.outcomes.update(_extract(task, s, spec, rows))
        _write_pair(storage, task, s, spec)
    _finish(storage, task, s.model)
    return result
