"""`oiv4 status` on a terminal: one line per set/outcome/failure kind at any width, full reasons on request.

Failures are grouped by (outcome, reason kind) (`oiv4.io.reason_kind`), so one reason never spans ten lines
of a narrow column: the kind is cut to the width left (with "…"), on one line. `verbose=True` adds each
kind's full example reason under it, never cut (the terminal may fold it); `status_json` gives everything.
"""

from __future__ import annotations

import json

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

from oiv4.stages.status import SetStatus

SET_W = len("extended_targets")
COUNT_W = len("10,000.00 GB")
PCT_W = len("100.0%")


def _pct(n: int, d: int | None) -> str:
    return f"{100 * n / d:.1f}%" if d else ""


class _StatusTable:
    """The table, laid out for the width it is printed at (a rich renderable)."""

    def __init__(self, statuses: list[SetStatus]) -> None:
        self.statuses = statuses

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        # Everything but the kind keeps its full width; the kind gets what is left and is cut on its one line.
        fixed = (SET_W, COUNT_W, PCT_W)
        kind_w = max(12, options.max_width - sum(fixed) - 2 * len(fixed))
        table = Table(title="oiv4 status", header_style="bold", pad_edge=False, box=None)
        table.add_column("set", no_wrap=True, width=SET_W)
        table.add_column("outcome / kind", no_wrap=True, width=kind_w)
        table.add_column("images", justify="right", no_wrap=True, width=COUNT_W)
        table.add_column("%", justify="right", no_wrap=True, width=PCT_W)
        for st in self.statuses:
            self._set_rows(table, st, kind_w)
        yield table

    @staticmethod
    def _set_rows(table: Table, st: SetStatus, kind_w: int) -> None:
        name = f"[bold]{st.image_set}[/bold]"
        table.add_row(name, "[dim]planned[/dim]", "no plan" if st.planned is None else f"{st.planned:,}", "")
        if not st.counts:
            table.add_row("", "[dim]not started[/dim]", "", "", end_section=True)
            return
        if st.ok:
            table.add_row("", "[green]ok[/green]", f"{st.ok:,}", _pct(st.ok, st.planned))
        for k in st.kinds:
            label = Text(k.outcome, style="red")
            label.append(f"  {k.kind or '(no reason)'}")
            label.truncate(kind_w, overflow="ellipsis")
            table.add_row("", label, f"{k.count:,}", _pct(k.count, st.planned))
        if st.remaining:
            table.add_row("", "[yellow]not yet done[/yellow]", f"{st.remaining:,}", _pct(st.remaining, st.planned))
        table.add_row("", "[dim]stored[/dim]", f"{st.stored_bytes / 1e9:,.2f} GB", "", end_section=True)


def status_view(statuses: list[SetStatus], *, verbose: bool = False) -> RenderableType:
    """The status table, one line per set/outcome/failure kind at any width (plus, with `verbose`, every
    kind's full example reason, never cut)."""
    if not verbose:
        return _StatusTable(statuses)
    lines: list[RenderableType] = [_StatusTable(statuses), Text("")]
    for st in statuses:
        for k in st.kinds:
            lines.append(Text.assemble((f"{st.image_set} {k.outcome}", "bold red"), f" ({k.count:,}): {k.kind}"))
            lines.append(Text(f"  e.g. {k.example or '(no reason)'}", overflow="fold"))
    return Group(*lines)


def status_json(statuses: list[SetStatus]) -> str:
    """Every set's status as JSON, full reasons included."""
    return json.dumps([st.to_json() for st in statuses], indent=2)


__all__ = ["status_json", "status_view"]
