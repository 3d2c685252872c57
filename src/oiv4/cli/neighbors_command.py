"""`oiv4 neighbors`: exact nearest-neighbour ground truth over the stored features."""

from __future__ import annotations

from dataclasses import replace

import typer

from oiv4.cli.app import app
from oiv4.cli.app import console as err
from oiv4.cli.guard import writing
from oiv4.cli.options import settings_command
from oiv4.contracts.errors import UsageError
from oiv4.contracts.schema import ImageSet
from oiv4.run.neighbors import NeighborsExecutor
from oiv4.stages.neighbors.settings import NeighborsSettings


@app.command("neighbors", rich_help_panel="Similarity")
@settings_command({"settings": NeighborsSettings, "executor": NeighborsExecutor})
def neighbors_cmd(
    settings: NeighborsSettings,
    executor: NeighborsExecutor,
    root: str = typer.Option(..., "--root", "-r", help="Where the sets and their features are."),
    queries: str = typer.Option(..., "--queries", help="SET, or SET:N for a seeded sample of N images."),
    database: str = typer.Option(..., "--database", help="SET[,SET...] to search, in tie order."),
) -> None:
    """Exact kNN ground truth; writes neighbors/<model>/<queries>-<database>.parquet (resumable).

    The queries are cut into blocks (one search over the whole database each, sized from --memory-gb), each
    written as a part file, so a killed run keeps its finished blocks. By default they run one after another in
    this process; --workers N runs N at once in worker processes, --executor dask (or --scheduler ADDRESS) on a
    Dask cluster whose workers see the root: the output is the same bytes whichever runs them.

    Example: oiv4 neighbors --root /data/open_images --queries validation:1000 --database targets --k 100
    """
    from oiv4.run.neighbors import run_neighbors

    qset, _, n = queries.partition(":")
    if n and not (n.isdigit() and int(n) >= 1):
        raise UsageError(f"--queries {queries}: N in SET:N must be a whole number of at least 1")
    try:
        names = tuple(ImageSet(x.strip()).value for x in database.split(","))
        qname = ImageSet(qset).value
    except ValueError as exc:
        raise UsageError(f"bad --queries/--database: {exc}") from None
    settings = replace(settings, queries=qname, sample=int(n) if n else None, database=names)
    with writing(root, "oiv4 neighbors") as storage:
        out, reused = run_neighbors(storage, settings, executor=executor)
    err.print(f"  wrote {out}" + (f" ({reused} finished query blocks kept)" if reused else ""))
