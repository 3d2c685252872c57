"""A tiny-cnn weights file saved in torch's real format, for tests that run `oiv4 features` quickly."""

from __future__ import annotations

from pathlib import Path

import torch

from oiv4.stages.features.nets import TinyNet


def save_tiny_weights(path: Path, seed: int) -> Path:
    """Save a randomly initialised TinyNet's state dict to `path`; the seed fixes every vector it gives."""
    torch.manual_seed(seed)
    torch.save(TinyNet().state_dict(), path)
    return path
