"""A PyTorch map-style Dataset over one set, without making torch a dependency of oiv4.

`torch.utils.data.DataLoader` accepts any object with `__len__` and `__getitem__(int)`, so this class
needs nothing from torch; torch is imported only if you ask for tensors (`to_tensor=True`). It pickles
to DataLoader workers as the set's small in-memory ledger plus the root: file handles and archive
indexes are rebuilt inside each worker, and reads use `pread`, so forked workers never share a file offset.

    from torch.utils.data import DataLoader
    ds = oiv4.open(root)["validation"].torch(transform=my_transform)
    for batch in DataLoader(ds, batch_size=64, num_workers=4): ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from PIL import Image

    from oiv4.read.features import Features


class ImageSource(Protocol):
    """What the adapter reads from (a `SetReader` or a view of one), declared here so this module needs no reader."""

    @property
    def name(self) -> str: ...

    def __len__(self) -> int: ...

    def image_id_at(self, position: int) -> str: ...

    def read_bytes_at(self, position: int) -> bytes: ...

    def read_bytes(self, image_id: str) -> bytes: ...

    def features(self, model: str = ...) -> Features: ...


class TorchImageDataset:
    """Item `i` is the `i`-th stored image of the set in plan order, decoded to RGB and transformed.

    `transform` receives a PIL RGB image (torchvision transforms fit here). Without a transform and
    with `to_tensor=True` the item is a uint8 CHW tensor. With `with_ids=True` items are
    `(image_id, item)` pairs, so features can be written back keyed by ImageID.
    """

    def __init__(
        self,
        reader: ImageSource,
        transform: Callable[[Image.Image], Any] | None = None,
        *,
        with_ids: bool = False,
        to_tensor: bool = False,
        features: str | None = None,
    ) -> None:
        self.reader = reader
        # With `features`, item i is (item, vector) for the i-th image that has a vector, in plan order.
        self.features = reader.features(features) if features is not None else None
        self.transform = transform
        self.with_ids = with_ids
        self.to_tensor = to_tensor
        len(reader)  # load the ledger once here, so workers receive it instead of each re-reading it

    def __len__(self) -> int:
        return len(self.reader) if self.features is None else len(self.features)

    def __getitem__(self, index: int) -> Any:
        from oiv4.io.image_decode import decode

        if self.features is not None:
            image_id = self.features.ids[index].as_py()
            img = decode(self.reader.read_bytes(image_id), image_id).convert("RGB")
        else:
            image_id = self.reader.image_id_at(index)
            img = decode(self.reader.read_bytes_at(index), image_id).convert("RGB")
        item: Any = self.transform(img) if self.transform is not None else img
        if self.to_tensor and self.transform is None:
            item = _pil_to_tensor(img)
        if self.features is not None:
            item = (item, self.features.array[index])
        return (image_id, item) if self.with_ids else item

    def __repr__(self) -> str:
        return f"<TorchImageDataset {self.reader.name}: {len(self)} images>"


def _pil_to_tensor(img: Image.Image) -> Any:
    import numpy as np

    from oiv4.contracts.extras import require

    # imported lazily: torch is optional (the [torch] extra)
    torch = require("torch", extra="torch", feature="TorchImageDataset(to_tensor=True)")

    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).contiguous()
