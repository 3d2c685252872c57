"""`oiv4 status`: how every set stands, by outcome, read from the ledgers (also while a run is going).

Reads the compacted shard files and the in-progress parts alike (`ledger.ledger_relation`, latest row
per image wins), so it is safe to run at any moment, from any machine that sees the root. The counting is
one DuckDB aggregate streamed over the shard files' few needed columns: nothing is loaded per row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from rich.table import Table

from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet, Outcome
from oiv4.io.sql import attach_filesystem, ledger_relation
from oiv4.io.storage import Storage


@dataclass
class SetStatus:
    """One set: planned rows, recorded outcomes, and an example reason per failure outcome."""

    image_set: str
    planned: int | None  # None when there is no plan yet
    counts: dict[str, int] = field(default_factory=dict)  # outcome -> rows, most common first
    examples: dict[str, str] = field(default_factory=dict)  # outcome -> one reason
    bytes_downloaded: int = 0
    stored_bytes: int = 0
    #: Rows recorded for planned images (ledger `row >= 0`). Archive members that are not in the plan
    #: (refused hostile names, unplanned images) get negative rows: counted, but they cover nothing planned.
    recorded_planned: int = 0

    @property
    def recorded(self) -> int:
        return sum(self.counts.values())

    @property
    def ok(self) -> int:
        return self.counts.get(Outcome.ok.value, 0)

    @property
    def remaining(self) -> int | None:
        return None if self.planned is None else max(0, self.planned - self.recorded_planned)


#: The only ledger columns status reads.
STATUS_COLUMNS = ("row", "outcome", "reason", "bytes_downloaded", "stored_bytes")


def collect_status(storage: Storage, sets: list[ImageSet | str] | None = None) -> list[SetStatus]:
    """The status of `sets` (default: all four) under `storage`."""
    planned: dict[str, int] = {}
    if storage.exists(LAYOUT.plan_summary()):
        planned = json.loads(storage.read_bytes(LAYOUT.plan_summary())).get("counts", {})
    import duckdb

    con = duckdb.connect()
    attach_filesystem(con, storage)
    out = []
    for s in sets or list(ImageSet):
        s = ImageSet(s)
        st = SetStatus(s.value, planned.get(s.value))
        led = ledger_relation(con, storage, s, STATUS_COLUMNS)
        rows = led.aggregate(
            "outcome, count(*), coalesce(sum(bytes_downloaded), 0), coalesce(sum(stored_bytes), 0), "
            'count(*) FILTER (WHERE "row" >= 0), arg_min(reason, "row")',
            "outcome",
        ).fetchall()
        if rows:
            counts = {o: int(n) for o, n, *_ in rows}
            st.counts = dict(sorted(counts.items(), key=lambda kv: (kv[0] != Outcome.ok, -kv[1], kv[0])))
            st.bytes_downloaded = sum(int(r[2]) for r in rows)
            st.stored_bytes = sum(int(r[3]) for r in rows)
            st.recorded_planned = sum(int(r[4]) for r in rows)
            # The example is the first row in plan order with that outcome.
            st.examples = {o: (ex or "") for o, _n, _d, _s, _p, ex in rows if o != Outcome.ok}
        out.append(st)
    con.close()
    return out


def _short(reason: str, limit: int = 90) -> str:
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"


def _pct(n: int, d: int | None) -> str:
    return f"{100 * n / d:.1f}%" if d else ""


def status_table(statuses: list[SetStatus]) -> Table:
    """A rich table: one block of rows per set, one row per outcome, plus not-yet-done rows."""
    table = Table(title="oiv4 status", show_lines=False, header_style="bold")
    # The counts never wrap; the reason column (cut to one short sentence) takes the width that is left.
    table.add_column("set", no_wrap=True, min_width=len("extended_targets"))
    table.add_column("outcome", no_wrap=True, min_width=len("decompression_bomb"))
    table.add_column("images", justify="right", no_wrap=True, min_width=9)
    table.add_column("of planned", justify="right", no_wrap=True, min_width=10)
    table.add_column("example reason", overflow="fold", max_width=60)
    for st in statuses:
        name = f"[bold]{st.image_set}[/bold]"
        if st.planned is None:
            table.add_row(name, "[dim]planned[/dim]", "no plan", "", "")
        else:
            table.add_row(name, "[dim]planned[/dim]", f"{st.planned:,}", "", "")
        if not st.counts:
            table.add_row("", "[dim]not started[/dim]", "", "", "", end_section=True)
            continue
        for outcome, n in st.counts.items():
            style = "green" if outcome == Outcome.ok else "red"
            table.add_row(
                "", f"[{style}]{outcome}[/{style}]", f"{n:,}", _pct(n, st.planned), _short(st.examples.get(outcome, ""))
            )
        if st.remaining:
            table.add_row("", "[yellow]not yet done[/yellow]", f"{st.remaining:,}", _pct(st.remaining, st.planned), "")
        table.add_row("", "[dim]stored[/dim]", f"{st.stored_bytes / 1e9:,.2f} GB", "", "", end_section=True)
    return table
