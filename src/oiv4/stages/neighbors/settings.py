"""`NeighborsSettings`: what `oiv4 neighbors` computes, each default and help text written once."""

from __future__ import annotations

from dataclasses import dataclass

from oiv4.contracts.limits import above, at_least
from oiv4.contracts.setting import setting
from oiv4.contracts.vectors import DEFAULT_K, DEFAULT_MEMORY_GB, DEFAULT_MODEL
from oiv4.stages.neighbors.distances import METRICS


@dataclass(frozen=True)
class NeighborsSettings:
    """One ground-truth job: which vectors are searched for which queries, and how."""

    model: str = setting(DEFAULT_MODEL, help="Feature model (as given to oiv4 features).", flag="--model")
    queries: str = setting("", cli=False, help="The query set.", why="parsed by the command from --queries SET[:N]")
    sample: int | None = setting(
        None, cli=False, help="A seeded sample of this many queries.", why="parsed from --queries SET:N"
    )
    database: tuple[str, ...] = setting(
        (), cli=False, help="The sets searched, in tie order.", why="parsed by the command from --database"
    )
    k: int = setting(DEFAULT_K, help="Neighbours per query.", flag="--k")
    metric: str = setting("l2", help="l2 (squared), ip or cosine.", flag="--metric", choices=METRICS)
    memory_gb: float = setting(
        DEFAULT_MEMORY_GB,
        help="Memory bound of each process that searches (this one, or each worker: --workers N holds about N "
        "times this).",
        flag="--memory-gb",
    )
    exclude_duplicates: bool = setting(
        False,
        help="Never return a database image that oiv4 dedup found to be a near-copy of the query (run oiv4 dedup "
        "first); the output name ends in .nodup.",
        flag="--exclude-duplicates/--no-exclude-duplicates",
    )
    seed: int = setting(0, help="Seed of the query sample.", flag="--seed")
    part_queries: int | None = setting(
        None,
        help="At most this many queries per block: more, smaller blocks keep more workers busy, each reading the "
        "database again.",
        flag="--part-queries",
        default_text="as many as --memory-gb allows",
    )

    def __post_init__(self) -> None:
        at_least(self, 1, "k", "sample", "part_queries")
        above(self, 0, "memory_gb")
        at_least(self, 0, "seed")

    @property
    def file_name(self) -> str:
        """The output's name under neighbors/<model>/: queries (and sample), database, metric, exclusions."""
        q = self.queries if self.sample is None else f"{self.queries}.{self.sample}s{self.seed}"
        name = f"{q}-{'+'.join(self.database)}"
        if self.metric != "l2":
            name += f".{self.metric}"
        if self.exclude_duplicates:
            name += ".nodup"
        return name
