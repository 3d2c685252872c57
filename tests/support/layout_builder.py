"""Build small, real oiv4 roots for reader / verify / report tests: real JPEGs, zips, tars, plans, ledgers.

Every layout the pipeline writes is produced here the way the stages write it (through `Storage`,
ledger rows through `LedgerBuffer`), so the tests exercise the reader on the same bytes it will meet:

- "folder":      the seed layout `<set>/images/<id[:2]>/<id>.jpg`, location = the relative path
- "shard_zip":   `LAYOUT.shard_zip` per shard, members `<id>.jpg`, location `<zip>:<id>.jpg`
- "shard_tar":   webdataset `LAYOUT.shard_tar`, members `<id>.jpg` + `<id>.json`, location `<tar>:<id>` (the
                 sample key, as store.WebDatasetWriter writes it; `tar_member_locations=True`: `<tar>:<id>.jpg`)
- "archive_zip": targets `train_<x>.zip` (members `train_<x>/<id>.jpg`, shard = int(x, 16)) or
                 validation `validation.zip` (`validation/<id>.jpg`), like the archive stage.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import COLUMNS, ImageSet
from oiv4.io.checksum import checksum
from oiv4.io.ledger_write import LedgerBuffer
from oiv4.io.storage import Storage

LAYOUTS = ("folder", "shard_zip", "shard_tar", "archive_zip")
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
FAILURES = (
    ("http_404", "HTTP 404 Not Found from farm{k}.staticflickr.com"),
    ("md5_mismatch", "MD5 of 48213 downloaded bytes does not match OriginalMD5"),
    ("placeholder", "redirected to Flickr's photo_unavailable placeholder"),
    ("timeout", "no response within 30 s (3 attempts)"),
)
PLAN_SCHEMA = pa.schema(
    [
        pa.field(c, pa.int64() if c == "OriginalSize" else pa.float64() if c == "Rotation" else pa.string())
        for c in COLUMNS
    ]
    + [pa.field("row", pa.int64(), nullable=False)]
)


def image_id(set_name: str, i: int) -> str:
    return hashlib.sha1(f"{set_name}/{i}".encode()).hexdigest()[:16]


def make_jpeg(seed: int, size: tuple[int, int] | None = None, quality: int = 85) -> bytes:
    """A small, real, varied JPEG: a two-colour gradient with a disc, so thumbnails look different."""
    w, h = size or (48 + (seed * 37) % 80, 40 + (seed * 53) % 72)
    c1 = ((seed * 71) % 256, (seed * 113) % 256, (seed * 29) % 256)
    c2 = (255 - c1[0], (c1[1] + 90) % 256, (c1[2] + 160) % 256)
    img = Image.linear_gradient("L").resize((w, h))
    img = Image.composite(Image.new("RGB", (w, h), c1), Image.new("RGB", (w, h), c2), img)
    r = min(w, h) // 3
    cx, cy = (seed * 17) % w, (seed * 31) % h
    ImageDraw.Draw(img).ellipse((cx - r, cy - r, cx + r, cy + r), fill=(c2[2], c1[0], c2[1]))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@dataclass
class BuiltSet:
    name: str
    layout: str
    plan_ids: list[str]
    ok_ids: list[str] = field(default_factory=list)  # plan order
    failed: dict[str, str] = field(default_factory=dict)  # image_id -> outcome
    images: dict[str, bytes] = field(default_factory=dict)  # stored bytes of ok images
    locations: dict[str, str] = field(default_factory=dict)  # ok image_id -> ledger location
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)


def _plan_table(name: str, ids: list[str]) -> pa.Table:
    subset = "validation" if name == "validation" else "train"
    n = len(ids)
    cols = {
        "ImageID": ids,
        "Subset": [subset] * n,
        "OriginalURL": [f"https://farm{i % 9 + 1}.staticflickr.com/{1000 + i}/{x}_o.jpg" for i, x in enumerate(ids)],
        "OriginalLandingURL": [f"https://www.flickr.com/photos/someone/{x}" for x in ids],
        "License": ["https://creativecommons.org/licenses/by/2.0/"] * n,
        "AuthorProfileURL": ["https://www.flickr.com/people/someone/"] * n,
        "Author": ['Some One, "quoted", ünïcode'] * n,
        "Title": [f"photo {i}" for i in range(n)],
        "OriginalSize": [10_000 + i for i in range(n)],
        "OriginalMD5": [base64.b64encode(hashlib.md5(x.encode()).digest()).decode() for x in ids],
        "Thumbnail300KURL": [f"https://c{i % 3}.staticflickr.com/{x}_z.jpg" for i, x in enumerate(ids)],
        "Rotation": [0.0 if i % 7 else 90.0 for i in range(n)],
        "row": list(range(n)),
    }
    return pa.Table.from_pydict(cols, schema=PLAN_SCHEMA)


def write_plan(storage: Storage, name: str, ids: list[str]) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(_plan_table(name, ids), sink)
    storage.write_bytes(LAYOUT.plan(name), sink.getvalue().to_pybytes())


def _archive_stem(name: str, image_id_: str) -> str:
    return "validation" if name == "validation" else f"train_{image_id_[0]}"


def build_set(
    root: Path | str | Storage,
    name: str,
    n: int,
    layout: str = "folder",
    *,
    fail_every: int = 0,
    shard_rows: int = 8,
    deflate: bool = False,
    with_ledger: bool = True,
    with_plan: bool = True,
    tar_member_locations: bool = False,
    t0: datetime = T0,
) -> BuiltSet:
    """Write set `name` with `n` planned images in `layout`; every `fail_every`-th row fails."""
    storage = root if isinstance(root, Storage) else Storage(str(root))
    image_set = ImageSet(name)
    if layout == "archive_zip" and not image_set.from_archives:
        raise ValueError("archive_zip is for targets/validation")
    ids = [image_id(name, i) for i in range(n)]
    built = BuiltSet(name, layout, ids)
    if with_plan:
        write_plan(storage, name, ids)
    plan = _plan_table(name, ids)
    urls = plan["OriginalURL"].to_pylist()

    rows_by_shard: dict[int, list[dict]] = {}
    members: dict[str, list[tuple[str, bytes]]] = {}  # container -> [(member, bytes)]
    for row, iid in enumerate(ids):
        shard = (
            int(iid[0], 16)
            if (layout == "archive_zip" and name == "targets")
            else (0 if layout == "archive_zip" else row // shard_rows)
        )
        started = t0 + timedelta(seconds=row * 0.7 + (row % 5) * 0.13)
        base = {
            "image_id": iid,
            "row": row,
            "attempts": 1,
            "url": urls[row],
            "started_at": started,
            "elapsed_s": 0.2 + (row % 9) * 0.15,
        }
        if fail_every and row % fail_every == fail_every - 1:
            if layout == "archive_zip":
                outcome, reason = "missing_from_archive", f"{_archive_stem(name, iid)}.tar.gz has no member for it"
            else:
                outcome, reason = FAILURES[(row // fail_every) % len(FAILURES)]
                reason = reason.format(k=row % 9 + 1)
            built.failed[iid] = outcome
            rows_by_shard.setdefault(shard, []).append({**base, "outcome": outcome, "reason": reason})
            continue
        data = make_jpeg(row + 7 * len(name))
        w, h = Image.open(io.BytesIO(data)).size
        if layout == "folder":
            loc = LAYOUT.image(name, iid)
            storage.write_bytes(loc, data)
        elif layout == "shard_zip":
            container = LAYOUT.shard_zip(name, shard)
            members.setdefault(container, []).append((f"{iid}.jpg", data))
            loc = f"{container}:{iid}.jpg"
        elif layout == "shard_tar":
            container = LAYOUT.shard_tar(name, shard)
            members.setdefault(container, []).append((f"{iid}.jpg", data))
            members[container].append((f"{iid}.json", json.dumps({"image_id": iid, "row": row}).encode()))
            loc = f"{container}:{iid}.jpg" if tar_member_locations else f"{container}:{iid}"
        elif layout == "archive_zip":
            stem = _archive_stem(name, iid)
            container = LAYOUT.archive_zip(name, stem)
            members.setdefault(container, []).append((f"{stem}/{iid}.jpg", data))
            loc = f"{container}:{stem}/{iid}.jpg"
        else:
            raise ValueError(f"unknown layout {layout!r}")
        built.ok_ids.append(iid)
        built.images[iid] = data
        built.locations[iid] = loc
        built.sizes[iid] = (w, h)
        source = f"archive:{_archive_stem(name, iid)}.tar.gz" if layout == "archive_zip" else "original"
        rows_by_shard.setdefault(shard, []).append(
            {
                **base,
                "outcome": "ok",
                "reason": "stored",
                "source": source,
                "bytes_downloaded": len(data) * 3,
                "original_width": w * 4,
                "original_height": h * 4,
                "stored_width": w,
                "stored_height": h,
                "stored_bytes": len(data),
                "checksum": checksum(data),  # as fetch and the archive conversion record it
                "location": loc,
            }
        )

    for container, items in members.items():
        buf = io.BytesIO()
        if container.endswith(".zip"):
            method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
            with zipfile.ZipFile(buf, "w", method) as zf:
                if layout == "archive_zip":
                    zf.writestr(zipfile.ZipInfo(items[0][0].split("/")[0] + "/"), b"")  # `zip -r` writes dir entries
                for member, data in items:
                    zf.writestr(member, data)
        else:
            with tarfile.open(fileobj=buf, mode="w") as tf:
                for member, data in items:
                    ti = tarfile.TarInfo(member)
                    ti.size = len(data)
                    ti.mtime = int(t0.timestamp())
                    tf.addfile(ti, io.BytesIO(data))
        storage.write_bytes(container, buf.getvalue())

    if with_ledger:
        for shard, rows in sorted(rows_by_shard.items()):
            led = LedgerBuffer(storage, image_set, shard)
            for r in rows:
                led.record(**r)
            led.close()
    return built


def build_root(root: Path | str, layout: str = "folder", n: int = 24, fail_every: int = 5) -> dict[str, BuiltSet]:
    """A root with all four sets: targets/validation in archive zips, the URL sets in `layout`."""
    out = {}
    for name in ("targets", "validation"):
        out[name] = build_set(root, name, n, "archive_zip", fail_every=fail_every)
    url_layout = layout if layout != "archive_zip" else "folder"
    for name in ("train", "extended_targets"):
        out[name] = build_set(root, name, n, url_layout, fail_every=fail_every)
    return out
