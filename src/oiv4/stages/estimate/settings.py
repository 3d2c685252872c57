"""What `oiv4 estimate` is asked about: the machine, the feature model, and the ground-truth job."""

from __future__ import annotations

from dataclasses import dataclass

from oiv4.contracts.limits import above, at_least
from oiv4.contracts.setting import setting
from oiv4.contracts.vectors import DEFAULT_DTYPE, DEFAULT_K, DEFAULT_MEMORY_GB, DEFAULT_MODEL, VECTOR_DTYPES

#: The ground-truth job estimated when none is named: the one the published work uses, every validation
#: image as a query against the targets.
DEFAULT_QUERIES, DEFAULT_DATABASE = "validation", "targets"


@dataclass(frozen=True)
class EstimateSettings:
    """What the machine that will do the work looks like, and which features and ground truth to cost."""

    link_mbps: float | None = setting(
        None,
        help="Your download link in Mbit/s; wall time then includes the transfer.",
        flag="--link-mbps",
        default_text="not given",
    )
    workers: int | None = setting(
        None,
        help="Worker processes (one core each) that will do the work.",
        flag="--workers",
        default_text="one per core",
    )
    keep_tar: bool = setting(
        False,
        help="The archives will be kept beside their zips (archives --keep-tar).",
        flag="--keep-tar/--no-keep-tar",
    )
    model: str = setting(
        DEFAULT_MODEL,
        help="Feature model to cost `oiv4 features` and `oiv4 neighbors` for (oiv4 features --model).",
        flag="--model",
    )
    dtype: str = setting(
        DEFAULT_DTYPE,
        help="How the vectors still to write will be stored (oiv4 features --dtype).",
        flag="--dtype",
        choices=tuple(VECTOR_DTYPES),
    )
    neighbors_queries: str | None = setting(
        None,
        help="Ground truth to cost: its queries, SET or SET:N (oiv4 neighbors --queries).",
        flag="--neighbors-queries",
        default_text=f"{DEFAULT_QUERIES}, skipped if not planned",
    )
    neighbors_database: str | None = setting(
        None,
        help="Ground truth to cost: the sets searched, SET[,SET...] (oiv4 neighbors --database).",
        flag="--neighbors-database",
        default_text=f"{DEFAULT_DATABASE}, skipped if not planned",
    )
    k: int = setting(DEFAULT_K, help="Neighbours per query of that ground truth (oiv4 neighbors --k).", flag="--k")
    memory_gb: float = setting(
        DEFAULT_MEMORY_GB,
        help="Memory bound of that search (oiv4 neighbors --memory-gb): sets its passes.",
        flag="--memory-gb",
    )

    def __post_init__(self) -> None:
        above(self, 0, "link_mbps")
        at_least(self, 1, "workers")
        at_least(self, 1, "k")
        above(self, 0, "memory_gb")
