"""What is on disk for a set, found by walking its folder (for sets built without a ledger, and for verify)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from oiv4.contracts.errors import BadArchiveError
from oiv4.contracts.schema import ImageSet, Outcome, is_valid_image_id
from oiv4.io.containers import BlobReader
from oiv4.io.locations import member_location
from oiv4.io.storage import TMP_MARK, Storage


@dataclass
class Inventory:
    """What is on disk for a set: loose image files, containers, and temp files a kill left behind."""

    files: dict[str, int] = field(default_factory=dict)  # relpath -> size, loose `.jpg` files
    containers: dict[str, int] = field(default_factory=dict)  # relpath -> size, `.zip` / `.tar`
    temp: list[str] = field(default_factory=list)


def scan_set(storage: Storage, image_set: ImageSet | str) -> Inventory:
    """List every image file and container under `<set>/` with its size (one walk, no reads)."""
    top = ImageSet(image_set).value
    inv = Inventory()
    for rel, size in storage.walk(top):
        name = rel.rsplit("/", 1)[-1]
        if TMP_MARK in name:
            inv.temp.append(rel)
        elif name.endswith((".zip", ".tar")):
            inv.containers[rel] = size
        elif name.endswith(".jpg"):
            inv.files[rel] = size
        # anything else (.tar.gz sources kept beside, features/*.h5) is not ours to judge
    inv.temp.sort()
    return inv


def inventory_ledger(storage: Storage, blobs: BlobReader, image_set: ImageSet, plan: pa.Table | None) -> pa.Table:
    """Pseudo-ledger of `ok` rows for a set built without a ledger (the old notebook's output)."""
    inv = scan_set(storage, image_set)
    locs: dict[str, str] = {}
    for rel in inv.files:
        image_id = rel.rsplit("/", 1)[-1][:-4]
        if is_valid_image_id(image_id):
            locs[image_id] = rel
    for container in sorted(inv.containers):
        try:
            members = blobs.index(container)
        except BadArchiveError:
            continue  # verify reports it; the reader serves what it can
        for member in members:
            name = member.rsplit("/", 1)[-1]
            if name.endswith(".jpg") and is_valid_image_id(name[:-4]):
                locs.setdefault(name[:-4], member_location(container, member))
    if plan is not None:
        ids = plan["ImageID"].to_pylist()
        pairs = [(r, i) for r, i in enumerate(ids) if i in locs]
    else:
        pairs = list(enumerate(sorted(locs)))
    return pa.table(
        {
            "image_id": pa.array([i for _, i in pairs], pa.string()),
            "shard": pa.array([0] * len(pairs), pa.int32()),
            "row": pa.array([r for r, _ in pairs], pa.int64()),
            "outcome": pa.array([Outcome.ok.value] * len(pairs), pa.string()),
            "location": pa.array([locs[i] for _, i in pairs], pa.string()),
            "stored_bytes": pa.array([None] * len(pairs), pa.int64()),
            "started_at": pa.array([None] * len(pairs), pa.timestamp("ms", tz="UTC")),
        }
    )
