"""A tiny but complete build (all four sets, every stage, a report) made once per run by `oiv4 demo`'s code."""

from __future__ import annotations

import fcntl
import shutil
from pathlib import Path

from oiv4.cli.demo import DemoSettings, run_demo

#: 240 rows: a few dozen per set, with train and extended_targets both non-empty (train is the first 60 candidates).
TINY = {"images": 240, "seed": 3, "train_size": 60, "workers": 2, "megapixels": (0.3, 1.0)}


def build_tiny_root(path: Path) -> Path:
    """Build every set into `path` from a mirror on 127.0.0.1 and return `path`."""
    run_demo(DemoSettings(root=str(path), **TINY))
    return path


def shared_tiny_root(folder: Path) -> Path:
    """The tiny build in `folder/tiny-demo`, made by the first process to ask; the others wait for it."""
    built, done = folder / "tiny-demo", folder / "tiny-demo.complete"
    with open(folder / "tiny-demo.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():  # a build killed half-way left no marker: start it again
            shutil.rmtree(built, ignore_errors=True)
            build_tiny_root(built)
            done.touch()
    return built
