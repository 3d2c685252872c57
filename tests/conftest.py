"""Fixtures shared across test modules: a moto S3 server on 127.0.0.1 and fresh buckets on it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import boto3
import pytest

from support.moto import moto_s3


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
