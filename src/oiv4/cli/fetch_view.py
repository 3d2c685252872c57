"""Rich rendering for `oiv4 fetch` (and the live progress of `oiv4 features`): the live progress panel and the
end-of-run summary."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from oiv4.cli.logs import LineLog, LogSettings, duration
from oiv4.stages.fetch.progress import FetchProgress
from oiv4.stages.fetch.stage import FetchSummary


class LiveFetchView:
    """A live panel fed by `fetch_set(progress=view.update)`: bar, images/s, MB/s, success rate, ETA, top failures."""

    def __init__(self, console: Console, image_set: str, *, transfers: bool = True) -> None:
        self._transfers = transfers
        self._bar = Progress(
            TextColumn(f"[bold]{image_set}[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self._task = self._bar.add_task(image_set, total=None)
        self._stats = Text("starting workers ...", style="dim")
        self._live = Live(Group(self._bar, self._stats), console=console, refresh_per_second=4, transient=False)
        self._lock = threading.Lock()

    def __enter__(self) -> LiveFetchView:
        self._live.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._live.__exit__(exc_type, exc, tb)

    def update(self, p: FetchProgress) -> None:
        with self._lock:
            self._bar.update(self._task, total=p.todo, completed=p.done)
            line = Text()
            line.append(f"{p.images_per_s:,.1f} images/s", style="bold cyan")
            if self._transfers:
                line.append(f"  {p.mb_per_s:,.1f} MB/s")
            line.append(f"  {100 * p.success_rate:.1f}% ok", style="green" if p.success_rate > 0.9 else "yellow")
            line.append(f"  ETA {duration(p.eta_s)}")
            fails = p.top_failures(4)
            if fails:
                line.append("\n  top failures: ", style="dim")
                line.append("  ".join(f"{o} {n:,}" for o, n in fails), style="red")
            self._stats = line
            self._live.update(Group(self._bar, self._stats))


@contextmanager
def set_progress(
    console: Console, image_set: str, settings: LogSettings, command: str = "fetch", *, transfers: bool = True
) -> Iterator[Callable[..., None]]:
    """The progress callback for one set a stage works through: a live panel on a terminal, lines otherwise.
    `transfers`: the stage downloads, so MB/s means something."""
    if settings.live:
        with LiveFetchView(console, image_set, transfers=transfers) as view:
            yield view.update
        return
    log = LineLog(command, settings, transfers=transfers)
    try:
        yield log.update
    finally:
        log.close()


def summary_table(s: FetchSummary) -> Table:
    """This run's outcomes next to the set's totals."""
    t = Table(
        title=f"fetch {s.image_set}: {s.done:,} images in {duration(s.elapsed_s)} ({s.images_per_s:,.1f}/s), "
        f"{s.bytes_downloaded / 1e9:,.2f} GB downloaded",
        header_style="bold",
    )
    t.add_column("outcome")
    t.add_column("this run", justify="right")
    t.add_column("set total", justify="right")
    t.add_column("of planned", justify="right")
    names = list(dict.fromkeys([*s.totals, *s.outcomes]))
    for o in names:
        style = "green" if o == "ok" else "red"
        total = s.totals.get(o, 0)
        pct = f"{100 * total / s.planned:.1f}%" if s.planned else ""
        t.add_row(f"[{style}]{o}[/{style}]", f"{s.outcomes.get(o, 0):,}", f"{total:,}", pct)
    if s.remaining:
        t.add_row("[yellow]not yet done[/yellow]", "", f"{s.remaining:,}", "")
    t.caption = f"{s.shards_run} of {s.shards} shards had work; {s.skipped:,} rows were already finished"
    return t
