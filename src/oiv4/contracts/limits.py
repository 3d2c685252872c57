"""Range checks for settings dataclasses, run in their `__post_init__` before any work starts.

A setting that makes no sense (`--deadline 0`, `--max-mb 0`, `--max-megapixels -1`) would otherwise be
accepted and then record every row as a failure (`timeout`, `too_large`, `decompression_bomb`), which
poisons the ledger. `SettingRangeError` is a `ValueError` (the API stays plain Python) that remembers
which field broke which rule, so the CLI can name the option as that command spells it
(`--fetch-attempts` in `oiv4 build`) and the value as typed (MiB, megapixels).
"""

from __future__ import annotations

import math
from typing import Any

from oiv4.contracts.errors import SettingRangeError


def _value(obj: Any, name: str) -> Any:
    return getattr(obj, name)


def _bad_number(v: Any) -> bool:
    return not isinstance(v, int | float) or isinstance(v, bool) or (isinstance(v, float) and math.isnan(v))


def above(obj: Any, bound: float, *names: str, allow_none: bool = True) -> None:
    """Each field in `names` must be > `bound` (None passes when `allow_none`)."""
    for name in names:
        v = _value(obj, name)
        if v is None and allow_none:
            continue
        if _bad_number(v) or not v > bound or math.isinf(v):
            raise SettingRangeError(type(obj), name, f"> {bound:g}", v)


def at_least(obj: Any, bound: float, *names: str, allow_none: bool = True) -> None:
    """Each field in `names` must be >= `bound` (None passes when `allow_none`)."""
    for name in names:
        v = _value(obj, name)
        if v is None and allow_none:
            continue
        if _bad_number(v) or not v >= bound or math.isinf(v):
            raise SettingRangeError(type(obj), name, f">= {bound:g}", v)


def within(obj: Any, low: float, high: float, *names: str) -> None:
    """Each field in `names` must be within `low..high`, both included."""
    for name in names:
        v = _value(obj, name)
        if _bad_number(v) or not low <= v <= high:
            raise SettingRangeError(type(obj), name, f"within {low:g}..{high:g}", v)


__all__ = ["SettingRangeError", "above", "at_least", "within"]
