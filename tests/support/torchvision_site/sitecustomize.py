"""Lets this machine's torchvision import beside its CPU torch, in every process of a clip test.

The package index here holds only the CUDA build of torchvision 0.28.0 (the CPU build is on
download.pytorch.org, which this machine cannot reach). Its C++ library needs libtorch_cuda, so next to the
CPU torch it does not load, and torchvision's import then stops where it registers fake kernels for two of
that library's operators, `torchvision::nms` and `torchvision::qnms`: "operator ... does not exist"
(pytorch/vision#9085). open_clip imports torchvision for its transforms; the image tower runs none of
torchvision's C++ operators.

So, only when that library fails to load, the two operator schemas are declared (no kernel: calling them
would still fail) right before torchvision is first imported, and its import completes. With a torchvision
built for the installed torch the library loads and nothing is declared. `oiv4` itself never does this: a
user with mismatched builds gets one line naming them (models.py).

Put this folder on PYTHONPATH so every process of a test run imports it at start (the `oiv4 features`
CLI, its spawned shard processes); a test process imports it before importing open_clip.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from typing import Any

#: The operators torchvision's `_meta_registrations` registers fake kernels for without checking they exist.
UNGUARDED = ("nms", "qnms")


def declare_missing_operators() -> bool:
    """Declare UNGUARDED when torchvision's C++ library does not load here; True when they were declared."""
    spec = importlib.machinery.PathFinder.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return False
    import torch

    try:
        torch.ops.load_library(os.path.join(os.path.dirname(spec.origin), "_C.so"))
        return False
    except OSError:
        for name in UNGUARDED:
            if not _exists(torch, name):
                torch.library.define(
                    f"torchvision::{name}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
                )
        return True


def _exists(torch: Any, name: str) -> bool:
    """Whether the operator is known to torch's dispatcher (asking about an unknown one raises)."""
    try:
        torch._C._dispatch_has_kernel_for_dispatch_key(f"torchvision::{name}", "Meta")
    except RuntimeError:
        return False
    return True


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Runs `declare_missing_operators` once, when torchvision is first imported, then steps aside."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "torchvision":
            sys.meta_path.remove(self)
            declare_missing_operators()
        return None


def install() -> None:
    """Arm the hook (idempotent); a no-op if torchvision was already imported."""
    if "torchvision" not in sys.modules and not any(isinstance(f, _BeforeTorchvision) for f in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvision())


install()
