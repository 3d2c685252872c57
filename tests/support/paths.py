"""Where the checkout is, for tests that run its scripts, read its docs or scan its source, wherever they live."""

from __future__ import annotations

from pathlib import Path

#: The clone: pyproject.toml, README.md, src/, tests/.
REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
