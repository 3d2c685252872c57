"""`oiv4 neighbors` on the local process pool: each query block is a task, and the ground truth is the same bytes
as when this process runs every block, the search's counts summed over the workers; a kill -9 of the command
leaves no worker behind and the re-run on the pool keeps the finished blocks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from typer.testing import CliRunner

from oiv4.cli import app
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.io.storage import Storage
from oiv4.run.executor import ExecutorSettings
from oiv4.run.neighbors import NeighborsSettings, run_neighbors
from oiv4.run.neighbors_part import PartRunner, PartSettings
from oiv4.stages.base import ShardTask
from oiv4.stages.neighbors import SearchStats, exact_distances, plan_sizes
from support.feature_shards import write_features

MODEL = "vgg16-fc2"


def tied_features(root: Path, targets: int, queries: int, dim: int = 8) -> tuple[np.ndarray, list[str]]:
    """Vectors of -1/0/1: ties everywhere, so some queries are widened (near-ties at the cut), yet in 8-d few
    exact copies, so a query's own vector would be its first neighbour if it were not excluded.

    Returns the vectors and ids of targets then validation, in database order for `--database targets,validation`.
    """
    rng = np.random.default_rng(5)
    t, v = (rng.integers(-1, 2, (n, dim)).astype(np.float16) for n in (targets, queries))
    ids = write_features(root, MODEL, "targets", t, 700) + write_features(root, MODEL, "validation", v, 300)
    return np.concatenate([t, v]), ids


def brute_force_ids(x: np.ndarray, ids: list[str], query_ids: list[str], k: int) -> tuple[list[str], list[float]]:
    """Neighbour ids and l2 distances of each query in turn, itself excluded, ties in database order."""
    at = {image_id: i for i, image_id in enumerate(ids)}
    got_ids, got_dist = [], []
    for qid in query_ids:
        d = exact_distances(x[at[qid]][None, :], x, "l2")
        d[at[qid]] = np.inf
        order = np.lexsort((np.arange(len(x)), d))[:k]
        got_ids += [ids[i] for i in order]
        got_dist += d[order].tolist()
    return got_ids, got_dist


def test_two_pool_workers_give_the_bytes_of_one_process_and_the_summed_search_counts(tmp_path: Path) -> None:
    # A seeded sample, drawn again in every worker: each must take the same queries for its positions.
    settings = NeighborsSettings(
        MODEL, "validation", 550, ("targets", "validation"), 20, "l2", 0.5, seed=7, part_queries=16
    )
    out = {}
    stats = {"one": SearchStats(), "pool": SearchStats()}
    executors = {"one": None, "pool": ExecutorSettings(kind="local", workers=2)}
    for name, executor in executors.items():
        x, ids = tied_features(tmp_path / name, 3000, 600)
        rel, reused = run_neighbors(Storage(str(tmp_path / name)), settings, stats[name], executor)
        assert reused == 0
        out[name] = (tmp_path / name / rel).read_bytes()
    assert out["pool"] == out["one"]
    got = pq.read_table(tmp_path / "pool" / rel)
    queries = got["query_id"].to_pylist()[::20]
    assert len(set(queries)) == 550 and set(queries) <= set(ids[3000:])
    assert (got["neighbor_id"].to_pylist(), got["distance"].to_pylist()) == brute_force_ids(x, ids, queries, 20)
    # Counted in the workers and sent back with each block's result: lost, they would read 0.
    assert stats["one"].widened > 0
    assert stats["pool"] == stats["one"]


def _spawned_workers(pid: int) -> list[int]:
    """PIDs of the pool's worker processes among `pid`'s children (not multiprocessing's resource tracker)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    workers = []
    for child in map(int, children):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.append(child)
        except OSError:
            continue
    return workers


def test_kill_9_on_the_pool_leaves_no_worker_and_the_rerun_keeps_finished_blocks_byte_identical(
    tmp_path: Path,
) -> None:
    tied_features(tmp_path, 10000, 1000, dim=4)  # 4-d: blocks fast enough for a short test
    base = [sys.executable, "-m", "oiv4", "neighbors", "--root", str(tmp_path), "--queries", "validation"]
    args = [*base, "--database", "targets", "--k", "20", "--memory-gb", "0.5", "--part-queries", "16"]
    parts = tmp_path / "neighbors" / MODEL / "validation-targets.parts"
    proc = subprocess.Popen([*args, "--workers", "2"], stderr=subprocess.DEVNULL)
    workers: list[int] = []
    while proc.poll() is None and not (parts.exists() and len(list(parts.glob("part-*.parquet"))) >= 3):
        workers = _spawned_workers(proc.pid) or workers
        time.sleep(0.01)
    workers = _spawned_workers(proc.pid) or workers
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(workers) == 2  # the blocks ran in two worker processes, not in the command's own
    deadline = time.monotonic() + 20
    while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [w for w in workers if Path(f"/proc/{w}").exists()]  # they died with the command
    done = sorted(p.name for p in parts.glob("part-*.parquet"))
    assert done  # killed after some blocks were finished and before the final file

    again = subprocess.run([*args, "--workers", "2"], check=True, capture_output=True, text=True)
    assert f"({len(done)} finished query blocks kept)" in " ".join(again.stderr.split())
    out = tmp_path / "neighbors" / MODEL / "validation-targets.parquet"
    resumed = out.read_bytes()
    assert not parts.exists() or not list(parts.glob("part-*.parquet"))
    out.unlink()
    subprocess.run(args, check=True, stderr=subprocess.DEVNULL)  # uninterrupted, in the command's own process
    assert out.read_bytes() == resumed


def test_a_worker_killed_past_the_restarts_allowed_is_one_line_exit_7_and_the_rerun_finishes(tmp_path: Path) -> None:
    tied_features(tmp_path, 6000, 600, dim=4)
    base = [sys.executable, "-m", "oiv4", "neighbors", "--root", str(tmp_path), "--queries", "validation"]
    args = [*base, "--database", "targets", "--k", "20", "--memory-gb", "0.5", "--part-queries", "16"]
    parts = tmp_path / "neighbors" / MODEL / "validation-targets.parts"
    proc = subprocess.Popen([*args, "--workers", "2", "--max-pool-restarts", "0"], stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and not (parts.exists() and list(parts.glob("part-*.parquet"))):
        time.sleep(0.01)
    workers = _spawned_workers(proc.pid)
    assert workers, "the run ended before a worker could be killed"
    os.kill(workers[0], signal.SIGKILL)  # as the OOM killer would
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 7, err
    assert err.strip().splitlines() == [
        "oiv4 neighbors: worker processes kept dying (out of memory? killed?); finished query blocks are kept: "
        "re-run to resume, with fewer --workers or a lower --memory-gb"
    ]
    kept = len(list(parts.glob("part-*.parquet")))
    again = subprocess.run([*args, "--workers", "2"], check=True, capture_output=True, text=True)
    assert f"({kept} finished query blocks kept)" in " ".join(again.stderr.split())
    out = tmp_path / "neighbors" / MODEL / "validation-targets.parquet"
    resumed = out.read_bytes()
    out.unlink()
    subprocess.run(args, check=True, stderr=subprocess.DEVNULL)
    assert out.read_bytes() == resumed


def test_a_block_retried_after_its_file_was_written_is_not_searched_again(tmp_path: Path) -> None:
    # What a Dask retry meets when the worker died between the rename and reporting back.
    tied_features(tmp_path, 300, 40)
    settings = NeighborsSettings(MODEL, "validation", None, ("targets",), 5, part_queries=16)
    task = ShardTask(
        "neighbors",
        ImageSet("validation"),
        1,
        16,
        32,
        Storage(str(tmp_path)),
        PartSettings(settings, plan_sizes(settings.memory_gb, 8, 2, 5, 0, 300)),
    )
    part = tmp_path / LAYOUT.neighbors_part(MODEL, settings.file_name, 1)
    first = PartRunner()(task)
    written = (part.read_bytes(), part.stat().st_mtime_ns)
    again = PartRunner()(task)
    assert (first.skipped, again.skipped) == (0, 16)
    assert (part.read_bytes(), part.stat().st_mtime_ns) == written
    assert pq.read_table(part)["query_id"].to_pylist()[::5] == [f"b{i:015x}" for i in range(16, 32)]


def test_bad_executor_options_are_one_line_and_write_nothing(tmp_path: Path) -> None:
    tied_features(tmp_path, 50, 10)
    base = ["neighbors", "--root", str(tmp_path), "--queries", "validation", "--database", "targets", "--k", "3"]
    cases = {
        ("--executor", "threads"): "'threads' is not one of 'local', 'dask'",
        ("--workers", "0"): "--workers must be >= 1, got 0",
        ("--max-pool-restarts", "-1"): "--max-pool-restarts must be >= 0, got -1",
    }
    for extra, message in cases.items():
        r = CliRunner().invoke(app, [*base, *extra])
        assert r.exit_code == 2, (extra, r.output)
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("oiv4 neighbors: ") and message in lines[0], r.output
    assert not (tmp_path / "neighbors").exists()
