"""`oiv4 hash` and `oiv4 dedup`: fingerprints for stored images, and duplicates within and across the sets."""

from __future__ import annotations

import dataclasses

import typer
from rich.table import Table

from oiv4.cli.app import app, make_console
from oiv4.cli.app import console as err
from oiv4.cli.guard import writing
from oiv4.cli.options import settings_command
from oiv4.contracts.schema import ImageSet
from oiv4.io.ledger import sets_with_ledger
from oiv4.io.root_check import built_root
from oiv4.run.executor import ExecutorSettings
from oiv4.stages.dedup import DedupSettings
from oiv4.stages.hash import HashSettings

PANEL = "Duplicates"
RootOpt = typer.Option(
    ..., "--root", "-r", help="Where the sets are built: a folder, or an fsspec URL such as s3://bucket/prefix."
)


@app.command("hash", rich_help_panel=PANEL)
@settings_command({"settings": HashSettings, "executor": ExecutorSettings})
def hash_cmd(
    settings: HashSettings,
    executor: ExecutorSettings,
    root: str = RootOpt,
    sets: list[str] = typer.Option(
        [], "--set", "-s", help="Only these sets (repeatable; default: every set with a ledger)."
    ),
) -> None:
    """Record phash + checksum for stored images whose ledger rows lack them (archive sets; sets stored before).

    Decodes each stored JPEG at reduced scale; resumable (hashed rows are skipped), local or on Dask.

    Example: oiv4 hash --root /data/open_images
    """
    from oiv4.run.hash import hash_set

    with writing(root, "oiv4 hash") as storage:
        names = [ImageSet(s).value for s in sets] or [s.value for s in sets_with_ledger(storage)]
        for name in names:
            summary = hash_set(storage, name, settings, executor)
            line = f"  {name}: hashed {summary.hashed:,}, already hashed {summary.already:,}"
            if summary.unreadable:
                line += f", [red]{summary.unreadable:,} unreadable[/red] (run oiv4 verify)"
            err.print(line)


@app.command("dedup", rich_help_panel=PANEL)
@settings_command({"settings": DedupSettings})
def dedup_cmd(
    settings: DedupSettings,
    root: str = RootOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (as dedup/summary.json)."),
) -> None:
    """Find exact and near-duplicate images within and across the four sets; write dedup/pairs.parquet.

    Prints first how many train images duplicate a target or validation image (held out means held out),
    then, per pair of sets, how many images of the first have a duplicate in the second.

    Example: oiv4 dedup --root /data/open_images --threshold 8
    """
    from oiv4.stages.dedup import run_dedup

    with writing(root, "oiv4 dedup") as storage:
        built_root(storage)
        sets = tuple(s.value for s in sets_with_ledger(storage))
        # DedupError says what to run (unhashed images, no plan).
        summary = run_dedup(storage, dataclasses.replace(settings, sets=sets))
    if as_json:
        typer.echo(summary.to_json())
        return
    out = make_console()
    out.print(summary.headline)
    table = Table("set", "has a duplicate in", "images")
    for c in summary.counts:
        table.add_row(c.set, c.against, f"{c.images:,}")
    out.print(table)
    out.print("pairs by kind: " + ", ".join(f"{k} {n:,}" for k, n in sorted(summary.pairs_by_kind.items())))
