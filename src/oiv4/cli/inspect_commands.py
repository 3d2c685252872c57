"""Commands that look at a built root without changing images: status, verify, report."""

from __future__ import annotations

import contextlib
import sys

import typer

from oiv4.cli import render
from oiv4.cli.app import app, make_console
from oiv4.cli.app import console as err
from oiv4.cli.guard import report_target, writing
from oiv4.cli.logs import LogSettings, emit_summary
from oiv4.cli.options import settings_command
from oiv4.contracts.errors import IntegrityError, UsageError
from oiv4.contracts.schema import ImageSet
from oiv4.io.root_check import built_root, named_root, writable_root
from oiv4.io.run_lock import read_holder
from oiv4.io.storage import Storage
from oiv4.report import ReportSettings
from oiv4.stages.verify import VerifySettings

INSPECT_PANEL = "Inspect the result"
BuiltRootOpt = typer.Option(..., "--root", "-r", help="The built root: a folder or an fsspec URL (s3://bucket/prefix).")


def _existing(root: str) -> Storage:
    storage = named_root(root)
    built_root(storage)
    return storage


def _as_json(log: bool) -> LogSettings:
    return LogSettings(json=log)


JsonOpt = typer.Option(False, "--json", help="Print the result as JSON on stdout (tables go to stderr).")


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
    json_out: bool = JsonOpt,
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Under each kind of failure, its full reason text (never cut)."
    ),
) -> None:
    """Counts per set and outcome, read from the ledgers (safe while a fetch is running).

    Shows the planned rows, each outcome with its share and an example reason, the rows not yet done and the bytes stored.

    Example: oiv4 status --root /data/open_images
    """
    from oiv4.cli.status_view import status_view
    from oiv4.stages.status import collect_status

    storage = _existing(root)
    sets = [ImageSet(s) for s in image_set] if image_set else None
    statuses = collect_status(storage, sets)
    holder = read_holder(storage)
    running = f"a run is going: {holder.describe()}" if holder else None
    as_json = emit_summary("status", statuses, _as_json(json_out), root=storage.root, running=running)
    make_console(stderr=as_json).print(status_view(statuses, verbose=verbose))
    from oiv4.cli.features_command import print_features_status

    print_features_status(storage, sets, make_console(stderr=as_json))
    if running:
        err.print(f"[cyan]{running}[/cyan]", soft_wrap=True, highlight=False)


@app.command("verify", rich_help_panel=INSPECT_PANEL)
@settings_command({"settings": VerifySettings})
def verify_cmd(
    settings: VerifySettings,
    root: str = BuiltRootOpt,
    show: int = typer.Option(10, min=0, help="Problems listed per set and kind (the table counts all of them)."),
    json_out: bool = JsonOpt,
) -> None:
    """Check that the data on disk is what the ledger says, and say what is broken.

    For every set: each `ok` ledger row must have its file or archive member, with the size the ledger recorded; every zip's central directory and tar's headers must parse; every image is read (zip CRC-32 checked) and must hash to the checksum the ledger recorded (rows without one are `unverifiable`: run `oiv4 hash`). --fast checks sizes only (reads no image data); --deep also decodes every image strictly. Files no `ok` row points at (orphans), temp files left by a kill and images still staged for an unpacked shard are reported as warnings.

    Exit code: 0 when nothing is broken (warnings allowed), 6 (integrity) when something is broken, 2 when there is nothing to verify.

    Examples:

      oiv4 verify --root /data/open_images

      oiv4 verify --root /data/open_images --deep --requeue

      oiv4 fetch --root /data/open_images --retry-failed verify_failed   # re-fetch them
    """
    from oiv4.stages.verify import verify

    try:
        storage = _existing(root)
    except UsageError as exc:
        raise UsageError(f"nothing to verify: {exc}") from None
    # --requeue writes ledger rows: it takes the root like any writing command; a plain verify only reads.
    lock = writing(storage, "oiv4 verify --requeue") if settings.requeue else contextlib.nullcontext(storage)
    with lock, render.decode_bars(not settings.fast and sys.stderr.isatty()) as bar:
        tasks: dict[str, object] = {}

        def progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                verb = "decoding" if settings.deep else "hashing"
                tasks[name] = bar.add_task(f"{verb} {name}", total=total)
            bar.update(tasks[name], completed=done, total=total)  # type: ignore[arg-type]  # total grows per slice

        report = verify(storage, settings, on_progress=progress)
    if not report.sets:
        raise UsageError(f"nothing to verify: no plan, ledger or images under {storage.root}")
    if emit_summary("verify", report, _as_json(json_out), root=storage.root):
        with contextlib.redirect_stdout(sys.stderr):
            render.verify_report(report, show)
    else:
        render.verify_report(report, show)
    if not report.ok:
        raise typer.Exit(IntegrityError.exit_code)


@app.command("report", rich_help_panel=INSPECT_PANEL)
@settings_command({"settings": ReportSettings})
def report_cmd(settings: ReportSettings, root: str = BuiltRootOpt, json_out: bool = JsonOpt) -> None:
    """Write a self-contained HTML report of the build: one file that opens in any browser, offline.

    Per set: counts and outcome breakdown, throughput over time (from the ledger), stored size, dimension and aspect-ratio distributions, a contact sheet of sample images, and the most frequent failure reasons with example URLs. CSS, charts (SVG) and thumbnails are all inline.

    Examples:

      oiv4 report --root /data/open_images          # writes /data/open_images/report/index.html

      oiv4 report --root s3://bucket/oi --out report.html
    """
    from oiv4.report import build_report

    storage = _existing(root)
    if settings.out is None:
        writable_root(storage)
    else:
        report_target(settings.out)
    with err.status("collecting figures ...") as status:
        path = build_report(storage, settings, on_set=lambda s: status.update(f"collecting {s} ..."))
    if not emit_summary("report", {"path": path}, _as_json(json_out), root=storage.root):
        make_console().print(f"report written to [bold]{path}[/bold]")


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

    from oiv4.io.damage import find_damage_in_root, is_read_error
    from oiv4.io.sql import connect

    if not query.strip(" \t\r\n;"):
        raise UsageError('the query is empty: give one, e.g. oiv4 sql --root R "select count(*) from ledger_train"')
    # Views only for the sets the query names (resolving a set's in-progress parts is its main cost).
    named = [s for s in ImageSet if re.search(rf"\b(plan|ledger)_{s.value}\b", query)]
    storage = _existing(root)
    try:
        cur = connect(storage, named or None).execute(query)
        columns = [d[0] for d in cur.description] if cur is not None and cur.description else []
        rows = cur.fetchmany(limit + 1) if columns else []
    except duckdb.Error as exc:
        # A file under the root that DuckDB could not read is that file's damage, not the query's fault.
        damage = find_damage_in_root(storage) if is_read_error(exc) else None
        if damage is not None:
            raise damage from None
        raise UsageError(str(exc).strip().splitlines()[0]) from None
    if not columns:  # a statement without a result
        return
    render.sql_result(columns, rows[:limit], csv=csv)
    if len(rows) > limit:
        err.print(f"[dim]first {limit:,} rows shown (--limit)[/dim]")
