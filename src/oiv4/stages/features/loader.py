"""Stored images -> batches of model input, decoded in DataLoader worker processes.

Each worker reads the bytes where the set's ledger says they are (a file, a zip member, a webdataset
member) through the io layer's `BlobReader`, and decodes and crops them (`Preprocess.from_bytes`). Workers
hand back uint8 crops (a quarter of the bytes of float32 ones); scaling and normalising happen on the device,
in one vectorised step per batch. An image that cannot be read or decoded travels as its outcome and reason,
so the batch goes on without it and the ledger records why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from oiv4.contracts.errors import CorruptImageError, OutcomeError, ReaderError
from oiv4.io.containers import BlobReader
from oiv4.io.locations import parse_location
from oiv4.io.storage import Storage
from oiv4.stages.features.ledger import MISSING_FILE, READ_ERROR
from oiv4.stages.features.preprocess import Preprocess

#: (row, image_id, location) of one stored image.
StoredRow = tuple[int, str, str]


@dataclass
class Failed:
    """An image that got no vector, and why."""

    row: int
    image_id: str
    outcome: str
    reason: str


@dataclass
class Batch:
    """One batch: the crops that decoded (uint8, N x H x W x 3), their rows, and the images that failed."""

    rows: list[StoredRow]
    crops: Any  # torch uint8 tensor, or None when nothing in the batch decoded
    failed: list[Failed] = field(default_factory=list)


class StoredImages:
    """A map-style dataset over stored images; item i is a uint8 crop or a `Failed`."""

    def __init__(self, storage: Storage, rows: list[StoredRow], preprocess: Preprocess):
        self.rows = rows
        self.preprocess = preprocess
        self.reader = BlobReader(storage)  # pickles without its handles

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[StoredRow, np.ndarray | Failed]:
        row, image_id, location = self.rows[i]
        try:
            data = self.reader.read(parse_location(location))
        except CorruptImageError as exc:
            gone = "missing" in str(exc) or "no such member" in str(exc)
            return self.rows[i], Failed(row, image_id, MISSING_FILE if gone else READ_ERROR, str(exc))
        except (ReaderError, OSError, ValueError, KeyError) as exc:
            return self.rows[i], Failed(row, image_id, READ_ERROR, f"{type(exc).__name__}: {exc}")
        try:
            return self.rows[i], self.preprocess.from_bytes(data)
        except OutcomeError as exc:
            return self.rows[i], Failed(row, image_id, str(exc.outcome), f"{location}: {exc.reason}")


def collate(items: list[tuple[StoredRow, np.ndarray | Failed]]) -> Batch:
    """Stack the crops that decoded; keep the rest as failures (top-level: DataLoader workers pickle it)."""
    import torch

    good = [(r, x) for r, x in items if isinstance(x, np.ndarray)]
    failed = [x for _, x in items if isinstance(x, Failed)]
    crops = torch.from_numpy(np.stack([x for _, x in good])) if good else None
    return Batch([r for r, _ in good], crops, failed)


class Normalise:
    """uint8 N x H x W x 3 crops -> the model's float input, N x 3 x H x W (channels-last in memory), on `device`.

    x * scale + shift per channel, as `Preprocess.affine` gives it, with scale and shift laid out as one row of
    H x W x 3 values: the arithmetic runs over whole contiguous rows, where a (1, 3, 1, 1) broadcast over a
    channels-last tensor makes every inner loop 3 elements long (3-4x the CPU for the same floats). On the CPU
    it runs in numpy, on one thread: a few ms of memory-bound work per batch gains nothing from torch's thread
    team, whose spinning barrier cost 3x the CPU when the DataLoader worker holds the other core. Same float32
    multiply then add either way, so the same bits. The float batch is one buffer kept from call to call (a
    fresh 19 MB tensor per batch costs as much in page faults as the arithmetic): the result is valid until
    the next call, which overwrites it.
    """

    def __init__(self, preprocess: Preprocess, device: str = "cpu"):
        import torch

        pixels = preprocess.crop * preprocess.crop
        scale, shift = (np.tile(np.asarray(v, dtype=np.float32), pixels) for v in preprocess.affine())
        self.device = device
        if device == "cpu":
            self.scale, self.shift, self.buffer = scale, shift, np.empty((0, scale.size), np.float32)
        else:
            self.scale, self.shift = torch.from_numpy(scale).to(device), torch.from_numpy(shift).to(device)
            self.buffer = torch.empty((0, scale.size), device=device)

    def __call__(self, crops: Any) -> Any:
        import torch

        n, h, w, c = crops.shape
        if self.buffer.shape[0] < n:
            self.buffer = (
                np.empty((n, h * w * c), np.float32)
                if self.device == "cpu"
                else torch.empty((n, h * w * c), device=self.device)
            )
        x = self.buffer[:n]
        if self.device == "cpu":
            np.multiply(crops.numpy().reshape(n, h * w * c), self.scale, out=x)
            np.add(x, self.shift, out=x)
            x = torch.from_numpy(x)
        else:
            x.copy_(crops.to(self.device, non_blocking=True).reshape(n, h * w * c))
            x.mul_(self.scale).add_(self.shift)
        return x.view(n, h, w, c).permute(0, 3, 1, 2)


def _one_thread(_worker: int) -> None:
    import torch

    torch.set_num_threads(1)  # a decode worker needs no intra-op threads; the model's process has them


def make_loader(dataset: StoredImages, batches: list[list[int]], workers: int) -> Any:
    """A DataLoader yielding `Batch`es in exactly the order of `batches` (lists of dataset indices)."""
    from torch.utils.data import DataLoader

    extra: dict[str, Any] = {}
    if workers > 0:
        # The platform's default start method (fork on Linux), as every hand-written loop uses: a spawned worker
        # would import torch again (~2 CPU-s each). The local pool's shard process is itself spawned and holds
        # no threads of ours when the loader forks.
        extra = {"worker_init_fn": _one_thread, "prefetch_factor": 4}
    return DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=workers, **extra)
