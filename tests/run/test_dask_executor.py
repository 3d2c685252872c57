"""The Dask executor on a real LocalCluster (scheduler + worker processes), with a shard function that
records real ledger rows, so what is checked is what users rely on: every manifest row ends in the
ledger exactly once, even when a worker is SIGKILLed in the middle of a shard.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import dask
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client, LocalCluster

from oiv4.contracts.errors import DaskSetupError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import LEDGER_SCHEMA, ImageSet
from oiv4.contracts.shards import shard_bounds
from oiv4.io.ledger import read_set, read_shard
from oiv4.io.ledger_write import LedgerBuffer, now_utc
from oiv4.io.storage import Storage
from oiv4.run.executor import ExecutorSettings, run_shards
from oiv4.stages.base import ShardResult, ShardTask
from support.dask_cluster import two_worker_cluster

PID_RE = re.compile(r"pid (\d+)")


@dataclass(frozen=True)
class RecordSettings:
    """How the test shard behaves: a pause per row keeps a shard running long enough to be killed."""

    row_delay_s: float = 0.0
    fail_first_attempts: int = 0  # raise on this many first attempts per shard (counted in marker files)


def record_shard(task: ShardTask[RecordSettings]) -> ShardResult[None]:
    """A real shard in miniature: skip rows the ledger has, write one file per row, record a ledger row.

    Top-level so Dask pickles it by reference; the worker pid goes into each row's reason so the test
    can see who did the work (and that nothing ran on the client).
    """
    settings, storage = task.settings, task.storage
    if settings.fail_first_attempts:
        tried = len(storage.glob(f"attempts/{task.key}-*"))
        storage.write_bytes(f"attempts/{task.key}-{tried}", b"")
        if tried < settings.fail_first_attempts:
            raise RuntimeError(f"{task.key}: deliberate failure on attempt {tried + 1}")
    finished = set(read_shard(storage, task.image_set, task.shard).column("row").to_pylist())
    ledger = LedgerBuffer(storage, task.image_set, task.shard, flush_rows=1)
    result: ShardResult[None] = ShardResult(task.image_set, task.shard)
    started = time.monotonic()
    for row in range(task.start, task.stop):
        if row in finished:
            result.skipped += 1
            continue
        time.sleep(settings.row_delay_s)
        image_id = f"{row:016x}"
        storage.write_bytes(LAYOUT.image(task.image_set, image_id), f"image {row}".encode())
        ledger.record(
            image_id=image_id,
            row=row,
            outcome="ok",
            reason=f"recorded by pid {os.getpid()}",
            location=LAYOUT.image(task.image_set, image_id),
            started_at=now_utc(),
        )
        result.outcomes["ok"] += 1
    ledger.close()
    result.elapsed_s = time.monotonic() - started
    return result


def make_tasks(
    root: str, n_rows: int, shard_rows: int, settings: RecordSettings, **storage_options
) -> list[ShardTask[RecordSettings]]:
    storage = Storage(root, storage_options)
    return [
        ShardTask("fetch", ImageSet.train, i, start, stop, storage, settings)
        for i, (start, stop) in enumerate(shard_bounds(n_rows, shard_rows))
    ]


def raw_ledger_rows(storage: Storage) -> pa.Table:
    """Every row of every compacted shard file, *without* the latest-row-wins dedupe of `read_set`."""
    files = storage.glob("ledger/train/shard-*.parquet")
    tables = [pq.read_table(storage.open(rel), schema=LEDGER_SCHEMA) for rel in files]
    return pa.concat_tables(tables) if tables else LEDGER_SCHEMA.empty_table()


def assert_complete_and_duplicate_free(storage: Storage, n_rows: int) -> None:
    raw = raw_ledger_rows(storage)
    counts = Counter(raw.column("row").to_pylist())
    assert sorted(counts) == list(range(n_rows)), "every manifest row must be in the ledger"
    assert {c for c in counts.values()} == {1}, f"duplicated rows: {[r for r, c in counts.items() if c > 1]}"
    assert storage.glob("ledger/train/shard-*.parts/*") == [], "finished shards leave no parts behind"
    assert len(storage.glob("train/images/*/*.jpg")) == n_rows


def test_dask_local_cluster_runs_each_shard_once_on_worker_processes(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "root")
    storage.write_bytes("plan/summary.json", b"{}")  # the root exists, as it does after `oiv4 plan`
    tasks = make_tasks(storage.root, n_rows=24, shard_rows=4, settings=RecordSettings())
    seen: list[int] = []

    results = run_shards(tasks, record_shard, ExecutorSettings(kind="dask", workers=2), lambda r: seen.append(r.shard))

    assert sorted(seen) == sorted(r.shard for r in results) == list(range(6))
    assert sum(r.outcomes["ok"] for r in results) == 24
    assert_complete_and_duplicate_free(storage, 24)
    pids = {int(PID_RE.search(reason).group(1)) for reason in read_set(storage, "train").column("reason").to_pylist()}
    assert os.getpid() not in pids, "shards must run on worker processes, not on the client"
    assert len(pids) <= 2


@pytest.fixture
def cluster():
    with two_worker_cluster() as running:
        yield running


def running_shard_writer(storage: Storage, shard_rows: int) -> tuple[int, int] | None:
    """(shard, pid) of a shard that has recorded some rows but is far from done, read from the ledger."""
    table = read_set(storage, "train")
    by_shard: dict[int, list[str]] = {}
    for shard, reason in zip(table.column("shard").to_pylist(), table.column("reason").to_pylist(), strict=True):
        by_shard.setdefault(shard, []).append(reason)
    for shard, reasons in sorted(by_shard.items()):
        if 2 <= len(reasons) <= shard_rows - 4 and not storage.exists(LAYOUT.ledger_shard("train", shard)):
            return shard, int(PID_RE.search(reasons[-1]).group(1))
    return None


def run_in_thread(fn, *args):
    """Run `fn(*args)` on a thread; returns (thread, box) where box holds the result or the exception."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["result"] = fn(*args)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def kill_worker_mid_shard(client: Client, storage: Storage, shard_rows: int, thread: threading.Thread) -> int:
    """Wait until a worker is half-way through a shard, SIGKILL that worker process; returns the shard."""
    worker_pids = set(client.run(os.getpid).values())
    for _ in range(600):  # bounded: ~60 s at most, far more than the run needs
        assert thread.is_alive(), "the run finished before a worker could be killed: slow the shard down"
        found = running_shard_writer(storage, shard_rows)
        if found and found[1] in worker_pids:
            os.kill(found[1], signal.SIGKILL)
            return found[0]
        time.sleep(0.1)
    raise AssertionError("no shard was seen running")


def test_killed_worker_shard_is_rerun_and_skips_the_rows_it_finished(tmp_path: Path, cluster) -> None:
    cluster, client = cluster
    storage = Storage(tmp_path / "root")
    storage.write_bytes("plan/summary.json", b"{}")
    shard_rows, n_rows = 20, 80
    tasks = make_tasks(storage.root, n_rows, shard_rows, RecordSettings(row_delay_s=0.05))
    settings = ExecutorSettings(kind="dask", scheduler=cluster.scheduler_address)

    thread, box = run_in_thread(run_shards, tasks, record_shard, settings)
    killed_shard = kill_worker_mid_shard(client, storage, shard_rows, thread)
    thread.join(timeout=120)

    assert "error" not in box, box.get("error")
    results: list[ShardResult] = box["result"]
    assert sorted(r.shard for r in results) == [0, 1, 2, 3], "one result per shard, the killed one included"
    rerun = next(r for r in results if r.shard == killed_shard)
    assert rerun.skipped >= 2, "the re-run shard must skip the rows recorded before the kill"
    assert rerun.skipped + rerun.outcomes["ok"] == shard_rows
    assert_complete_and_duplicate_free(storage, n_rows)
    writers = {
        PID_RE.search(reason).group(1)
        for shard, reason in zip(
            read_set(storage, "train").column("shard").to_pylist(),
            read_set(storage, "train").column("reason").to_pylist(),
            strict=True,
        )
        if shard == killed_shard
    }
    assert len(writers) == 2, "the killed shard was finished by a second worker process"


def test_shard_that_raises_is_retried_by_dask(tmp_path: Path, cluster) -> None:
    cluster, _ = cluster
    storage = Storage(tmp_path / "root")
    storage.write_bytes("plan/summary.json", b"{}")
    tasks = make_tasks(storage.root, 6, 3, RecordSettings(fail_first_attempts=2))

    results = run_shards(tasks, record_shard, ExecutorSettings(kind="dask", scheduler=cluster.scheduler_address))

    assert sum(r.outcomes["ok"] for r in results) == 6
    assert len(storage.glob("attempts/*")) == 2 * 3, "each shard ran three times: two failures and a success"
    assert_complete_and_duplicate_free(storage, 6)


def test_shard_failing_every_retry_raises_its_error(tmp_path: Path, cluster) -> None:
    cluster, _ = cluster
    storage = Storage(tmp_path / "root")
    storage.write_bytes("plan/summary.json", b"{}")
    tasks = make_tasks(storage.root, 3, 3, RecordSettings(fail_first_attempts=99))
    settings = ExecutorSettings(kind="dask", scheduler=cluster.scheduler_address, max_pool_restarts=1)

    with pytest.raises(RuntimeError, match="deliberate failure on attempt 2"):
        run_shards(tasks, record_shard, settings)


def test_workers_that_cannot_see_the_root_fail_before_any_shard_runs(tmp_path: Path, cluster) -> None:
    cluster, _ = cluster
    missing = tmp_path / "not-mounted-here"
    tasks = make_tasks(str(missing), 3, 3, RecordSettings())

    with pytest.raises(DaskSetupError, match="is not a folder on this machine"):
        run_shards(tasks, record_shard, ExecutorSettings(kind="dask", scheduler=cluster.scheduler_address))
    assert not missing.exists()


def test_unreachable_scheduler_is_a_clear_error(tmp_path: Path) -> None:
    tasks = make_tasks(str(tmp_path), 3, 3, RecordSettings())
    settings = ExecutorSettings(kind="dask", scheduler="tcp://127.0.0.1:9")  # discard port: nothing listens

    with (
        dask.config.set({"distributed.comm.timeouts.connect": "2s"}),
        pytest.raises(DaskSetupError, match="dask scheduler"),
    ):
        run_shards(tasks, record_shard, settings)


def test_scheduler_without_workers_is_a_clear_error(tmp_path: Path) -> None:
    tasks = make_tasks(str(tmp_path), 3, 3, RecordSettings())
    with (
        LocalCluster(n_workers=0, processes=True, dashboard_address=":0") as empty,
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        pytest.raises(DaskSetupError, match="no Dask worker joined"),
    ):
        run_shards(tasks, record_shard, ExecutorSettings(scheduler=empty.scheduler_address))
