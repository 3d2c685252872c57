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


# ---- mirror (local OpenImages universe for tests, demo, benchmarks) -------------------------------
@app.command("mirror")
def mirror_cmd(
    seed: int = typer.Option(0, help="Seed of the universe: the same seed always gives the same bytes."),
    images: int = typer.Option(300, help="Rows in image_ids_and_rotation.csv (train, validation and test)."),
    megapixels: tuple[float, float] = typer.Option((0.5, 2.0), help="Range of the originals' sizes, MIN MAX."),
    misbehaviour_fraction: float = typer.Option(
        0.15, help="Share of URL-set rows that misbehave like Flickr (403/404/410/429/503/500, redirects, ...)."
    ),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="Port to listen on (0 picks a free one)."),
    cache_dir: str = typer.Option(None, help="Where generated bytes are cached [default: <tmp>/oiv4-mirror-<hash>]."),
    workers: int = typer.Option(None, help="Threads that render images [default: CPU count]."),
) -> None:
    """Serve a generated, deterministic mini OpenImages V4 over HTTP until Ctrl-C (no internet needed).

    Serves both metadata CSVs (12 real columns, Flickr-like OriginalURLs pointing at the mirror), the
    originals (JPEG/PNG/GIF/CMYK/16-bit, some rotated), a share of them misbehaving like Flickr does,
    and the CVDF archives tar/train_<x>.tar.gz and tar/validation.tar.gz. Everything is generated
    (and cached on disk) before serving starts.

    Example: oiv4 mirror --seed 0 --images 3000 --megapixels 2 12 --port 8000
    then:    oiv4 metadata --root ./data --base-url http://127.0.0.1:8000/openimages/2018_04/
    """
    from .mirror.server import serve_forever
    from .mirror.universe import Universe, UniverseSpec

    try:
        spec = UniverseSpec(
            seed=seed, n_images=images, megapixels=megapixels, misbehaviour_fraction=misbehaviour_fraction
        )
    except ValueError as exc:
        console.print(f"[red]bad universe:[/red] {exc}")
        raise typer.Exit(2) from None
    universe = Universe(spec, cache_dir)
    console.print(f"generating {images:,} images ({megapixels[0]}-{megapixels[1]} MP) in {universe.cache_dir} ...")

    def ready(base_url: str) -> None:
        counts = {role: sum(1 for i in universe.images if i.role == role) for role in ("targets", "url", "validation")}
        Console().print(
            f"mirror serving at {base_url}\n"
            f"  metadata base URL: {base_url}/openimages/2018_04/\n"
            f"  archives base URL: {base_url}/tar/\n"
            f"  rows: {images:,} (targets {counts['targets']:,}, URL sets {counts['url']:,}, "
            f"validation {counts['validation']:,}); Ctrl-C to stop"
        )

    try:
        serve_forever(universe, host=host, port=port, workers=workers, on_ready=ready)
    except OSError as exc:
        console.print(f"[red]cannot serve on {host}:{port}:[/red] {exc}")
        raise typer.Exit(2) from None
# ---- end mirror ----------------------------------------------------------------------------------
