"""End to end on a real Dask LocalCluster: `fetch_set(..., ExecutorSettings(kind="dask"))` against the mirror,
into a local folder and into moto's S3 server, with one worker process SIGKILLed in the middle of a shard.

What must hold afterwards: every manifest row is in the ledger exactly once, with the outcome the mirror
says a correct fetcher records; the killed shard was re-run and skipped the rows it had finished; and the
ledger could be read (`oiv4 status`'s numbers) while the cluster was writing it.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from distributed import Client, LocalCluster
from test_dask_executor import run_in_thread

from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import LEDGER_SCHEMA
from oiv4.contracts.transfer import TransferSettings
from oiv4.io.ledger import read_set
from oiv4.io.storage import Storage
from oiv4.run.executor import ExecutorSettings
from oiv4.run.fetch import fetch_set
from oiv4.stages.fetch import FETCH_TRANSFER, FetchSettings, FetchSummary, HttpSettings
from oiv4.stages.metadata import MetadataSettings, fetch_metadata
from oiv4.stages.plan import PlanSettings, build_plan
from oiv4.stages.status import collect_status
from oiv4_mirror import MirrorHandle, UniverseSpec, start_mirror
from support.dask_cluster import two_worker_cluster

SHARD_ROWS = 8
TRAIN_SIZE = 40  # 5 shards over 2 workers

#: Small pictures, misbehaviours that end quickly, and a per-answer delay that (with one download in
#: flight) keeps each shard running for a second or so: long enough to be killed half-way.
SPEC = UniverseSpec(
    seed=41,
    n_images=110,
    megapixels=(0.1, 0.4),
    misbehaviour_fraction=0.3,
    misbehaviours=("placeholder", "not_found", "md5_mismatch", "truncated", "wrong_content_type", "decompression_bomb"),
    latency_seconds=0.12,
)
#: Ledger parts every 0.1 s, so progress is visible mid-shard. (Not flush_rows=1: that also exposes a race in
#: the shard's flush -- a queued part write cancelled with the periodic flusher -- reported to the fetch owner.)
SETTINGS = FetchSettings(
    http=HttpSettings(concurrency=1),
    transfer=replace(FETCH_TRANSFER, allow_private_networks=True, attempts=2, backoff_s=0.05, deadline_s=5.0),
    flush_seconds=0.1,
)


@pytest.fixture(scope="module")
def mirror() -> Iterator[MirrorHandle]:
    with start_mirror(SPEC) as handle:
        yield handle


@pytest.fixture(scope="module")
def planned(mirror: MirrorHandle, tmp_path_factory: pytest.TempPathFactory) -> Storage:
    """A root with metadata and plan, made by the real stages; tests copy its plan."""
    storage = Storage(tmp_path_factory.mktemp("planned"))
    fetch_metadata(
        storage,
        MetadataSettings(base_url=mirror.metadata_base_url, transfer=TransferSettings(allow_private_networks=True)),
    )
    build_plan(storage, PlanSettings(train_size=TRAIN_SIZE, shard_rows=SHARD_ROWS))
    return storage


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[LocalCluster, Client]]:
    with two_worker_cluster() as running:
        yield running


def destination(kind: str, tmp_path: Path, moto_endpoint: str) -> Storage:
    if kind == "folder":
        return Storage(tmp_path / "root")
    bucket = f"oiv4-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3", endpoint_url=moto_endpoint, aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1"
    ).create_bucket(Bucket=bucket)
    return Storage(f"s3://{bucket}/open_images", {"endpoint_url": moto_endpoint, "key": "x", "secret": "x"})


def executing_shards(dask_worker) -> list[str]:
    """Runs on each worker (`client.run`): the keys of the tasks it is executing right now."""
    return [ts.key for ts in dask_worker.state.executing]


def kill_a_worker_mid_shard(client: Client, storage: Storage, thread) -> int:
    """SIGKILL the worker process running a shard that has recorded some rows but not most; returns the shard.

    Meanwhile reads the ledger the way `oiv4 status` does, while the workers write it.
    """
    pids = client.run(os.getpid)
    for _ in range(600):  # bounded: at most ~60 s
        assert thread.is_alive(), "the fetch finished before a worker could be killed"
        done = Counter(read_set(storage, "train").column("shard").to_pylist())
        (status,) = collect_status(storage, ["train"])
        assert status.planned == TRAIN_SIZE and status.recorded <= TRAIN_SIZE
        for addr, keys in client.run(executing_shards).items():
            for key in keys:
                shard = int(str(key).split("-")[2])
                if 2 <= done[shard] <= SHARD_ROWS - 3 and addr in pids:
                    os.kill(pids[addr], signal.SIGKILL)
                    return shard
        time.sleep(0.05)
    raise AssertionError("no shard was seen half-way")


def compacted_rows(storage: Storage) -> pa.Table:
    """Every row of every compacted shard file, without `read_set`'s latest-row-wins dedupe."""
    files = storage.glob("ledger/train/shard-*.parquet")
    return pa.concat_tables([pq.read_table(storage.open(rel), schema=LEDGER_SCHEMA) for rel in files])


@pytest.mark.parametrize("kind", ["folder", "s3"])
def test_dask_fetch_survives_a_killed_worker_with_a_complete_duplicate_free_ledger(
    kind: str, tmp_path: Path, mirror: MirrorHandle, planned: Storage, cluster, moto_endpoint: str
) -> None:
    cluster, client = cluster
    storage = destination(kind, tmp_path, moto_endpoint)
    for rel in planned.glob("plan/*"):  # workers read the plan from the destination itself
        storage.write_bytes(rel, planned.read_bytes(rel))
    executor = ExecutorSettings(kind="dask", scheduler=cluster.scheduler_address)

    thread, box = run_in_thread(fetch_set, storage, "train", SETTINGS, executor)
    killed = kill_a_worker_mid_shard(client, storage, thread)
    thread.join(timeout=120)

    assert "error" not in box, repr(box.get("error"))
    summary: FetchSummary = box["result"]
    assert summary.remaining == 0
    rows = compacted_rows(storage)
    counts = Counter(rows.column("row").to_pylist())
    assert sorted(counts) == list(range(TRAIN_SIZE)) and set(counts.values()) == {1}, "each row exactly once"
    for shard, row in zip(rows.column("shard").to_pylist(), rows.column("row").to_pylist(), strict=True):
        assert shard * SHARD_ROWS <= row < (shard + 1) * SHARD_ROWS
    expected = {i: mirror.universe.expected(i) for i in rows.column("image_id").to_pylist()}
    got = dict(zip(rows.column("image_id").to_pylist(), rows.column("outcome").to_pylist(), strict=True))
    assert got == expected
    # The killed shard's re-run skipped what was recorded before the kill: this run's results miss those rows.
    assert summary.done < TRAIN_SIZE, f"shard {killed} must not have been redone from scratch"
    assert storage.glob("ledger/train/shard-*.parts/*") == []
    for location in rows.filter(pc.equal(rows.column("outcome"), "ok")).column("location").to_pylist():
        assert storage.exists(location)
    assert storage.glob(f"{LAYOUT.images_dir('train')}/*/*.jpg") == sorted(
        rows.filter(pc.equal(rows.column("outcome"), "ok")).column("location").to_pylist()
    )
