"""Errors about what a run is given: its settings, its optional dependencies, its root and its executor.

Each is found before any work starts (settings in `__post_init__`, the root by `io.root_check`, the lock by
`io.run_lock`, the cluster by `run.dask_executor`), so nothing under the root has changed when one is raised.
Settings errors keep `ValueError` as a base: a settings dataclass built in Python refuses a value the way
Python code expects.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from oiv4.contracts.errors import Busy, ExecutionError, StorageError, UsageError


class SettingError(ValueError, UsageError):
    """A setting has a value it cannot take (an unknown name, a malformed value); the message names the option."""


class SettingRangeError(SettingError):
    """`owner.name` is outside its range; `rule` says the range in words ("> 0", "within 1..100").

    It remembers which field broke which rule, so the CLI can name the option as that command spells it
    (`--fetch-attempts` in `oiv4 build`) and the value as typed (MiB, megapixels).
    """

    def __init__(self, owner: type, name: str, rule: str, value: Any) -> None:
        self.owner, self.name, self.rule, self.value = owner, name, rule, value
        meta = owner.__dataclass_fields__[name].metadata  # type: ignore[attr-defined]
        flag = (meta.get("flag") or "--" + name.replace("_", "-")).split("/")[0]
        scale = meta.get("scale")
        shown = value / scale if scale and isinstance(value, int | float) else value
        super().__init__(f"{flag} must be {rule}, got {shown:g}" if isinstance(shown, float) else
                         f"{flag} must be {rule}, got {shown}")  # fmt: skip

    def field(self) -> dataclasses.Field:
        """The dataclass field that failed (the same object `dataclasses.fields(owner)` returns)."""
        return self.owner.__dataclass_fields__[self.name]  # type: ignore[attr-defined,no-any-return]


class SettingsChangedError(RuntimeError, UsageError):
    """A shard started with other output settings would be resumed with these; the message names them."""


class SettingsTypeError(TypeError, UsageError):
    """A stage was handed another stage's settings (a caller of `run_set` mixed them up); refused rather than
    run with the stage's defaults."""


class MissingExtraError(RuntimeError, UsageError):
    """An optional dependency is not importable; the message names the extra that brings it.

    A `UsageError` (the user fixes it by installing something, not by retrying), so the CLI prints it as one
    line with the usage exit code.
    """

    def __init__(self, feature: str, extra: str, module: str, cause: str | None = None) -> None:
        self.feature = feature
        self.extra = extra
        self.module = module
        self.cause = cause
        # oiv4 is installed from a clone (no package index serves it), so the hint says how to add an extra there.
        message = f"{feature} needs the [{extra}] extra: in the oiv4 clone, pip install '.[{extra}]'"
        if cause:
            # Installed but broken (e.g. an incompatible version of one of its own dependencies):
            # the bare hint would send the user in circles, so say what failed.
            message += f" (import {module} failed: {cause})"
        super().__init__(message)


class RootError(RuntimeError, UsageError):
    """The root cannot be used: missing, a file, read-only, not an oiv4 root, or unreachable."""


class UnwritableRootError(RuntimeError, StorageError):
    """The root is a folder but cannot be written: a read-only mount, no permission, or no space for a probe."""


class RootLockedError(RuntimeError, Busy):
    """Another live run holds the root (exit code 9, `Busy`)."""


class DaskSetupError(RuntimeError, ExecutionError):
    """The cluster cannot run this job: scheduler unreachable, or workers cannot see the root/import oiv4."""
