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


# ---- metadata + plan (lead) ----------------------------------------------------------------------
RootOpt = typer.Option(
    ..., "--root", "-r", help="Where the sets are built: a folder, or an fsspec URL such as s3://bucket/prefix."
)


def _storage(root: str):
    from .storage import Storage

    return Storage(root)


@app.command("metadata")
def metadata_cmd(
    root: str = RootOpt,
    base_url: str = typer.Option(
        "https://storage.googleapis.com/openimages/2018_04/",
        help="Where the 2018_04 CSVs live; point it at a mirror (e.g. `oiv4 mirror`) to work offline.",
    ),
    force: bool = typer.Option(False, help="Download again even if complete files are present."),
) -> None:
    """Stage 1: download image_ids_and_rotation.csv (3.1 GB) and train-images-boxable-with-rotation.csv.

    Resumes an interrupted download (HTTP Range), checks the size against Content-Length and the header
    against the 12 expected columns. A partial file is kept as `<name>.part` and never looks complete.

    Example: oiv4 metadata --root /data/open_images
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from .http_download import DownloadError
    from .metadata import MetadataError, MetadataSettings, fetch_metadata

    with Progress(
        "[bold]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=console
    ) as bar:
        tasks: dict[str, int] = {}

        def progress(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done, total=total)

        try:
            sizes = fetch_metadata(_storage(root), MetadataSettings(base_url=base_url, force=force), progress)
        except (MetadataError, DownloadError) as exc:
            console.print(f"[red]metadata failed:[/red] {exc}")
            raise typer.Exit(2) from None
    for name, size in sizes.items():
        console.print(f"[green]ok[/green] {name}: {size:,} bytes")


@app.command("plan")
def plan_cmd(
    root: str = RootOpt,
    train_size: int = typer.Option(
        1_200_000, help="How many candidates (in file order) form the train set; the rest are extended_targets."
    ),
    shard_rows: int = typer.Option(10_000, help="Rows per shard of the URL sets (the unit of work and of resume)."),
    skip_invalid: bool = typer.Option(
        False, help="Plan without invalid rows (listed in plan/rejected.parquet) instead of failing."
    ),
    force: bool = typer.Option(
        False, help="Re-plan even if an up-to-date plan exists (changes what recorded work refers to)."
    ),
) -> None:
    """Stage 2: compute the four sets exactly as the notebook does and write plan/<set>.parquet.

    targets = boxable rows; validation = Subset==validation; train = the first --train-size rows of
    (Subset==train and not boxable) in file order; extended_targets = the rest. Every row is validated
    (ImageID must be 16 lowercase hex, URL and MD5 present, 12 fields); problems are reported with line numbers.

    Example: oiv4 plan --root /data/open_images
    """
    from .plan import PlanError, PlanSettings, build_plan

    try:
        summary = build_plan(_storage(root), PlanSettings(train_size, shard_rows, skip_invalid, force))
    except PlanError as exc:
        console.print(f"[red]plan failed:[/red] {exc}")
        raise typer.Exit(2) from None
    _print_plan(summary)


def _print_plan(summary) -> None:
    from rich.table import Table

    table = Table(title="plan" + (" (up to date, reused)" if summary.reused else ""))
    table.add_column("set")
    table.add_column("images", justify="right")
    table.add_column("source")
    for name, n in summary.counts.items():
        table.add_row(name, f"{n:,}", "CVDF archives" if name in ("targets", "validation") else "OriginalURL (Flickr)")
    Console().print(table)
    if summary.rejected:
        console.print(f"[yellow]{summary.rejected:,} invalid rows skipped[/yellow] (see plan/rejected.parquet)")
