"""The features ledger: one row per stored (`ok`) image of a shard, saying whether it got a vector and why not.

It lives under `features/<model>/<set>/ledger/`, apart from the set's fetch/archives ledger (one row per
(set, row) there; a set has one row per image per *model* here). The rules are the ledger's: a running shard
writes one durable part per batch (after the batch's vectors are durable), and finishing compacts the parts
into `shard-NNNNN.parquet` (latest row per `row` wins) before removing them. `chunk` is the first row of the
batch whose vectors hold the image's vector, which is how a resumed shard finds its vectors again.
"""

from __future__ import annotations

import pyarrow as pa

from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.io.ledger_folder import LedgerFolder
from oiv4.io.ledger_write import now_utc
from oiv4.io.storage import Storage

#: The outcome of an image that got its vector; every other outcome is a reason it did not.
VECTOR = "ok"
#: The stored file or archive member the set's ledger points at is gone.
MISSING_FILE = "missing_file"
#: The stored bytes could not be read (I/O error, damaged archive).
READ_ERROR = "read_error"

FEATURES_LEDGER_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("set", pa.string(), nullable=False),
        pa.field("shard", pa.int32(), nullable=False),
        pa.field("row", pa.int64(), nullable=False),
        pa.field("chunk", pa.int64(), nullable=False),
        pa.field("outcome", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("started_at", pa.timestamp("ms", tz="UTC")),
    ]
)


def _folder(storage: Storage, model: str, image_set: ImageSet) -> LedgerFolder:
    return LedgerFolder(storage, LAYOUT.features_ledger_dir(model, image_set), FEATURES_LEDGER_SCHEMA)


def write_part(storage: Storage, model: str, image_set: ImageSet, shard: int, chunk: int, rows: list[dict]) -> None:
    """One batch's rows as a durable part (named by the batch's first row); the batch's vectors must already be
    written."""
    stamp = now_utc()
    cols = {f.name: [r.get(f.name) for r in rows] for f in FEATURES_LEDGER_SCHEMA if f.name != "started_at"}
    cols["started_at"] = [stamp] * len(rows)
    table = pa.Table.from_pydict(cols, schema=FEATURES_LEDGER_SCHEMA)
    _folder(storage, model, image_set).write_part(shard, f"{chunk:012d}", table)


def read_parts(storage: Storage, model: str, image_set: ImageSet, shard: int) -> pa.Table:
    """The rows a running (or killed) shard has recorded so far, one per `row`, sorted by `row`."""
    return _folder(storage, model, image_set).read_parts(shard)


def compact(storage: Storage, model: str, image_set: ImageSet, shard: int) -> pa.Table:
    """Fold the parts into the shard file (written before the parts go), and return it."""
    return _folder(storage, model, image_set).compact(shard)


def read_shard(storage: Storage, model: str, image_set: ImageSet, shard: int) -> pa.Table:
    """A shard's ledger: its compacted file and any parts beside it, latest row per `row`."""
    return _folder(storage, model, image_set).read_shard(shard)
