"""The installed version of oiv4, for `--version` and for the header of a saved crash report."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def installed_version() -> str:
    """The version pip installed, or "unknown" when running from a source tree that was never installed."""
    try:
        return version("oiv4")
    except PackageNotFoundError:
        return "unknown"
