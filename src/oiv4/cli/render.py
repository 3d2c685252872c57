"""What the commands print: tables, progress bars, summaries. Commands decide; this module only draws.

`err` is the stderr console (progress, messages); results that a user may pipe go to a stdout `make_console()`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich import box
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from oiv4.cli.app import console as err
from oiv4.cli.app import make_console
from oiv4.cli.fetch_view import set_progress, summary_table
from oiv4.cli.logs import LineLog, LogSettings
from oiv4.contracts.schema import ImageSet
from oiv4.stages.archives import ArchiveProgress


def download_bars(live: bool = True) -> Progress:
    """Byte bars with speed, for the metadata download (off a terminal: none, the result lines follow)."""
    return Progress(
        "[bold]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=err, disable=not live
    )


@contextmanager
def named_bars(progress: Progress) -> Iterator[Callable[[str, int, int | None], None]]:
    """`progress(name, done, total)` callbacks drawn as one bar per name."""
    tasks: dict[str, Any] = {}
    with progress as bar:

        def update(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done, total=total)

        yield update


def decode_bars(enabled: bool) -> Progress:
    """Count bars for `verify --deep` (hidden otherwise)."""
    return Progress(
        "[bold]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err,
        transient=True, disable=not enabled,
    )  # fmt: skip


def in_set_order(counts: dict[str, int]) -> list[tuple[str, int]]:
    """`counts` in the order the sets are built (targets, validation, train, extended_targets), whatever
    order they were stored in (summary.json sorts its keys); unknown names follow in their own order."""
    order = [s.value for s in ImageSet]
    return sorted(counts.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))


def outcome_counts(outcomes: dict[str, int]) -> str:
    """`ok 1,044, missing_from_archive 3`: outcome counts as words, ok first, then the most frequent."""
    items = sorted(outcomes.items(), key=lambda kv: (kv[0] != "ok", -kv[1], kv[0]))
    return ", ".join(f"{name} {n:,}" for name, n in items) or "nothing recorded"


def plan_table(summary: Any) -> None:
    table = Table(title="plan" + (" (up to date, reused)" if summary.reused else ""))
    table.add_column("set")
    table.add_column("images", justify="right")
    table.add_column("source")
    for name, n in in_set_order(summary.counts):
        table.add_row(name, f"{n:,}", "CVDF archives" if name in ("targets", "validation") else "OriginalURL (Flickr)")
    make_console().print(table)
    if summary.rejected:
        err.print(f"[yellow]{summary.rejected:,} invalid rows skipped[/yellow] (see plan/rejected.parquet)")


_VERIFY_KINDS = {
    "missing": ("missing", "bad_location"),
    "size": ("size_mismatch",),
    "damaged": ("damaged", "undecodable", "checksum_mismatch", "corrupt_jpeg"),
    "archive": ("bad_archive",),
    "orphan": ("orphan",),
    "temp": ("stray_temp",),
    "staged": ("staged",),
    "unverifiable": ("unverifiable",),
}


def verify_report(report: Any, show: int) -> None:
    out = make_console()
    # Problem columns appear only when some set has that problem, so the table fits 80 columns.
    shown = {c: ks for c, ks in _VERIFY_KINDS.items() if any(s.count(k) for s in report.sets for k in ks)}
    table = Table(
        title=f"oiv4 verify{' --deep' if report.deep else ''}: {report.root}",
        title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
    )  # fmt: skip
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
        tail = f" ({warnings:,} warnings above)" if warnings else ""
        out.print("[green]clean[/green]: every ok image is where the ledger says" + tail)
    else:
        broken = sum(s.broken_images for s in report.sets)
        hint = "" if any(s.requeued for s in report.sets) else "; run again with --requeue to mark them for re-fetch"
        out.print(f"[red]broken[/red]: {broken:,} images{hint}")


def archive_bars(live: bool = True) -> Progress:
    return Progress(
        "[bold]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
        console=err, transient=False, disable=not live,
    )  # fmt: skip


class ArchiveBars(ArchiveProgress):
    """Archive download/convert events as rich bars (one per stage and archive)."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.tasks: dict[tuple[str, str], Any] = {}

    def begin(self, stage: str, name: str, total: int | None) -> None:
        key = (stage, name)
        if key in self.tasks:
            self.bar.reset(self.tasks[key], total=total)
        else:
            self.tasks[key] = self.bar.add_task(f"{stage:8s} {name}", total=total)

    def advance(self, stage: str, name: str, n: int) -> None:
        if (stage, name) in self.tasks:
            self.bar.advance(self.tasks[(stage, name)], n)

    def message(self, text: str) -> None:
        self.bar.console.print(text)


def archives_summary(summary: Any, to_stderr: bool) -> None:
    table = Table(title=f"{summary.image_set} from {summary.source}")
    # The archive name is never cut; the detail takes the width left and folds long words (a flag, a URL)
    # onto more lines instead of cutting them with "…".
    table.add_column("archive", no_wrap=True, min_width=max((len(a.name) for a in summary.archives), default=7))
    for col in ("status", "stored", "missing", "refused"):
        table.add_column(col, justify="left" if col == "status" else "right")
    table.add_column("verified by / error", overflow="fold", ratio=1)
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
    make_console(stderr=to_stderr).print(table)
    for a in summary.archives:
        if a.status == "failed" and a.error:  # in full, on one line to copy (the table folds it)
            err.print(f"[red]{escape(a.error)}[/red]", soft_wrap=True, highlight=False)
    for how in sorted({a.verification for a in summary.archives if a.verification}):
        err.print(f"[dim]verification:[/dim] {how}")


class ArchiveLines(ArchiveProgress):
    """Archive events as lines of their own (builds, and any run off a terminal)."""

    def __init__(self, log: LineLog | None = None) -> None:
        self.log = log

    def _line(self, text: str) -> None:
        if self.log is not None:
            self.log.message(text)
        else:
            err.print(text, soft_wrap=True, highlight=False)

    def end(self, stage: str, name: str) -> None:
        self._line(f"  {name}: {stage} done")

    def message(self, text: str) -> None:
        self._line(f"  {text}")


class BuildView:
    """Renders a build (a `BuildObserver`): a numbered header per stage, live views, a line per result."""

    def __init__(self, log: LogSettings | None = None) -> None:
        from oiv4.run.build import STAGES

        self._stages = STAGES
        self._detail = ""
        self.log = log or LogSettings()
        self.out = make_console(stderr=self.log.json or self.log.log_format == "json")

    def stage(self, name: str, detail: str = "") -> None:
        self._detail = detail  # the set a stage's result belongs to, when the result does not say
        n = self._stages.index(name) + 1
        if self.log.live:
            err.rule(f"[bold]{n}/{len(self._stages)} {name}[/bold] {detail}", align="left")
        else:
            LineLog("build", self.log).message(f"stage {n}/{len(self._stages)} {name} {detail}".rstrip())

    @contextmanager
    def fetch_view(self, image_set: str) -> Iterator[Callable[..., None]]:
        with set_progress(err, image_set, self.log) as update:
            yield update

    def archive_progress(self, image_set: str) -> ArchiveProgress:
        return ArchiveLines(None if self.log.live else LineLog("archives", self.log))

    def done(self, name: str, result: Any) -> None:
        if name == "plan":
            plan_table(result)
        elif name == "archives":
            bad = result.failed
            line = f"  {result.image_set}: {outcome_counts(dict(result.outcomes))}"
            err.print(line + (f" [red]{len(bad)} archive(s) failed[/red]" if bad else ""))
            for a in bad:
                err.print(f"  [red]{a.name}[/red]: {a.error}")
        elif name == "fetch":
            self.out.print(summary_table(result))
        elif name == "verify":
            state = "[green]clean[/green]" if result.ok else f"[red]{len(result.problems)} problem(s)[/red]"
            err.print(f"  verify: {state}")
        elif name == "hash":
            err.print("  " + hash_line(result, self._detail))
        elif name == "dedup":
            err.print("  " + dedup_line(result))
        elif name == "report":
            err.print(f"  report: {result}")


def hash_line(summary: Any, image_set: str = "") -> str:
    """One line per hashed set: `hash: targets: hashed 1,234, already hashed 0 (850 images/s)`."""
    line = f"hash: {summary.image_set or image_set}: hashed {summary.hashed:,}, already hashed {summary.already:,}"
    if summary.hashed:
        line += f" ({summary.images_per_s:,.0f} images/s)"
    if summary.unreadable:
        line += f", [red]{summary.unreadable:,} unreadable[/red] (run oiv4 verify)"
    return line


def dedup_line(result: Any) -> str:
    """`dedup: <headline>`, or why dedup could not compare (the build passes the error text instead)."""
    if isinstance(result, str):
        return f"dedup: [red]not run[/red]: {result}"
    return f"dedup: {result.headline}"


def build_finish(result: Any, status: Any, to_stderr: bool = False) -> None:
    """The status table after a build, where the report is, and a hint when something failed."""
    out = make_console(stderr=to_stderr)
    out.print(status)
    if result.report_path:
        out.print(f"report: [bold]{result.report_path}[/bold]")
    if not result.ok:
        err.print("[red]build finished with problems[/red] (see above); re-run the same command to retry what is left")


def sql_result(columns: list[str], rows: list[tuple], *, csv: bool) -> None:
    """`oiv4 sql`'s answer: a table, or CSV (header + rows) on stdout for scripts."""
    if csv:
        import csv as csvlib
        import sys

        writer = csvlib.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
        return
    table = Table(*columns, header_style="bold")
    for r in rows:
        table.add_row(*("" if v is None else f"{v:,}" if isinstance(v, int) else str(v) for v in r))
    make_console().print(table)
