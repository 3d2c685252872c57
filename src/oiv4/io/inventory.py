"""What is on disk for a set, found by walking its folder (for sets built without a ledger, and for verify)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from oiv4.contracts.errors import BadArchiveError
from oiv4.contracts.schema import ImageSet, Outcome, is_valid_image_id
from oiv4.io.containers import BlobReader
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
    for rel, size in _walk(storage, top):
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


def _walk(storage: Storage, top: str) -> Iterator[tuple[str, int]]:
    if storage.local:
        base = storage.local_path(top)
        prefix = len(storage.root) + 1
        for dirpath, _dirs, files in os.walk(base):
            for f in files:
                full = os.path.join(dirpath, f)
                try:
                    yield full[prefix:].replace(os.sep, "/"), os.stat(full).st_size
                except FileNotFoundError:
                    continue  # removed while we walked (a writer's temp file being renamed)
        return
    fs = storage.fs
    root = fs._strip_protocol(storage.root).rstrip("/")
    if not fs.exists(f"{root}/{top}"):
        return
    for path, info in sorted(fs.find(f"{root}/{top}", detail=True).items()):
        if info.get("type", "file") == "file":
            yield path[len(root) + 1 :], int(info.get("size") or 0)


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
                locs.setdefault(name[:-4], f"{container}:{member}")
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
