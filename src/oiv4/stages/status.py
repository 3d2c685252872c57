"""`oiv4 status`: how every set stands, by outcome and failure kind, read from the ledgers (also mid-run).

A shard that is only its compacted file (a finished shard) is counted from the summary in that file's
footer, and a shard that is still only parts whose rows provably do not overlap (a fetch mid-run, see
`oiv4.io.ledger_summary`) from the summaries in its parts' footers: without reading a row, the same numbers,
exactly. The rest (a compacted file with parts written since, overlapping parts, files written before they
carried a summary) is counted by one DuckDB aggregate over the resolved ledger (`oiv4.io.sql.ledger_relation`,
latest row per image wins). Failures are grouped by (outcome, reason kind) (`oiv4.io.reason_kind`, stored in
each row when it is written): one line per kind, whatever URL or number each reason names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from oiv4.contracts.schema import ImageSet, Outcome
from oiv4.io.ledger import LedgerFiles, list_ledger
from oiv4.io.ledger_summary import OutcomeTotals, read_summaries, summed_shard
from oiv4.io.manifest import read_plan_summary
from oiv4.io.reason_kind import stored_or_computed_sql
from oiv4.io.sql import attach_filesystem, ledger_relation, only_shards
from oiv4.io.storage import Storage

if TYPE_CHECKING:
    import duckdb


@dataclass(frozen=True)
class FailureKind:
    """One kind of failure of a set: its outcome, its reason with URLs/numbers taken out, how many, an example."""

    outcome: str
    kind: str
    count: int
    example: str  # the full reason of the first row (in plan order) of this kind


@dataclass
class SetStatus:
    """One set: planned rows, recorded outcomes, and an example reason per failure outcome and kind."""

    image_set: str
    planned: int | None  # None when there is no plan yet
    counts: dict[str, int] = field(default_factory=dict)  # outcome -> rows, most common first
    examples: dict[str, str] = field(default_factory=dict)  # outcome -> one reason
    bytes_downloaded: int = 0
    stored_bytes: int = 0
    #: Rows recorded for planned images (ledger `row >= 0`). Archive members that are not in the plan
    #: (refused hostile names, unplanned images) get negative rows: counted, but they cover nothing planned.
    recorded_planned: int = 0
    #: Failure kinds (every outcome but ok), most common first.
    kinds: list[FailureKind] = field(default_factory=list)
    #: Shards counted from footers (compacted files or parts; how the numbers were obtained; both exact).
    shards_from_footers: int = 0

    @property
    def recorded(self) -> int:
        return sum(self.counts.values())

    @property
    def ok(self) -> int:
        return self.counts.get(Outcome.ok.value, 0)

    @property
    def remaining(self) -> int | None:
        return None if self.planned is None else max(0, self.planned - self.recorded_planned)

    def to_json(self) -> dict[str, object]:
        """Everything, full reasons included (`oiv4 status --json`)."""
        return {
            "set": self.image_set,
            "planned": self.planned,
            "counts": self.counts,
            "remaining": self.remaining,
            "recorded_planned": self.recorded_planned,
            "bytes_downloaded": self.bytes_downloaded,
            "stored_bytes": self.stored_bytes,
            "failure_kinds": [k.__dict__ for k in self.kinds],
        }


#: The only ledger columns status reads.
STATUS_COLUMNS = ("row", "outcome", "reason", "reason_kind", "bytes_downloaded", "stored_bytes")


def _row_level(
    con: duckdb.DuckDBPyConnection, storage: Storage, files: LedgerFiles
) -> dict[tuple[str, str], OutcomeTotals]:
    led = ledger_relation(con, storage, files.image_set, STATUS_COLUMNS, files=files)
    rows = led.aggregate(
        f"outcome, {stored_or_computed_sql()} AS kind, count(*), coalesce(sum(bytes_downloaded), 0), "
        'coalesce(sum(stored_bytes), 0), count(*) FILTER (WHERE "row" >= 0), min("row"), '
        "arg_min(coalesce(reason, ''), \"row\")",
        "outcome, kind",
    ).fetchall()
    return {
        (o, k): OutcomeTotals(int(n), int(d), int(st), int(p), int(m), ex or "") for o, k, n, d, st, p, m, ex in rows
    }


def collect_status(storage: Storage, sets: list[ImageSet | str] | None = None) -> list[SetStatus]:
    """The status of `sets` (default: all four) under `storage`."""
    planned: dict[str, int] = (read_plan_summary(storage) or {}).get("counts", {})
    import duckdb

    con = duckdb.connect()
    attach_filesystem(con, storage)
    out = []
    for s in sets or list(ImageSet):
        s = ImageSet(s)
        st = SetStatus(s.value, planned.get(s.value))
        totals, rest = _from_footers(storage, s, st)
        if rest is not None:
            for k, t in _row_level(con, storage, rest).items():
                totals[k] = totals.get(k, OutcomeTotals()).plus(t)
        _fill(st, totals)
        out.append(st)
    con.close()
    return out


def _from_footers(
    storage: Storage, s: ImageSet, st: SetStatus
) -> tuple[dict[tuple[str, str], OutcomeTotals], LedgerFiles | None]:
    """Totals of the shards countable from footers (compacted file only, or parts only that provably do not
    overlap), and the listing of the other shards (None: none)."""
    files = list_ledger(storage, s)
    if files.empty:
        return {}, None
    finished = [sh for sh in files.shards if sh not in files.parts]
    candidates = [sh for sh in files.shards if sh not in files.compacted]
    rels = [files.compacted[sh] for sh in finished] + [r for sh in candidates for r in files.parts[sh]]
    try:
        summaries = read_summaries(storage, rels)
    except FileNotFoundError:  # a shard compacted since the listing: count everything row by row
        return {}, list_ledger(storage, s)
    totals: dict[tuple[str, str], OutcomeTotals] = {}
    done: set[int] = set()
    for sh, summary in zip(finished, summaries, strict=False):
        if summary is None:  # written before compacted files carried a summary
            continue
        done.add(sh)
        for k, t in summary.groups.items():
            totals[k] = totals.get(k, OutcomeTotals()).plus(t)
    at = len(finished)
    for sh in candidates:
        n = len(files.parts[sh])
        summed = summed_shard(summaries[at : at + n])
        at += n
        if summed is None:
            continue
        done.add(sh)
        for k, t in summed.items():
            totals[k] = totals.get(k, OutcomeTotals()).plus(t)
    st.shards_from_footers = len(done)
    rest = [sh for sh in files.shards if sh not in done]
    return totals, (only_shards(files, rest) if rest else None)


def _fill(st: SetStatus, totals: dict[tuple[str, str], OutcomeTotals]) -> None:
    by_outcome: dict[str, OutcomeTotals] = {}
    for (o, _k), t in totals.items():
        by_outcome[o] = by_outcome.get(o, OutcomeTotals()).plus(t)
    counts = {o: t.count for o, t in by_outcome.items()}
    st.counts = dict(sorted(counts.items(), key=lambda kv: (kv[0] != Outcome.ok, -kv[1], kv[0])))
    st.bytes_downloaded = sum(t.bytes_downloaded for t in by_outcome.values())
    st.stored_bytes = sum(t.stored_bytes for t in by_outcome.values())
    st.recorded_planned = sum(t.planned for t in by_outcome.values())
    # The example is the first row in plan order with that outcome.
    st.examples = {o: t.reason for o, t in by_outcome.items() if o != Outcome.ok}
    kinds = [FailureKind(o, k, t.count, t.reason) for (o, k), t in totals.items() if o != Outcome.ok]
    st.kinds = sorted(kinds, key=lambda f: (-f.count, f.outcome, f.kind))
