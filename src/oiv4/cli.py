"""The `oiv4` command line: a thin typer layer over the Python API, one command per stage."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(
    name="oiv4",
    help=(
        "Build the OpenImages V4 image sets reliably, resumably and fast.\n\n"
        "Stages, in order: metadata -> plan -> fetch (train, extended_targets) / archives (targets, validation) "
        "-> status / verify / report. `oiv4 build --root R` runs them all; every stage can be re-run safely "
        "and only does what is left."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def main() -> None:
    app()


# ---- stages are registered below, one block per module; keep blocks small and self-contained ----
