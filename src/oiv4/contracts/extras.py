"""Optional dependencies: one place that turns a missing extra into a one-line hint instead of an ImportError.

The core install (plan, fetch, archives from https or a folder, reading, verify, report) needs none of
dask, distributed, s3fs or torch; they come with the extras `[dask]`, `[s3]` and `[torch]`. Code that needs
one calls `require(...)` right before importing it (or, like `--executor dask`, when its options are checked,
before any work starts), so a user without the extra reads

    the dask executor needs the [dask] extra: in the oiv4 clone, pip install '.[dask]'

rather than a traceback ending in `ModuleNotFoundError: No module named 'distributed'`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from oiv4.contracts.errors import MissingExtraError


def require(*modules: str, extra: str, feature: str) -> ModuleType:
    """Import `modules` (top-level names) or raise MissingExtraError naming `extra`; returns the first.

    `feature` is what the user asked for, in words ("the dask executor", "an s3:// root"): it starts the
    message, so it should read well there.
    """
    if not modules:
        raise ValueError("require() needs at least one module name")
    imported = []
    for name in modules:
        try:
            imported.append(importlib.import_module(name))
        except ImportError as exc:
            # `exc.name == name`: the package itself is absent (the common case, the plain hint says it all).
            # Anything else: it is there but failed to import, and that reason belongs in the message.
            not_installed = exc.name == name or (exc.name is None and isinstance(exc, ModuleNotFoundError))
            cause = None if not_installed else " ".join(str(exc).split())
            raise MissingExtraError(feature, extra, name, cause) from None
        except Exception as exc:  # installed, but its import raises (a binary built for another torch, say)
            raise MissingExtraError(
                feature, extra, name, f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            ) from None
    return imported[0]
