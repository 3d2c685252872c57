"""The `oiv4` command line: the app and its error handling in `app`, commands in `*_commands`, drawing in `render`."""

from oiv4.cli import (  # noqa: F401 (they register the commands)
    dedup_commands,
    estimate_command,
    features_command,
    inspect_commands,
    neighbors_command,
    run_commands,
    stage_commands,
)
from oiv4.cli.app import app, main

__all__ = ["app", "main"]
