"""Commands that look at a built root without changing images: status, verify, report."""

from __future__ import annotations

import typer
from rich.console import Console

from oiv4.cli import render
from oiv4.cli.app import app
from oiv4.cli.app import console as err
from oiv4.cli.options import settings_command
from oiv4.contracts.errors import UsageError
from oiv4.contracts.schema import ImageSet
from oiv4.io.storage import Storage
from oiv4.report import ReportSettings
from oiv4.stages.verify import VerifySettings

INSPECT_PANEL = "Inspect the result"
BuiltRootOpt = typer.Option(..., "--root", "-r", help="The built root: a folder or an fsspec URL (s3://bucket/prefix).")


def _existing(root: str) -> Storage:
    storage = Storage(root)
    if storage.local and not storage.local_path("").is_dir():
        raise UsageError(f"nothing to verify: {storage.root} does not exist")
    return storage


@app.command("status", rich_help_panel=INSPECT_PANEL)
def status_cmd(
    root: str = typer.Option(
        ..., "--root", "-r", help="Where the sets are built: a folder, or an fsspec URL such as s3://bucket/prefix."
    ),
    image_set: list[ImageSet] = typer.Option(
        None,
        "--set",
        "-s",
        help="Only this set (repeatable) \\[default: all four].",
        show_default=False,
    ),
) -> None:
    """Counts per set and outcome, read from the ledgers (safe while a fetch is running).

    Shows the planned rows, each outcome with its share and an example reason, the rows not yet done and the bytes stored.

    Example: oiv4 status --root /data/open_images
    """
    from oiv4.stages.status import collect_status, status_table

    sets = [ImageSet(s) for s in image_set] if image_set else None
    Console().print(status_table(collect_status(Storage(root), sets)))


@app.command("verify", rich_help_panel=INSPECT_PANEL)
@settings_command({"settings": VerifySettings})
def verify_cmd(
    settings: VerifySettings,
    root: str = BuiltRootOpt,
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
    from oiv4.stages.verify import verify

    storage = _existing(root)
    with render.decode_bars(settings.deep) as bar:
        tasks: dict[str, object] = {}

        def progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(f"decoding {name}", total=total)
            bar.update(tasks[name], completed=done)  # type: ignore[arg-type]

        report = verify(storage, settings, on_progress=progress)
    if not report.sets:
        raise UsageError(f"nothing to verify: no plan, ledger or images under {storage.root}")
    render.verify_report(report, show)
    if not report.ok:
        raise typer.Exit(1)


@app.command("report", rich_help_panel=INSPECT_PANEL)
@settings_command({"settings": ReportSettings})
def report_cmd(settings: ReportSettings, root: str = BuiltRootOpt) -> None:
    """Write a self-contained HTML report of the build: one file that opens in any browser, offline.

    Per set: counts and outcome breakdown, throughput over time (from the ledger), stored size, dimension and aspect-ratio distributions, a contact sheet of sample images, and the most frequent failure reasons with example URLs. CSS, charts (SVG) and thumbnails are all inline.

    Examples:

      oiv4 report --root /data/open_images          # writes /data/open_images/report/index.html

      oiv4 report --root s3://bucket/oi --out report.html
    """
    from oiv4.report import build_report

    storage = Storage(root)
    if storage.local and not storage.local_path("").is_dir():
        raise UsageError(f"no data at {storage.root}: the folder does not exist")
    with err.status("collecting figures ...") as status:
        path = build_report(storage, settings, on_set=lambda s: status.update(f"collecting {s} ..."))
    Console().print(f"report written to [bold]{path}[/bold]")


@app.command("sql", rich_help_panel=INSPECT_PANEL)
def sql_cmd(
    query: str = typer.Argument(..., help="A DuckDB query over the views plan_<set> and ledger_<set>."),
    root: str = BuiltRootOpt,
    limit: int = typer.Option(1000, min=1, help="Rows printed at most."),
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

    from oiv4.io.sql import connect

    # Views only for the sets the query names (resolving a set's in-progress parts is its main cost).
    named = [s for s in ImageSet if re.search(rf"\b(plan|ledger)_{s.value}\b", query)]
    try:
        cur = connect(_existing(root), named or None).execute(query)
        columns = [d[0] for d in cur.description] if cur.description else []
        rows = cur.fetchmany(limit + 1) if columns else []
    except duckdb.Error as exc:
        raise UsageError(str(exc).strip().splitlines()[0]) from None
    if not columns:  # a statement without a result
        return
    render.sql_result(columns, rows[:limit], csv=csv)
    if len(rows) > limit:
        err.print(f"[dim]first {limit:,} rows shown (--limit)[/dim]")
