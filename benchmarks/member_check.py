"""Benchmark: what checking each archive member costs, the marker-layout check vs a strict decode, one run.

Reads the JPEG members of the archive benchmark's `train_0.tar.gz` (benchmarks/archive_convert.py generates it)
and times, over the same members, `structure_problem` (io/jpeg_layout.py: headers, EOI after the scans, no
zero-filled stretch; what `oiv4 archives` runs on every member) and `decode_strict` at the smallest scale
(libjpeg-turbo at 1/8, every warning checked). Prints ms per member and the CPU time both would add at the
1.78M archive members of targets + validation.

    .venv/bin/python benchmarks/member_check.py [--data bench-data/archives]
"""

from __future__ import annotations

import argparse
import tarfile
import time
from pathlib import Path

from oiv4.io.jpeg_layout import structure_problem
from oiv4.io.strict_decode import decode_strict

MEMBERS_FULL = 1_780_000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="bench-data/archives")
    args = ap.parse_args()
    with tarfile.open(Path(args.data) / "train_0.tar.gz") as tf:
        members = [tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()]  # type: ignore[union-attr]
    size = sum(map(len, members)) / len(members)
    t = time.process_time()
    assert all(structure_problem(m) is None for m in members)
    layout = (time.process_time() - t) / len(members)
    t = time.process_time()
    for m in members:
        decode_strict(m, max_pixels=200_000_000, target_side=1)
    decode = (time.process_time() - t) / len(members)
    print(f"{len(members):,} members, mean {size / 1e3:.0f} KB; CPU per member:")
    for name, s in (("marker layout (oiv4 archives)", layout), ("strict decode at 1/8", decode)):
        print(f"  {name:32s} {s * 1e3:8.3f} ms   x {MEMBERS_FULL:,} = {s * MEMBERS_FULL / 3600:6.2f} CPU h")
    print(f"strict decode / layout: {decode / layout:.0f}x")


if __name__ == "__main__":
    main()
