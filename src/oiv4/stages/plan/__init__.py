"""Stage 2: compute the four sets exactly as the seed notebook does, as Parquet manifests.

    targets          = the boxable file's rows (CVDF archives)
    validation       = full-file rows with Subset == validation (CVDF archive)
    train            = full-file rows with Subset == train and ImageID not boxable, in FILE order,
                       the first `train_size` (default 1,200,000)
    extended_targets = the rest of those candidates

The full file is 3.1 GB / 9.2M rows, so it is streamed in record batches and never held whole in memory.
Modules, by job:

- `problems`: settings, summary, `PlanError` / `RowProblem` and the error message;
- `sources`: reading a CSV into batches of 12 string columns: DuckDB (local, fast), pyarrow (remote),
  and the exact Python `csv` reader that handles any bytes; plus the independent record count that
  decides whether a fast reader can be trusted;
- `checks`: vectorised row validation and typing, ImageID keys;
- `locate`: the slow paths that find line numbers for problems (errors only);
- `build`: `build_plan`, which ties them together.

No input crashes the plan or loses a row: every data record of each CSV ends planned, or as a
line-numbered `RowProblem` (an error, or a row of `plan/rejected.parquet` with `--skip-invalid`).
"""

from oiv4.contracts.errors import PlanError
from oiv4.stages.plan.build import build_plan, load_summary
from oiv4.stages.plan.problems import DEFAULT_TRAIN_SIZE, PlanSettings, PlanSummary, RowProblem

__all__ = [
    "DEFAULT_TRAIN_SIZE",
    "PlanError",
    "PlanSettings",
    "PlanSummary",
    "RowProblem",
    "build_plan",
    "load_summary",
]
