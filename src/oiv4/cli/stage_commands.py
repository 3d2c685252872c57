"""The pipeline's stages as commands: metadata, plan, archives, fetch. Options come from their settings."""

from __future__ import annotations

import dataclasses

import typer

from oiv4.cli import render
from oiv4.cli.app import app, make_console
from oiv4.cli.app import console as err
from oiv4.cli.fetch_view import set_progress
from oiv4.cli.guard import check_outcomes, writing
from oiv4.cli.logs import LineLog, LogSettings, emit_summary
from oiv4.cli.options import choice_enum, settings_command
from oiv4.contracts.errors import COMPLETE_WITH_FAILURES, Incomplete, Interrupted, UsageError
from oiv4.contracts.schema import URL_SETS, ImageSet
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
@settings_command({"settings": MetadataSettings, "log": LogSettings})
def metadata_cmd(settings: MetadataSettings, log: LogSettings, root: str = RootOpt) -> None:
    """Stage 1: download image_ids_and_rotation.csv (3.1 GB) and train-images-boxable-with-rotation.csv.

    Resumes an interrupted download (HTTP Range), checks the size against Content-Length and the header
    against the 12 expected columns. A partial file is kept as `<name>.part` and never looks complete.

    Example: oiv4 metadata --root /data/open_images
    """
    from oiv4.stages.metadata import fetch_metadata

    with writing(root, "oiv4 metadata") as storage, render.named_bars(render.download_bars(log.live)) as progress:
        sizes = fetch_metadata(storage, settings, progress)
    if emit_summary("metadata", sizes, log, root=storage.root):
        return
    for name, size in sizes.items():
        err.print(f"[green]ok[/green] {name}: {size:,} bytes")


@app.command("plan", rich_help_panel=STAGES_PANEL)
@settings_command({"settings": PlanSettings, "log": LogSettings})
def plan_cmd(settings: PlanSettings, log: LogSettings, root: str = RootOpt) -> None:
    """Stage 2: compute the four sets exactly as the notebook does and write plan/<set>.parquet.

    targets = boxable rows; validation = Subset==validation; train = the first --train-size rows of
    (Subset==train and not boxable) in file order; extended_targets = the rest. Every row is validated
    (ImageID must be 16 lowercase hex, URL and MD5 present, 12 fields); problems are reported with line numbers.

    Example: oiv4 plan --root /data/open_images
    """
    from oiv4.stages.plan import build_plan

    with writing(root, "oiv4 plan") as storage:
        summary = build_plan(storage, settings)
    if not emit_summary("plan", summary, log, root=storage.root):
        render.plan_table(summary)


@app.command("archives", rich_help_panel=STAGES_PANEL)
@settings_command({"settings": ArchiveSettings, "log": LogSettings})
def archives_cmd(
    settings: ArchiveSettings,
    log: LogSettings,
    image_set: ARCHIVE_SETS = typer.Argument(  # type: ignore[valid-type]
        ...,
        metavar="SET",
        help="targets (train_0..train_f) or validation.",
    ),
    root: str = typer.Option(
        ..., "--root", "-r", help="Where the sets are built (a folder, or s3://... with --stream)."
    ),
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

    with writing(root, f"oiv4 archives {image_set.value}") as storage, render.archive_bars(log.live) as bar:
        try:
            view = render.ArchiveBars(bar) if log.live else render.ArchiveLines(LineLog("archives", log))
            summary = build_archive_set(storage, image_set.value, settings, view)
        except KeyboardInterrupt:
            bar.stop()
            # Everything on disk is already consistent (atomic renames, checkpointed sidecars). The handler
            # prints this; `oiv4.cli.crash.finish` then ends the process without waiting for a transfer
            # thread blocked in a socket read.
            raise Interrupted(
                "interrupted. Run the same command again: finished archives are kept, "
                "a download continues from its last checkpoint, an unfinished conversion starts over."
            ) from None
    as_json = log.json or log.log_format == "json"
    render.archives_summary(summary, to_stderr=as_json)
    if as_json:
        emit_summary("archives", summary.to_dict(), log)
    if not summary.ok:
        err.print(
            f"[red]{len(summary.failed)} archive(s) failed[/red]; fix the cause and re-run (done archives are kept)."
        )
        raise typer.Exit(1)
    if any(o != "ok" and n for o, n in summary.outcomes.items()):
        raise typer.Exit(COMPLETE_WITH_FAILURES)


_FetchArgs = typer.Argument(
    None,
    metavar="[SET]... [OUTCOME]...",
    help="Sets to fetch: train, extended_targets (default: both, in that order). With --retry-failed, any other "
    "word is an outcome to retry (e.g. http_429 timeout verify_failed); default all failures.",
    show_default=False,
)


@app.command("fetch", rich_help_panel=STAGES_PANEL)
@settings_command({"settings": FetchSettings, "executor": ExecutorSettings, "log": LogSettings})
def fetch_cmd(
    settings: FetchSettings,
    executor: ExecutorSettings,
    log: LogSettings,
    args: list[str] = _FetchArgs,
    root: str = RootOpt,
    retry_failed: bool = typer.Option(
        False,
        "--retry-failed",
        help="Fetch recorded failures again: all of them, or only the OUTCOMEs given as arguments. "
        "(disk_full/write_error rows are always retried; blocked_address rows whenever "
        "--allow-private-networks is given.)",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress (live or as log lines)."),
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
    from oiv4.cli.fetch_view import summary_table
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
    check_outcomes(outcomes)
    if retry_failed:
        settings = dataclasses.replace(settings, retry_failed=tuple(outcomes) or ("all",))
    chosen = sets or [s.value for s in URL_SETS]
    summaries = []
    with writing(root, " ".join(["oiv4 fetch", *chosen])) as storage:
        for image_set in chosen:
            if progress:
                with set_progress(err, image_set, log) as on_progress:
                    summary = fetch_set(storage, image_set, settings, executor, progress=on_progress)
            else:
                summary = fetch_set(storage, image_set, settings, executor)
            summaries.append(summary)
            as_json = emit_summary("fetch", summary, log, set=image_set)
            if log.log_format != "json":  # JSON logs: stderr holds JSON lines only
                make_console(stderr=as_json).print(summary_table(summary))
    raise typer.Exit(fetch_exit_code(summaries))


def fetch_exit_code(summaries: list) -> int:
    """0 every row ok; 10 every row has its outcome but some failed (normal: dead URLs); 8 rows left over."""
    left = sum(s.remaining for s in summaries)
    if left:
        err.print(f"[yellow]{left:,} planned rows have no outcome yet[/yellow]: run the same command again")
        return Incomplete.exit_code
    failed = any(n for s in summaries for o, n in s.totals.items() if o != "ok")
    return COMPLETE_WITH_FAILURES if failed else 0
