"""`oiv4 neighbors` on Dask: every query block is one task on the cluster's worker processes, which read the
memory-mapped shards of the root and write the block's part file there; the ground truth is the same bytes as
when the command's own process runs every block, and the search's counts come back summed."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from distributed import Client, get_task_stream
from test_neighbors_executors import MODEL, tied_features
from typer.testing import CliRunner

from oiv4.cli import app
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.io.storage import Storage
from oiv4.run.executor import ExecutorSettings
from oiv4.run.neighbors import NeighborsSettings, faiss_threads, run_neighbors
from oiv4.run.neighbors_part import PartRunner, PartSettings
from oiv4.stages.base import ShardTask
from oiv4.stages.neighbors import SearchStats, plan_sizes
from support.dask_cluster import two_worker_cluster

#: Blocks of 16 queries: 38 parts, enough to spread over the workers.
SETTINGS = NeighborsSettings(MODEL, "validation", None, ("targets", "validation"), 20, "l2", 0.5, part_queries=16)
FILE = f"neighbors/{MODEL}/validation-targets+validation.parquet"


@pytest.fixture
def cluster():
    with two_worker_cluster() as running:
        yield running


def _in_this_process(root: Path) -> tuple[bytes, SearchStats]:
    tied_features(root, 3000, 600)
    stats = SearchStats()
    run_neighbors(Storage(str(root)), SETTINGS, stats)
    return (root / FILE).read_bytes(), stats


def test_blocks_sent_to_a_running_scheduler_run_on_its_workers_and_give_the_same_bytes(tmp_path, cluster) -> None:
    local, client = cluster
    expected, expected_stats = _in_this_process(tmp_path / "one")
    tied_features(tmp_path / "dask", 3000, 600)
    stats = SearchStats()
    with get_task_stream(client) as tasks:
        rel, reused = run_neighbors(
            Storage(str(tmp_path / "dask")), SETTINGS, stats, ExecutorSettings(scheduler=local.scheduler_address)
        )
    assert reused == 0 and rel == FILE
    assert (tmp_path / "dask" / FILE).read_bytes() == expected
    assert expected_stats.widened > 0 and stats == expected_stats
    blocks = [t for t in tasks.data if str(t["key"]).startswith("neighbors-validation-")]
    assert len(blocks) == 600 // 16 + 1  # one task per block of 16 queries
    assert len({t["key"] for t in blocks}) == len(blocks)
    assert {t["worker"] for t in blocks} == set(client.scheduler_info()["workers"])  # both workers took blocks


def test_cli_executor_dask_starts_its_own_cluster_of_workers_and_gives_the_same_bytes(tmp_path, caplog) -> None:
    expected, _ = _in_this_process(tmp_path / "one")
    root = tmp_path / "dask"
    tied_features(root, 3000, 600)
    args = ["neighbors", "--root", str(root), "--queries", "validation", "--database", "targets,validation"]
    args += ["--k", "20", "--memory-gb", "0.5", "--part-queries", "16", "--executor", "dask", "--workers", "2"]
    with caplog.at_level(logging.INFO, logger="oiv4.run.dask_executor"):
        r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "started a LocalCluster of 2 worker processes" in caplog.text
    assert (root / FILE).read_bytes() == expected
    again = CliRunner().invoke(app, args)  # finished: nothing is searched again, the file is left as it is
    assert again.exit_code == 0 and (root / FILE).read_bytes() == expected


def _faiss_threads_here() -> int:
    import faiss

    return faiss.omp_get_max_threads()


def _faiss_threads_of_tasks(client: Client) -> list[int]:
    """faiss's OpenMP threads in each worker's task thread (the setting is per thread), sorted."""
    workers = sorted(client.scheduler_info()["workers"])
    futures = [client.submit(_faiss_threads_here, workers=[w], allow_other_workers=False, pure=False) for w in workers]
    return sorted(f.result() for f in futures)


def test_a_part_gives_faiss_the_threads_planned_for_it_on_a_dask_worker(tmp_path, cluster) -> None:
    _, client = cluster
    # A nanny starts each worker with OMP_NUM_THREADS=1: faiss would search on one core whatever the machine.
    assert _faiss_threads_of_tasks(client) == [1, 1]
    tied_features(tmp_path, 300, 40)
    settings = NeighborsSettings(MODEL, "validation", None, ("targets",), 5)
    part = PartSettings(settings, plan_sizes(settings.memory_gb, 8, 2, 5, 0, 300), threads=3)
    task = ShardTask("neighbors", ImageSet("validation"), 0, 0, 40, Storage(str(tmp_path)), part)
    result = client.submit(PartRunner(), task, pure=False).result()
    assert result.shard == 0 and (tmp_path / LAYOUT.neighbors_part(MODEL, settings.file_name, 0)).exists()
    assert _faiss_threads_of_tasks(client) == [1, 3]  # the worker that ran it, the other not
    # What run_neighbors plans: this machine's cores shared by the workers it starts; a running cluster's
    # workers are left to their own environment.
    cores = len(os.sched_getaffinity(0))
    assert faiss_threads(ExecutorSettings(kind="dask", workers=1)) == cores
    assert faiss_threads(ExecutorSettings(kind="local", workers=2)) == max(1, cores // 2)
    assert faiss_threads(ExecutorSettings(scheduler="tcp://127.0.0.1:8786")) is None
