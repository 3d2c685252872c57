"""Small metadata CSVs in the real 2018_04 schema, written with the `csv` module (independent of oiv4)."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import random
from pathlib import Path

from oiv4.contracts.schema import COLUMNS

TITLES = ['Café, "quoted" & more', "日本の風景", "plain", "comma, separated, title", "multi\nline title", ""]


def make_row(rng: random.Random, subset: str) -> dict[str, str]:
    image_id = f"{rng.getrandbits(64):016x}"
    n = rng.randrange(10**9)
    return {
        "ImageID": image_id,
        "Subset": subset,
        "OriginalURL": f"https://farm{n % 9}.staticflickr.com/{n % 9999}/{n}_abc_o.jpg",
        "OriginalLandingURL": f"https://www.flickr.com/photos/someone/{n}",
        "License": "https://creativecommons.org/licenses/by/2.0/",
        "AuthorProfileURL": "https://www.flickr.com/people/someone/",
        "Author": rng.choice(["Zoë", "Bob, Jr.", 'The "Real" Al']),
        "Title": rng.choice(TITLES),
        "OriginalSize": str(rng.randrange(10_000, 9_000_000)),
        "OriginalMD5": base64.b64encode(hashlib.md5(image_id.encode()).digest()).decode(),
        "Thumbnail300KURL": rng.choice(["", f"https://c1.staticflickr.com/1/{n}_z.jpg"]),
        "Rotation": rng.choice(["0.0", "0.0", "0.0", "90.0", "180.0", "270.0", ""]),
    }


def make_universe(seed: int, n_train: int, n_val: int, n_test: int, n_box: int) -> tuple[list[dict], list[dict]]:
    """(full rows in file order, boxable rows in their own order); boxable is a subset of the train rows."""
    rng = random.Random(seed)
    full = [make_row(rng, "train") for _ in range(n_train)]
    full += [make_row(rng, "validation") for _ in range(n_val)]
    full += [make_row(rng, "test") for _ in range(n_test)]
    rng.shuffle(full)
    boxable = rng.sample([r for r in full if r["Subset"] == "train"], n_box)
    return full, boxable


def write_csv(path: Path, rows: list[dict[str, str]], header: tuple[str, ...] = COLUMNS) -> Path:
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow([r[c] for c in COLUMNS])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def expected_sets(full: list[dict], boxable: list[dict], train_size: int) -> dict[str, list[str]]:
    """The notebook's computation, restated plainly."""
    box = {r["ImageID"] for r in boxable}
    candidates = [r["ImageID"] for r in full if r["Subset"] == "train" and r["ImageID"] not in box]
    return {
        "targets": [r["ImageID"] for r in boxable],
        "validation": [r["ImageID"] for r in full if r["Subset"] == "validation"],
        "train": candidates[:train_size],
        "extended_targets": candidates[train_size:],
    }
