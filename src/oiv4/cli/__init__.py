"""The `oiv4` command line: commands in `app`, rendering kept apart from them."""

from oiv4.cli.app import app, main

__all__ = ["app", "main"]
