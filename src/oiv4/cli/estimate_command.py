"""`oiv4 estimate`: transfer, disk and wall time of the work still to do, printed before committing to it."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from oiv4.cli.app import app, make_console
from oiv4.cli.options import settings_command
from oiv4.io.root_check import built_root, named_root
from oiv4.stages.estimate import Estimate, EstimateSettings

PANEL = "Inspect the result"


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _print(est: Estimate) -> None:
    table = Table(title="Work still to do", title_justify="left")
    for name, justify in (("set", "left"), ("planned", "right"), ("to do", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for name in ("transfer", "disk", "CPU core-time"):
        table.add_column(name, justify="right")
    for s in est.sets:
        todo = f"{s.remaining_rows:,}" + (f" ({len(s.remaining_archives)} archives)" if s.remaining_archives else "")
        table.add_row(
            s.image_set,
            f"{s.planned:,}",
            todo,
            _size(s.transfer_bytes),
            _size(s.disk_bytes),
            _duration(s.core_seconds),
        )
    out = make_console()
    out.print(table)
    _print_build(est, out)
    # After the build's totals: features and ground truth come after the build and are not in its totals.
    _print_features(est, out)
    _print_neighbors(est, out)


def _print_build(est: Estimate, out: Console) -> None:
    for s in est.sets:
        if s.remaining_rows or s.remaining_archives:
            out.print(f"[dim]{s.image_set}: disk from {s.disk_basis}; time from {s.rate_basis}[/dim]")
    net = est.network_seconds
    if not est.transfer_bytes and not est.cpu_seconds:
        out.print("the build: nothing left to do: every planned row has a ledger row and every archive is converted")
        return
    out.print(f"total: {_size(est.transfer_bytes)} to download, {_size(est.disk_bytes)} written to the root")
    line = f"wall time on {est.workers} worker(s): {_duration(est.wall_seconds)}"
    if net is None:
        line += " if the CPUs are the limit (give --link-mbps to include the transfer)"
    else:
        limit = "the link" if net >= est.cpu_seconds else "the CPUs"
        line += f" ({limit} the limit: CPU {_duration(est.cpu_seconds)}, transfer {_duration(net)})"
    out.print(line)


def _per_worker(core_seconds: float | None, workers: int) -> str:
    if core_seconds is None:
        return "unknown (see the basis below)"
    return f"{_duration(core_seconds)} / {workers} = {_duration(core_seconds / workers)}"


def _print_features(est: Estimate, out: Console) -> None:
    todo = [f for f in est.features if f.remaining]
    if not todo:
        return
    first = todo[0]
    total = sum(f.remaining for f in todo)
    cpu = None if first.cpu_core_seconds is None else sum(f.cpu_core_seconds or 0.0 for f in todo)
    gpu = None if first.gpu_seconds is None else sum(f.gpu_seconds or 0.0 for f in todo)
    out.print(
        f"features ({first.model}, {first.dim}-d {first.dtype}): {total:,} images to do, "
        f"{_size(sum(f.disk_bytes for f in todo))} of vectors; CPU {_per_worker(cpu, est.workers)} "
        f"on {est.workers} core(s); one GPU {'unknown' if gpu is None else _duration(gpu)}"
    )
    out.print(f"[dim]features: {first.rate_basis}[/dim]")


def _print_neighbors(est: Estimate, out: Console) -> None:
    n = est.neighbors
    if est.neighbors_skipped:
        out.print(f"ground truth not costed: {est.neighbors_skipped} (name a job: --neighbors-queries, --k)")
    if n is None:
        return
    out.print(
        f"ground truth ({n.model}, k {n.k}): {n.queries} against {'+'.join(n.database)}, "
        f"{n.query_count:,} queries x {n.database_rows:,} vectors ({n.dim}-d): "
        f"{_size(n.disk_bytes)} of Parquet; reads {_size(n.database_bytes)} per pass, {n.passes} passes "
        f"({n.parts} part(s) at --memory-gb {n.memory_gb:g}) = {_size(n.read_bytes)}; "
        f"CPU {_per_worker(n.cpu_core_seconds, est.workers)} on {est.workers} core(s); "
        f"one GPU {_duration(n.gpu_seconds)}"
    )
    out.print(f"[dim]ground truth: {'; '.join(n.counts_basis)}; {n.rate_basis}[/dim]")


@app.command("estimate", rich_help_panel=PANEL)
@settings_command({"settings": EstimateSettings})
def estimate_cmd(
    settings: EstimateSettings,
    root: str = typer.Option(..., "--root", "-r", help="The root that holds the plan: a folder or an fsspec URL."),
    as_json: bool = typer.Option(False, "--json", help="Print the estimate as JSON."),
) -> None:
    """Estimate the transfer, disk and wall time of what is still to do, before doing it.

    Counts plan rows of the URL sets without a ledger row (their OriginalSize) and CVDF archives not yet converted (their published sizes). Disk and throughput come from this root's finished rows when there are enough, else from defaults measured in benchmarks/RESULTS.md.

    Beside the build: `oiv4 features` for --model (vectors still to write, their disk in --dtype, CPU time, GPU time on paper) and one `oiv4 neighbors` job: by default every validation image against the targets (skipped when those are not planned), or the one --neighbors-queries/--neighbors-database name, with --k and --memory-gb (the Parquet's disk, the passes over the database, CPU time, GPU time on paper).

    Examples:

      oiv4 estimate --root /data/open_images --link-mbps 1000

      oiv4 estimate --root /data/open_images --workers 8 --json

      oiv4 estimate --root /data/open_images --model resnet50 --dtype float32 --neighbors-queries validation:1000 --neighbors-database targets,train
    """
    from oiv4.stages.estimate import estimate
    from oiv4.stages.features.models import MODELS
    from oiv4.stages.neighbors.search import plan_sizes

    storage = named_root(root)
    built_root(storage)
    est = estimate(storage, settings, dims={m.name: m.dim for m in MODELS.values()}, sizing=plan_sizes)
    if as_json:
        typer.echo(est.to_json())
    else:
        _print(est)
