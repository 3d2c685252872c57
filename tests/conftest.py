"""Fixtures shared across test modules (a moto S3 server, fresh buckets, the tiny demo build) and the tiers.

Every test of a file placed "fast" in support/tiers.py (and not listed there as slow) gets the `fast` marker:
`make test-fast` runs `pytest -m fast`. The order of the run balances the two xdist workers by measured cost.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from support import tiers
from support.demo_root import shared_tiny_root
from support.moto import moto_s3


def pytest_configure(config: pytest.Config) -> None:
    """Give Ctrl-C back to the processes the tests start, when pytest itself was started with SIGINT ignored.

    A shell starts a background job (`make test &`, `nohup`) with SIGINT ignored, and an ignored signal stays
    ignored across exec: the CLIs the tests interrupt would never see their Ctrl-C (three interrupt tests failed
    that way). A handled signal is reset to the default on exec, so handling it here restores it for children.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the fast subset, then order whole files into two halves of equal measured cost.

    `pytest -n 2 --dist worksteal` hands each worker one half of the queue by count and lets an idle worker take
    the other's not-yet-started tail. Each half starts with its costliest files (no long test starts last), the
    costly files are split between the halves by their seconds and the unmeasured ones by count, and a file's
    tests stay together in their own order, so a module fixture is built once.
    """
    for item in items:
        if tiers.is_fast(item.path.name, getattr(item, "originalname", item.name)):
            item.add_marker(pytest.mark.fast)
    by_file: dict[Path, list[pytest.Item]] = {}
    for item in items:
        by_file.setdefault(item.path, []).append(item)
    halves: tuple[list[Path], list[Path]] = ([], [])
    cost, count = [0.0, 0.0], [0, 0]
    for path in sorted(by_file, key=lambda p: -tiers.file_cost(p.name)):
        seconds = tiers.file_cost(path.name)
        side = (cost[0] > cost[1]) if seconds else (count[0] > count[1])
        halves[side].append(path)
        cost[side] += seconds
        count[side] += len(by_file[path])
    items[:] = [item for half in halves for path in half for item in by_file[path]]


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """moto's standalone S3 server, a real HTTP server on 127.0.0.1 (one per test module)."""
    with moto_s3() as endpoint:
        yield endpoint


@pytest.fixture
def s3_root(moto_endpoint: str) -> tuple[str, dict[str, str]]:
    """A fresh bucket per test: `s3://<bucket>/run` plus the storage options that reach it."""
    bucket = f"oiv4-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3", endpoint_url=moto_endpoint, aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1"
    ).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/run", {"endpoint_url": moto_endpoint, "key": "x", "secret": "x"}


@pytest.fixture(scope="session")
def tiny_demo_root(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The tiny demo build (support/demo_root.py), made once per run and shared by the xdist workers.

    Read it or copy it; never change it in place (every module that uses it gets the same folder).
    """
    shared = tmp_path_factory.getbasetemp()
    return shared_tiny_root(shared if worker_id == "master" else shared.parent)
