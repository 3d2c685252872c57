"""The pipeline's stages as commands: metadata, plan, archives, fetch. Options come from their settings."""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import typer
from rich.console import Console

from oiv4.cli import render
from oiv4.cli.app import app
from oiv4.cli.app import console as err
from oiv4.cli.options import choice_enum, settings_command
from oiv4.contracts.errors import UsageError
from oiv4.contracts.schema import URL_SETS, ImageSet
from oiv4.io.storage import Storage
from oiv4.run.executor import ExecutorSettings
from oiv4.stages.archives import ArchiveSettings
from oiv4.stages.fetch import FetchSettings
from oiv4.stages.metadata import MetadataSettings
from oiv4.stages.plan import PlanSettings

STAGES_PANEL = "Stages, in order"
ARCHIVE_SETS = choice_enum(("targets", "validation"))
RootOpt = typer.Option(
    ..., "--root", "-r", help="Where the sets are built: a folder, or an fsspec URL such as s3://bucket/prefix."
)


@app.command("metadata", rich_help_panel=STAGES_PANEL)
@settings_command({"settings": MetadataSettings})
def metadata_cmd(settings: MetadataSettings, root: str = RootOpt) -> None:
    """Stage 1: download image_ids_and_rotation.csv (3.1 GB) and train-images-boxable-with-rotation.csv.

    Resumes an interrupted download (HTTP Range), checks the size against Content-Length and the header
    against the 12 expected columns. A partial file is kept as `<name>.part` and never looks complete.

    Example: oiv4 metadata --root /data/open_images
    """
    from oiv4.stages.metadata import fetch_metadata

    with render.named_bars(render.download_bars()) as progress:
        sizes = fetch_metadata(Storage(root), settings, progress)
    for name, size in sizes.items():
        err.print(f"[green]ok[/green] {name}: {size:,} bytes")


@app.command("plan", rich_help_panel=STAGES_PANEL)
@settings_command({"settings": PlanSettings})
def plan_cmd(settings: PlanSettings, root: str = RootOpt) -> None:
    """Stage 2: compute the four sets exactly as the notebook does and write plan/<set>.parquet.

    targets = boxable rows; validation = Subset==validation; train = the first --train-size rows of
    (Subset==train and not boxable) in file order; extended_targets = the rest. Every row is validated
    (ImageID must be 16 lowercase hex, URL and MD5 present, 12 fields); problems are reported with line numbers.

    Example: oiv4 plan --root /data/open_images
    """
    from oiv4.stages.plan import build_plan

    render.plan_table(build_plan(Storage(root), settings))


@app.command("archives", rich_help_panel=STAGES_PANEL)
@settings_command({"settings": ArchiveSettings})
def archives_cmd(
    settings: ArchiveSettings,
    image_set: ARCHIVE_SETS = typer.Argument(  # type: ignore[valid-type]
        ...,
        metavar="SET",
        help="targets (train_0..train_f) or validation.",
    ),
    root: str = typer.Option(
        ..., "--root", "-r", help="Where the sets are built (a folder, or s3://... with --stream)."
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
    from oiv4.run.archives import build_archive_set

    with render.archive_bars() as bar:
        try:
            summary = build_archive_set(Storage(root), image_set.value, settings, render.ArchiveBars(bar))
        except KeyboardInterrupt:
            bar.stop()
            err.print(
                "[yellow]interrupted.[/yellow] Run the same command again: finished archives are kept, "
                "a download continues from its last checkpoint, an unfinished conversion starts over."
            )
            # Everything on disk is already consistent (atomic renames, checkpointed sidecars); exiting now
            # spares waiting for a transfer thread blocked in a socket read.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
    render.archives_summary(summary, to_stderr=json_out)
    if json_out:
        typer.echo(json.dumps(summary.to_dict(), indent=1, default=str))
    if not summary.ok:
        err.print(
            f"[red]{len(summary.failed)} archive(s) failed[/red]; fix the cause and re-run (done archives are kept)."
        )
        raise typer.Exit(1)


_FetchArgs = typer.Argument(
    None,
    metavar="[SET]... [OUTCOME]...",
    help="Sets to fetch: train, extended_targets (default: both, in that order). With --retry-failed, any other "
    "word is an outcome to retry (e.g. http_429 timeout verify_failed); default all failures.",
    show_default=False,
)


@app.command("fetch", rich_help_panel=STAGES_PANEL)
@settings_command({"settings": FetchSettings, "executor": ExecutorSettings})
def fetch_cmd(
    settings: FetchSettings,
    executor: ExecutorSettings,
    args: list[str] = _FetchArgs,
    root: str = RootOpt,
    retry_failed: bool = typer.Option(
        False,
        "--retry-failed",
        help="Fetch recorded failures again: all of them, or only the OUTCOMEs given as arguments. "
        "(disk_full/write_error rows are always retried.)",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show live progress."),
) -> None:
    """Stage 4: download, verify, shrink and store the train and extended_targets images.

    For every manifest row: download OriginalURL (a redirect to Flickr's "photo unavailable" card is recorded as `placeholder`; 429/503 honour Retry-After, with exponential backoff); check the size against OriginalSize and the MD5 against OriginalMD5; decode (PNG, GIF, palette, alpha on white, CMYK, 16-bit: all become RGB); rotate by the CSV Rotation; shrink to fit --max-side; save as JPEG atomically. Every row ends in exactly one ledger outcome (see `oiv4 status`).

    Resumable at any moment: run the same command again after a crash, kill or Ctrl-C and only the unfinished rows are done; finished files are never rewritten.

    Examples:

      oiv4 fetch train --root /data/open_images

      oiv4 fetch extended_targets --root /data/open_images --layout webdataset --workers 8

      oiv4 fetch train --root /data/open_images --retry-failed http_429 timeout

      oiv4 fetch train --root s3://bucket/open_images --executor dask --scheduler tcp://10.0.0.5:8786
    """
    from oiv4.cli.fetch_view import LiveFetchView, summary_table
    from oiv4.run.fetch import fetch_set

    names = {s.value for s in ImageSet}
    sets = [a for a in args or [] if a in names]
    outcomes = [a for a in args or [] if a not in names]
    if any(ImageSet(s).from_archives for s in sets):
        raise UsageError("targets and validation come from the CVDF archives: use `oiv4 archives`")
    if outcomes and not retry_failed:
        raise UsageError(
            f"unknown set {outcomes[0]!r}: use train or extended_targets (outcome names go with --retry-failed)"
        )
    if retry_failed:
        settings = dataclasses.replace(settings, retry_failed=tuple(outcomes) or ("all",))
    storage = Storage(root)
    for image_set in sets or [s.value for s in URL_SETS]:
        if progress:
            with LiveFetchView(err, image_set) as view:
                summary = fetch_set(storage, image_set, settings, executor, progress=view.update)
        else:
            summary = fetch_set(storage, image_set, settings, executor)
        Console().print(summary_table(summary))
