"""Write throughput of `Storage.write_bytes` with the filesystem guard (openat + O_NOFOLLOW walk) vs the plain
mkdir + open + rename it replaced, on the folder layout's paths (`<set>/images/<id[:2]>/<id>.jpg`).

    PYTHONPATH=src .venv/bin/python benchmarks/write_guard.py [--files 2000 --kb 200 --passes 3]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path

from oiv4.io.storage import TMP_MARK, Storage


def plain_write(root: Path, rel: str, data: bytes) -> None:
    """The previous `_local_atomic`: mkdir -p, write a temp file beside the target, rename."""
    target = root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, target)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--kb", type=int, default=200)
    ap.add_argument("--passes", type=int, default=3)
    args = ap.parse_args()
    data = os.urandom(args.kb * 1024)
    ids = [secrets.token_hex(8) for _ in range(args.files)]
    rels = [f"train/images/{i[:2]}/{i}.jpg" for i in ids]
    best: dict[str, float] = {"plain": float("inf"), "guarded": float("inf")}
    for _ in range(args.passes):
        for name in ("plain", "guarded"):
            root = Path(tempfile.mkdtemp(prefix="oiv4-wg-"))
            storage = Storage(str(root))
            t0 = time.perf_counter()
            for rel in rels:
                if name == "plain":
                    plain_write(root, rel, data)
                else:
                    storage.write_bytes(rel, data)
            best[name] = min(best[name], time.perf_counter() - t0)
            shutil.rmtree(root)
    for name, s in best.items():
        print(f"{name:8s} {args.files / s:8.0f} files/s  {args.files * args.kb / 1024 / s:7.0f} MB/s  ({s:.3f} s)")
    print(f"guard overhead: {best['guarded'] / best['plain'] - 1:+.1%}")


if __name__ == "__main__":
    main()
