"""The `oiv4` command line: a thin typer layer over the Python API, one command per stage."""

from __future__ import annotations

import click
import typer
from rich.console import Console
from typer.core import TyperGroup

#: `--help` lists commands in pipeline order, whatever order the modules register them in.
COMMAND_ORDER = ("build", "demo", "metadata", "plan", "archives", "fetch", "status", "verify", "report", "mirror")


class _PipelineOrder(TyperGroup):
    def list_commands(self, ctx: click.Context) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: COMMAND_ORDER.index(n) if n in COMMAND_ORDER else len(COMMAND_ORDER))


app = typer.Typer(
    cls=_PipelineOrder,
    name="oiv4",
    help=(
        "Build the OpenImages V4 image sets reliably, resumably and fast.\n\n"
        "Stages, in order: metadata -> plan -> archives (targets, validation) / fetch (train, extended_targets) "
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
    from oiv4.io.storage import Storage

    return Storage(root)


@app.command("metadata", rich_help_panel="Stages, in order")
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

    from oiv4.io.download import DownloadError
    from oiv4.stages.metadata import MetadataError, MetadataSettings, fetch_metadata

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


@app.command("plan", rich_help_panel="Stages, in order")
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
    from oiv4.stages.plan import PlanError, PlanSettings, build_plan

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
@app.command("mirror", rich_help_panel="Offline and testing")
def mirror_cmd(
    seed: int = typer.Option(0, help="Seed of the universe: the same seed always gives the same bytes."),
    images: int = typer.Option(300, help="Rows in image_ids_and_rotation.csv (train, validation and test)."),
    megapixels: tuple[float, float] = typer.Option((0.5, 2.0), help="Range of the originals' sizes, MIN MAX."),
    misbehaviour_fraction: float = typer.Option(
        0.15, help="Share of URL-set rows that misbehave like Flickr (403/404/410/429/503/500, redirects, ...)."
    ),
    latency_ms: float = typer.Option(0.0, help="Delay before every image answer, to simulate a distant host."),
    bandwidth_mbps: float = typer.Option(0.0, help="Per-response bandwidth cap for images in MB/s (0 = none)."),
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

    Example: oiv4 mirror --seed 0 --images 3000 --megapixels 2 12 --port 8000 --latency-ms 50
    then:    oiv4 metadata --root ./data --base-url http://127.0.0.1:8000/openimages/2018_04/
    """
    from oiv4_mirror.server import serve_forever, stderr_progress
    from oiv4_mirror.universe import Universe, UniverseSpec

    try:
        spec = UniverseSpec(
            seed=seed,
            n_images=images,
            megapixels=megapixels,
            misbehaviour_fraction=misbehaviour_fraction,
            latency_seconds=latency_ms / 1000,
            bytes_per_second=bandwidth_mbps * 1e6,
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
        serve_forever(universe, host=host, port=port, workers=workers, on_ready=ready, progress=stderr_progress())
    except OSError as exc:
        console.print(f"[red]cannot serve on {host}:{port}:[/red] {exc}")
        raise typer.Exit(2) from None


# ---- end mirror ----------------------------------------------------------------------------------


# ---- verify + report (reader/verify/report) -------------------------------------------------------
_VerifySetsOpt = typer.Option(None, "--set", "-s", help="Only this set (repeatable) \\[default: every set present].")


@app.command("verify", rich_help_panel="Inspect the result")
def verify_cmd(
    root: str = typer.Option(..., "--root", "-r", help="The built root: a folder or an fsspec URL (s3://bucket/prefix)."),
    deep: bool = typer.Option(
        False, "--deep", help="Also read every image: check zip CRC-32s and decode every JPEG fully (slow: reads all data)."
    ),
    requeue: bool = typer.Option(
        False,
        "--requeue",
        help="Append a `verify_failed` ledger row for each broken image, so `oiv4 fetch --retry-failed verify_failed` "
        "redoes it. Stored files are never modified or deleted.",
    ),
    sets: list[str] = _VerifySetsOpt,
    workers: int = typer.Option(4, help="Threads reading and decoding in --deep mode."),
    show: int = typer.Option(10, help="Problems listed per set and kind (the table counts all of them)."),
) -> None:
    """Check that the data on disk is what the ledger says, and say what is broken.

    For every set: each `ok` ledger row must have its file or archive member, with the size the ledger recorded; every zip's central directory and tar's headers must parse. With --deep every image is also read (zip CRC-32 checked) and decoded. Files no `ok` row points at (orphans), temp files left by a kill and images still staged for an unpacked shard are reported as warnings.

    Exit code: 0 when nothing is broken (warnings allowed), 1 when something is broken, 2 when there is nothing to verify.

    Examples:

      oiv4 verify --root /data/open_images

      oiv4 verify --root /data/open_images --deep --requeue

      oiv4 fetch --root /data/open_images --retry-failed verify_failed   # re-fetch them
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from oiv4.contracts.schema import ImageSet
    from oiv4.io.storage import Storage
    from oiv4.stages.verify import VerifySettings
    from oiv4.stages.verify import verify as run_verify

    try:
        chosen = tuple(ImageSet(s).value for s in sets) if sets else None
    except ValueError:
        console.print(f"[red]unknown set in {sets}[/red]: choose from {', '.join(s.value for s in ImageSet)}")
        raise typer.Exit(2) from None
    storage = Storage(root)
    if storage.local and not storage.local_path("").is_dir():
        console.print(f"[yellow]nothing to verify:[/yellow] {storage.root} does not exist")
        raise typer.Exit(2)
    settings = VerifySettings(deep=deep, requeue=requeue, sets=chosen, workers=workers)
    with Progress(
        "[bold]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console,
        transient=True, disable=not deep,
    ) as bar:
        tasks: dict[str, int] = {}

        def progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(f"decoding {name}", total=total)
            bar.update(tasks[name], completed=done)

        report = run_verify(storage, settings, on_progress=progress)
    if not report.sets:
        console.print(f"[yellow]nothing to verify:[/yellow] no plan, ledger or images under {storage.root}")
        raise typer.Exit(2)
    _print_verify(report, show)
    if not report.ok:
        raise typer.Exit(1)


def _print_verify(report, show: int) -> None:
    from rich import box
    from rich.table import Table

    out = Console()
    # Problem columns appear only when some set has that problem, so the table fits 80 columns.
    kinds = {
        "missing": ("missing", "bad_location"),
        "size": ("size_mismatch",),
        "damaged": ("damaged", "undecodable"),
        "archive": ("bad_archive",),
        "orphan": ("orphan",),
        "temp": ("stray_temp",),
        "staged": ("staged",),
    }
    shown = {col: ks for col, ks in kinds.items() if any(s.count(k) for s in report.sets for k in ks)}
    table = Table(
        title=f"oiv4 verify{' --deep' if report.deep else ''}: {report.root}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("set", no_wrap=True)
    for col in ("planned", "ok rows", "intact" if report.deep else "present", *shown):
        table.add_column(col, justify="right", no_wrap=True)
    for s in report.sets:
        cells = []
        for col, ks in shown.items():
            k = sum(s.count(x) for x in ks)
            colour = "yellow" if col in ("orphan", "temp", "staged") else "red"
            cells.append("[dim]0[/dim]" if k == 0 else f"[{colour}]{k:,}[/]")
        intact = f"[green]{s.intact:,}[/green]" if s.intact == s.ok_rows else f"{s.intact:,}"
        planned = "-" if s.planned is None else f"{s.planned:,}"
        table.add_row(s.image_set, planned, f"{s.ok_rows:,}", intact, *cells)
    out.print(table)
    for s in report.sets:
        by_kind: dict[str, list] = {}
        for p in s.problems:
            by_kind.setdefault(p.kind, []).append(p)
        for kind, items in by_kind.items():
            colour = "red" if items[0].broken else "yellow"
            out.print(f"[{colour}]{s.image_set}: {s.count(kind):,} {kind}[/]")  # all counted, examples kept
            for p in items[:show]:
                out.print(f"  {p.image_id or '-'}  {p.location}  [dim]{p.detail}[/dim]", soft_wrap=True)
            if s.count(kind) > show:
                out.print(f"  [dim]... and {s.count(kind) - show:,} more[/dim]")
        if s.requeued:
            out.print(f"[cyan]{s.image_set}: requeued {s.requeued:,} broken images as verify_failed[/cyan]")
    if report.ok:
        warnings = sum(s.count(k) for s in report.sets for k in s.counts)
        out.print("[green]clean[/green]: every ok image is where the ledger says" + (
            f" ({warnings:,} warnings above)" if warnings else ""))
    else:
        broken = sum(s.broken_images for s in report.sets)
        hint = "" if any(s.requeued for s in report.sets) else "; run again with --requeue to mark them for re-fetch"
        out.print(f"[red]broken[/red]: {broken:,} images{hint}")

@app.command("report", rich_help_panel="Inspect the result")
def report_cmd(
    root: str = typer.Option(..., "--root", "-r", help="The built root: a folder or an fsspec URL (s3://bucket/prefix)."),
    out: str = typer.Option(None, "--out", "-o", help="Where to write the page \\[default: <root>/report/index.html]."),
    samples: int = typer.Option(24, help="Thumbnails per set on the contact sheet."),
) -> None:
    """Write a self-contained HTML report of the build: one file that opens in any browser, offline.

    Per set: counts and outcome breakdown, throughput over time (from the ledger), stored size, dimension and aspect-ratio distributions, a contact sheet of sample images, and the most frequent failure reasons with example URLs. CSS, charts (SVG) and thumbnails are all inline.

    Examples:

      oiv4 report --root /data/open_images          # writes /data/open_images/report/index.html

      oiv4 report --root s3://bucket/oi --out report.html
    """
    from oiv4.io.storage import Storage
    from oiv4.report import ReportSettings, build_report

    storage = Storage(root)
    if storage.local and not storage.local_path("").is_dir():
        console.print(f"[red]no data at {storage.root}[/red]: the folder does not exist")
        raise typer.Exit(2)
    with console.status("collecting figures ...") as status:
        path = build_report(
            storage, ReportSettings(samples=samples, out=out), on_set=lambda s: status.update(f"collecting {s} ...")
        )
    Console().print(f"report written to [bold]{path}[/bold]")
# ---- end verify + report ---------------------------------------------------------------------------


# ---- fetch + status (URL sets) ---------------------------------------------------------------------
_FetchArgs = typer.Argument(
    None,
    metavar="[SET]... [OUTCOME]...",
    help="Sets to fetch: train, extended_targets (default: both, in that order). With --retry-failed, any other "
    "word is an outcome to retry (e.g. http_429 timeout verify_failed); default all failures.",
    show_default=False,
)
_StatusSetsOpt = typer.Option(None, "--set", "-s", help="Only this set (repeatable) [default: all four].")


@app.command("fetch", rich_help_panel="Stages, in order")
def fetch_cmd(
    args: list[str] = _FetchArgs,
    root: str = RootOpt,
    layout: str = typer.Option(
        "folder",
        help="folder: <set>/images/<id[:2]>/<id>.jpg (the notebook's); zip: one <set>/images/<set>_NNNNN.zip per "
        "shard; webdataset: one <set>/webdataset/<set>-NNNNN.tar per shard (<id>.jpg + <id>.json).",
    ),
    max_side: int = typer.Option(1024, help="Shrink to fit max_side x max_side, aspect kept; never enlarged."),
    quality: int = typer.Option(90, min=1, max=100, help="JPEG quality of the stored images."),
    resample: str = typer.Option(
        "bilinear",
        help="Shrink filter: bilinear (default), bicubic (as Pillow's thumbnail; 14% slower, same look), "
        "box (7% faster, softer), lanczos.",
    ),
    rotate: bool = typer.Option(
        True, "--rotate/--no-rotate", help="Apply the CSV Rotation (CCW degrees). --no-rotate reproduces the notebook."
    ),
    retry_failed: bool = typer.Option(
        False,
        "--retry-failed",
        help="Fetch recorded failures again: all of them, or only the OUTCOMEs given as arguments. "
        "(disk_full/write_error rows are always retried.)",
    ),
    fallback_thumbnail: bool = typer.Option(
        False,
        help="When the original is gone (placeholder/403/404/410), store Thumbnail300KURL instead. It cannot be "
        "MD5-verified: the ledger says source=thumbnail. Off by default.",
    ),
    workers: int = typer.Option(
        0,
        help="Worker processes (default: one per core): the local pool's, or the LocalCluster's with "
        "--executor dask and no --scheduler (a running cluster brings its own workers).",
    ),
    concurrency: int = typer.Option(64, help="Downloads in flight per worker process."),
    per_host: int = typer.Option(16, help="Of which at most this many to one host."),
    cpu_threads: int = typer.Option(2, help="Decode/shrink/encode threads per worker process."),
    attempts: int = typer.Option(4, help="Attempts per URL for retryable failures (429, 5xx, resets, timeouts)."),
    backoff: float = typer.Option(1.0, help="Base of the exponential backoff between attempts, in seconds."),
    deadline: float = typer.Option(120.0, help="Seconds one attempt may take in total (slow trickles end here)."),
    max_mb: int = typer.Option(128, help="Largest response accepted, in MiB (bigger ones: too_large)."),
    max_megapixels: float = typer.Option(
        200.0, help="Largest image decoded (bigger ones: decompression_bomb). Real originals reach ~96 MP."
    ),
    min_free_mb: int = typer.Option(256, help="Stop cleanly when the root has less free space than this."),
    executor: str = typer.Option(
        "local",
        help="local: a process pool on this machine. dask: one Dask task per shard; workers write straight to "
        "--root (a shared folder or s3://bucket/prefix). See docs/cluster.md.",
    ),
    scheduler: str = typer.Option(
        None,
        help="Dask scheduler address, e.g. tcp://10.0.0.5:8786 (implies --executor dask). Without it, "
        "--executor dask starts a LocalCluster sized to this machine.",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show live progress."),
) -> None:
    """Stage 4: download, verify, shrink and store the train and extended_targets images.

    For every manifest row: download OriginalURL (a redirect to Flickr's "photo unavailable" card is recorded as `placeholder`; 429/503 honour Retry-After, with exponential backoff); check the size against OriginalSize and the MD5 against OriginalMD5; decode (PNG, GIF, palette, alpha on white, CMYK, 16-bit: all become RGB); rotate by the CSV Rotation; shrink to fit 1024x1024; save as JPEG atomically. Every row ends in exactly one ledger outcome (see `oiv4 status`).

    Resumable at any moment: run the same command again after a crash, kill or Ctrl-C and only the unfinished rows are done; finished files are never rewritten.

    Examples:

      oiv4 fetch train --root /data/open_images

      oiv4 fetch extended_targets --root /data/open_images --layout webdataset --workers 8

      oiv4 fetch train --root /data/open_images --retry-failed http_429 timeout

      oiv4 fetch train --root s3://bucket/open_images --executor dask --scheduler tcp://10.0.0.5:8786
    """
    from oiv4.contracts.schema import URL_SETS, ImageSet
    from oiv4.run.dask_executor import DaskSetupError
    from oiv4.run.executor import ExecutorSettings
    from oiv4.stages.fetch import FetchAborted, FetchError, FetchSettings, HttpSettings, TransformSettings, fetch_set
    from oiv4.stages.fetch.console import LiveFetchView, summary_table

    names = {s.value for s in ImageSet}
    sets = [a for a in args or [] if a in names]
    outcomes = [a for a in args or [] if a not in names]
    if any(ImageSet(s).from_archives for s in sets):
        console.print("[red]fetch:[/red] targets and validation come from the CVDF archives: use `oiv4 archives`")
        raise typer.Exit(2)
    if outcomes and not retry_failed:
        console.print(
            f"[red]fetch:[/red] unknown set {outcomes[0]!r}: use train or extended_targets "
            "(outcome names go with --retry-failed)"
        )
        raise typer.Exit(2)
    try:
        settings = FetchSettings(
            layout=layout,
            transform=TransformSettings(
                max_side=max_side,
                quality=quality,
                rotate=rotate,
                max_pixels=int(max_megapixels * 1e6),
                resample=resample,
            ),
            http=HttpSettings(
                concurrency=concurrency,
                per_host=per_host,
                attempts=attempts,
                backoff_base=backoff,
                deadline=deadline,
                max_bytes=max_mb << 20,
            ),
            cpu_threads=cpu_threads,
            retry_failed=(tuple(outcomes) or ("all",)) if retry_failed else None,
            fallback_thumbnail=fallback_thumbnail,
            min_free_bytes=min_free_mb << 20,
        )
        ex = ExecutorSettings(kind=executor, workers=workers or None, scheduler=scheduler)
    except ValueError as exc:
        console.print(f"[red]fetch:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    storage = _storage(root)
    for image_set in sets or [s.value for s in URL_SETS]:
        try:
            if progress:
                with LiveFetchView(console, image_set) as view:
                    summary = fetch_set(storage, image_set, settings, ex, progress=view.update)
            else:
                summary = fetch_set(storage, image_set, settings, ex)
        except (FetchError, DaskSetupError) as exc:
            console.print(f"[red]fetch:[/red] {exc}", soft_wrap=True)
            raise typer.Exit(2) from None
        except FetchAborted as exc:
            console.print(f"[red]fetch stopped:[/red] {exc}", soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/yellow]: finished rows are kept; run the same command to resume")
            raise typer.Exit(130) from None
        Console().print(summary_table(summary))


@app.command("status", rich_help_panel="Inspect the result")
def status_cmd(root: str = RootOpt, image_set: list[str] = _StatusSetsOpt) -> None:
    """Counts per set and outcome, read from the ledgers (safe while a fetch is running).

    Shows the planned rows, each outcome with its share and an example reason, the rows not yet done and the bytes stored.

    Example: oiv4 status --root /data/open_images
    """
    from oiv4.contracts.schema import ImageSet
    from oiv4.stages.status import collect_status, status_table

    try:
        sets = [ImageSet(s) for s in image_set] if image_set else None
    except ValueError:
        console.print(f"[red]status:[/red] --set must be one of {', '.join(s.value for s in ImageSet)}")
        raise typer.Exit(2) from None
    Console().print(status_table(collect_status(_storage(root), sets)))


# ---- end fetch + status ----------------------------------------------------------------------------


# ---- archives (targets, validation from the CVDF bucket) -------------------------------------------
_ArchivesDecoderOpt = typer.Option(
    None,
    "--decoder",
    help="gzip decoder, repeatable, tried in order \\[default: zlib-ng, then zlib as fallback]. "
    "Choices: zlib-ng, isal, zlib.",
)
_ArchivesOnlyOpt = typer.Option(None, "--only", help="Only these archives, repeatable, e.g. --only train_3.")


@app.command("archives", rich_help_panel="Stages, in order")
def archives_cmd(
    image_set: str = typer.Argument(..., metavar="SET", help="targets (train_0..train_f) or validation."),
    root: str = typer.Option(..., "--root", "-r", help="Where the sets are built (a folder, or s3://... with --stream)."),
    source: str = typer.Option(
        "s3://open-images-dataset/tar/",
        help="Where the .tar.gz archives are: an s3:// prefix (read anonymously), an https:// prefix, "
        "or a local folder that already holds them (read in place, never modified).",
    ),
    s3_endpoint: str = typer.Option(None, help="S3 endpoint URL for an s3:// source, e.g. http://127.0.0.1:5000."),
    keep_tar: bool = typer.Option(
        False, "--keep-tar", help="Keep <set>/images/<archive>.tar.gz after conversion (feature extraction reads it)."
    ),
    stream: bool = typer.Option(
        False, "--stream", help="Network straight into the zip: no .tar.gz on disk at all (a retry re-downloads)."
    ),
    part_size_mb: int = typer.Option(64, help="Size of each ranged request, MiB."),
    connections: int = typer.Option(8, help="Ranged requests in flight at once."),
    max_member_mb: float = typer.Option(50.0, help="Members larger than this are refused (hostile_member), MB."),
    decoder: list[str] = _ArchivesDecoderOpt,
    only: list[str] = _ArchivesOnlyOpt,
    require_published: bool = typer.Option(
        None,
        "--require-published/--allow-unpublished",
        help="Demand the published size and SHA-256 of every archive \\[default: only for the real CVDF bucket; "
        "other sources are verified by size and ETag, and the summary says so].",
        show_default=False,
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Stage 3: build targets or validation from the CVDF archives: download, verify, convert to random-access zips.

    Archives: targets uses train_<x>.tar.gz for each hex digit starting a boxable ImageID in the plan;
    validation uses validation.tar.gz.

    Download: parallel ranged requests (--part-size-mb, --connections); a killed download resumes
    where it stopped. Verified by size + SHA-256 against the published table (other sources: ETag).

    Convert: one streaming pass to <set>/images/<archive>.zip, STORED members <archive>/<id>.jpg
    as the notebook's zip had them, no extracted copy on disk. Hostile members (absolute paths,
    '..', links, devices, bad names, oversized) are refused and recorded.

    Record: every member and every plan row gets a ledger row (see `oiv4 status`). Done archives
    are skipped on re-run; the .tar.gz is deleted after conversion unless --keep-tar.

    Examples:

      oiv4 archives validation --root /data/open_images

      oiv4 archives targets --root /data/open_images --keep-tar --connections 16

      oiv4 archives targets --root R --source http://127.0.0.1:8000/tar/ --stream
    """
    import json
    import os
    import sys

    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn
    from rich.table import Table

    from oiv4.io.storage import Storage
    from oiv4.stages.archives import ArchiveProgress, ArchiveSetError, ArchiveSettings, build_archive_set
    from oiv4.stages.archives.gunzip import DEFAULT_DECODERS

    settings = ArchiveSettings(
        source=source,
        s3_endpoint=s3_endpoint,
        part_size=part_size_mb << 20,
        connections=connections,
        keep_tar=keep_tar,
        stream=stream,
        max_member_bytes=int(max_member_mb * 1_000_000),
        decoders=tuple(decoder) if decoder else DEFAULT_DECODERS,
        require_published=require_published,
        only=tuple(only or ()),
    )

    with Progress(
        "[bold]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:

        class _RichProgress(ArchiveProgress):
            def __init__(self) -> None:
                self.tasks: dict[tuple[str, str], object] = {}

            def begin(self, stage: str, name: str, total: int | None) -> None:
                key = (stage, name)
                if key in self.tasks:
                    bar.reset(self.tasks[key], total=total)
                else:
                    self.tasks[key] = bar.add_task(f"{stage:8s} {name}", total=total)

            def advance(self, stage: str, name: str, n: int) -> None:
                if (stage, name) in self.tasks:
                    bar.advance(self.tasks[(stage, name)], n)

            def message(self, text: str) -> None:
                bar.console.print(text)

        try:
            summary = build_archive_set(Storage(root), image_set, settings, _RichProgress())
        except (ArchiveSetError, ValueError) as exc:
            console.print(f"[red]archives failed:[/red] {exc}")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            bar.stop()
            console.print(
                "[yellow]interrupted.[/yellow] Run the same command again: finished archives are kept, "
                "a download continues from its last checkpoint, an unfinished conversion starts over."
            )
            # Everything on disk is already consistent (atomic renames, checkpointed sidecars); exiting now
            # spares waiting for a transfer thread blocked in a socket read.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)

    table = Table(title=f"{summary.image_set} from {summary.source}")
    for col in ("archive", "status", "stored", "missing", "refused", "verified by / error"):
        table.add_column(col, justify="right" if col in ("stored", "missing", "refused") else "left")
    for a in summary.archives:
        refused = sum(n for k, n in a.outcomes.items() if k not in ("ok", "missing_from_archive"))
        style = {"failed": "red", "done_before": "dim"}.get(a.status, "green")
        detail = a.error or "; ".join(x for x in [a.verified_by, *a.notes] if x)
        table.add_row(
            a.name,
            f"[{style}]{a.status}[/{style}]",
            f"{a.outcomes.get('ok', 0):,}",
            f"{a.outcomes.get('missing_from_archive', 0):,}",
            f"{refused:,}",
            detail,
        )
    Console(stderr=json_out).print(table)
    for how in sorted({a.verification for a in summary.archives if a.verification}):
        console.print(f"[dim]verification:[/dim] {how}")
    if json_out:
        typer.echo(json.dumps(summary.to_dict(), indent=1, default=str))
    if not summary.ok:
        console.print(f"[red]{len(summary.failed)} archive(s) failed[/red]; fix the cause and re-run (done archives are kept).")
        raise typer.Exit(1)


# ---- end archives -----------------------------------------------------------------------------------


# ---- build + demo (lead) ---------------------------------------------------------------------------
class _RichObserver:
    """Renders a build: a numbered header per stage, the stages' own live views, a line per result."""

    def __init__(self) -> None:
        from oiv4.run.build import STAGES

        self._stages = STAGES
        self.out = Console()

    def stage(self, name: str, detail: str = "") -> None:
        n = self._stages.index(name) + 1
        console.rule(f"[bold]{n}/{len(self._stages)} {name}[/bold] {detail}", align="left")

    def fetch_view(self, image_set: str):
        from contextlib import contextmanager

        from oiv4.stages.fetch.console import LiveFetchView

        @contextmanager
        def view():
            with LiveFetchView(console, image_set) as live:
                yield live.update

        return view()

    def archive_progress(self, image_set: str):
        from oiv4.stages.archives import ArchiveProgress

        class Lines(ArchiveProgress):
            def end(self, stage: str, name: str) -> None:
                console.print(f"  {name}: {stage} done")

            def message(self, text: str) -> None:
                console.print(f"  {text}")

        return Lines()

    def done(self, name: str, result: object) -> None:
        if name == "plan":
            _print_plan(result)
        elif name == "archives":
            bad = result.failed  # type: ignore[attr-defined]
            outcomes = dict(result.outcomes)  # type: ignore[attr-defined]
            console.print(f"  {result.image_set}: {outcomes}" + (f" [red]{len(bad)} archive(s) failed[/red]" if bad else ""))  # type: ignore[attr-defined]
            for a in bad:
                console.print(f"  [red]{a.name}[/red]: {a.error}")
        elif name == "fetch":
            from oiv4.stages.fetch.console import summary_table

            self.out.print(summary_table(result))  # type: ignore[arg-type]
        elif name == "verify":
            state = "[green]clean[/green]" if result.ok else f"[red]{len(result.problems)} problem(s)[/red]"  # type: ignore[attr-defined]
            console.print(f"  verify: {state}")
        elif name == "report":
            console.print(f"  report: {result}")


def _build_errors() -> tuple[type[BaseException], ...]:
    from oiv4.io.download import DownloadError
    from oiv4.run.dask_executor import DaskSetupError
    from oiv4.stages.archives import ArchiveSetError
    from oiv4.stages.fetch import FetchAborted, FetchError
    from oiv4.stages.metadata import MetadataError
    from oiv4.stages.plan import PlanError

    return (ArchiveSetError, DaskSetupError, FetchAborted, FetchError, DownloadError, MetadataError, PlanError)


def _finish_build(result) -> None:
    from oiv4.stages.status import collect_status, status_table

    Console().print(status_table(collect_status(_storage(result.root))))
    if result.report_path:
        Console().print(f"report: [bold]{result.report_path}[/bold]")
    if not result.ok:
        console.print("[red]build finished with problems[/red] (see above); re-run the same command to retry what is left")
        raise typer.Exit(1)


@app.command("build", rich_help_panel="Run everything")
def build_cmd(
    root: str = RootOpt,
    metadata_url: str = typer.Option(
        "https://storage.googleapis.com/openimages/2018_04/", help="Base URL of the 2018_04 metadata CSVs."
    ),
    archives_source: str = typer.Option(
        "s3://open-images-dataset/tar/", help="Where the CVDF archives are: s3://..., https://... or a local folder."
    ),
    s3_endpoint: str = typer.Option(None, help="S3 endpoint for --archives-source (default: AWS us-east-1)."),
    train_size: int = typer.Option(1_200_000, help="Size of the train set (the rest of the candidates are extended_targets)."),
    image_set: list[str] = typer.Option(None, "--set", "-s", help="Only these sets (repeatable) [default: all four]."),
    layout: str = typer.Option("folder", help="Layout of train/extended_targets: folder (the notebook's), zip or webdataset."),
    keep_tar: bool = typer.Option(False, help="Keep the CVDF .tar.gz next to each zip (feature extraction reads them)."),
    executor: str = typer.Option("local", help="local (process pool) or dask."),
    scheduler: str = typer.Option(None, help="Dask scheduler address (tcp://host:8786); default a LocalCluster."),
    workers: int = typer.Option(0, help="Worker processes for the fetch stage (default: one per core)."),
) -> None:
    """Every stage in order: metadata, plan, archives (targets, validation), fetch (train, extended_targets), verify, report.

    Idempotent: each stage skips what is already done, so after an interruption just run it again.

    Example: oiv4 build --root /data/open_images
    """
    from oiv4.contracts.schema import ImageSet
    from oiv4.run.build import BuildSettings, run_build
    from oiv4.run.executor import ExecutorSettings
    from oiv4.stages.archives import ArchiveSettings
    from oiv4.stages.fetch import FetchSettings
    from oiv4.stages.metadata import MetadataSettings
    from oiv4.stages.plan import PlanSettings

    try:
        sets = tuple(ImageSet(s) for s in image_set) if image_set else tuple(ImageSet)
        settings = BuildSettings(
            metadata=MetadataSettings(base_url=metadata_url),
            plan=PlanSettings(train_size=train_size),
            archives=ArchiveSettings(source=archives_source, s3_endpoint=s3_endpoint, keep_tar=keep_tar),
            fetch=FetchSettings(layout=layout),
            executor=ExecutorSettings(kind=executor, workers=workers or None, scheduler=scheduler),
            sets=sets,
        )
    except ValueError as exc:
        console.print(f"[red]build:[/red] {exc}")
        raise typer.Exit(2) from None
    storage = _storage(root)
    try:
        result = run_build(storage, settings, _RichObserver())
    except _build_errors() as exc:
        console.print(f"[red]build stopped:[/red] {exc}")
        raise typer.Exit(2) from None
    _finish_build(result)


@app.command("demo", rich_help_panel="Run everything")
def demo_cmd(
    root: str = typer.Option("demo-data", "--root", "-r", help="Where the demo sets are built."),
    images: int = typer.Option(3000, help="Rows in the generated universe (all subsets)."),
    seed: int = typer.Option(0, help="Seed of the generated universe."),
    workers: int = typer.Option(0, help="Worker processes for the fetch stage (default: one per core)."),
) -> None:
    """The whole pipeline, offline: start a generated OpenImages mirror on 127.0.0.1 and build all four sets from it.

    The mirror serves both CSVs, Flickr-like originals (some misbehaving: 403/404/410, 429/503, redirects to the
    'photo unavailable' card, cut bodies, slow trickles, bombs) and CVDF-layout archives. Re-running resumes.

    Example: oiv4 demo --root ./demo-data
    """
    from oiv4.run.demo import DemoSettings, run_demo

    console.print(f"[bold]oiv4 demo[/bold]: generating a {images:,}-image universe (cached after the first run) ...")
    try:
        result = run_demo(DemoSettings(root=root, images=images, seed=seed, workers=workers or None), _RichObserver())
    except _build_errors() as exc:
        console.print(f"[red]demo stopped:[/red] {exc}")
        raise typer.Exit(2) from None
    _finish_build(result)
    Console().print(
        f"\nNext: open the data in Python with [bold]import oiv4; ds = oiv4.open({root!r})[/bold], "
        f"run [bold]oiv4 verify --root {root} --deep[/bold], or look at the report above."
    )


# ---- end build + demo ------------------------------------------------------------------------------


# ---- sql (ledger / read side) ----------------------------------------------------------------------
@app.command("sql", rich_help_panel="Inspect the result")
def sql_cmd(
    query: str = typer.Argument(..., help="A DuckDB query over the views plan_<set> and ledger_<set>."),
    root: str = RootOpt,
    limit: int = typer.Option(1000, help="Rows printed at most."),
    csv: bool = typer.Option(False, "--csv", help="Print CSV (header + rows) instead of a table."),
) -> None:
    """Query the build with DuckDB: `plan_<set>` (the plan) and `ledger_<set>` (latest row per image).

    The ledger views include rows still in `.parts/` (a running fetch) and `verify --requeue` rows, latest
    row per (set, row), which a glob over `ledger/<set>/*.parquet` would miss or count twice.

    Examples:

      oiv4 sql --root R "select outcome, count(*) from ledger_train group by 1 order by 2 desc"

      oiv4 sql --root R "select p.ImageID, l.reason from plan_train p join ledger_train l using (row) where l.outcome = 'http_404' limit 5"
    """
    import re

    import duckdb

    from oiv4.contracts.schema import ImageSet
    from oiv4.io.sql import connect

    # Views only for the sets the query names (resolving a set's in-progress parts is its main cost).
    named = [s for s in ImageSet if re.search(rf"\b(plan|ledger)_{s.value}\b", query)]
    try:
        con = connect(_storage(root), named or None)
        cur = con.execute(query)
        columns = [d[0] for d in cur.description] if cur.description else []
        rows = cur.fetchmany(limit + 1) if columns else []
    except duckdb.Error as exc:
        console.print(f"[red]sql:[/red] {str(exc).strip().splitlines()[0]}")
        raise typer.Exit(2) from None
    if not columns:  # a statement without a result
        return
    shown = rows[:limit]
    if csv:
        import csv as csvlib
        import sys

        writer = csvlib.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(shown)
    else:
        from rich.table import Table

        table = Table(*columns, header_style="bold")
        for r in shown:
            table.add_row(*("" if v is None else f"{v:,}" if isinstance(v, int) else str(v) for v in r))
        Console().print(table)
    if len(rows) > limit:
        console.print(f"[dim]first {limit:,} rows shown (--limit)[/dim]")
