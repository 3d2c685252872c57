"""Plan settings and summary, and how bad metadata is reported: `RowProblem`s gathered into a `PlanError`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from oiv4.contracts.errors import PlanError as PlanError
from oiv4.contracts.limits import at_least
from oiv4.contracts.setting import setting
from oiv4.contracts.shards import DEFAULT_SHARD_ROWS

DEFAULT_TRAIN_SIZE = 1_200_000
MAX_REPORTED_ERRORS = 50
#: The longest record (its fields' UTF-8 bytes) planned: Python's `csv.field_size_limit()` default, so a
#: field the exact reader cannot read is always in a record this long. Real rows are well under 2 KB.
MAX_RECORD_BYTES = 131_072


@dataclass(frozen=True)
class RowProblem:
    """One bad data record: where it starts in its file and why it cannot be planned."""

    file: str
    line: int  # physical line number in the CSV (the header is line 1)
    record: int  # 0-based index among the well-formed data records, -1 for a malformed line
    image_id: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason} (ImageID {self.image_id!r})"


@dataclass(frozen=True)
class PlanSettings:
    """What `build_plan` computes; the first two also decide whether an existing plan is reused."""

    train_size: int = setting(
        DEFAULT_TRAIN_SIZE,
        help="How many candidates (in file order) form the train set; the rest are extended_targets.",
        flag="--train-size",
    )
    shard_rows: int = setting(
        DEFAULT_SHARD_ROWS, help="Rows per shard of the URL sets (the unit of work and of resume).", flag="--shard-rows"
    )
    skip_invalid: bool = setting(
        False,
        help="Plan without invalid rows (listed in plan/rejected.parquet) instead of failing.",
        flag="--skip-invalid/--no-skip-invalid",
    )
    force: bool = setting(
        False,
        help="Re-plan even if an up-to-date plan exists (changes what recorded work refers to).",
        flag="--force/--no-force",
    )

    def __post_init__(self) -> None:
        at_least(self, 0, "train_size")
        at_least(self, 1, "shard_rows")


@dataclass
class PlanSummary:
    """`plan/summary.json`: set sizes, the settings used and the inputs they were computed from."""

    counts: dict[str, int]
    train_size: int
    shard_rows: int
    inputs: dict[str, int]  # file name -> size in bytes, to know when a plan is stale
    rejected: int = 0
    candidates: int = 0
    subset_counts: dict[str, int] = field(default_factory=dict)
    reused: bool = False

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("reused")
        return json.dumps(d, indent=2, sort_keys=True)


def malformed(file_name: str, line: int, text: str, why: str = "not 12 fields") -> RowProblem:
    """A line that is not a record of 12 fields (or cannot be read as one)."""
    return RowProblem(file_name, line, -1, text.split(",", 1)[0][:40], f"malformed line ({why}): {text[:120]!r}")


def problem_message(problems: list[RowProblem], skippable: bool = True) -> str:
    """The error text: a count, the first problems by file and line, and what to do about them."""
    ordered = sorted(problems, key=lambda p: (p.file, p.line))
    advice = (
        "fix the file, or re-run with --skip-invalid to plan without them (they are listed in plan/rejected.parquet)."
        if skippable
        else "duplicate ImageIDs cannot be skipped (which row is right is unknowable): fix the file."
    )
    if len(ordered) == 1:  # the common case gets one line
        return f"{ordered[0]}; nothing was planned: {advice}"
    head = "\n".join(f"  {p}" for p in ordered[:MAX_REPORTED_ERRORS])
    more = len(problems) - MAX_REPORTED_ERRORS
    tail = f"\n  ... and {more:,} more" if more > 0 else ""
    return f"{len(problems):,} invalid metadata row(s); nothing was planned:\n{head}{tail}\n{advice[0].upper()}{advice[1:]}"
