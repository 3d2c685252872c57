"""`oiv4 features` and `oiv4 neighbors` on an object-store root (moto's S3 server on 127.0.0.1): the same bytes
as on a folder. The search memory-maps its vectors, so each remote shard is copied once into the local vector
cache, checked against the checksum `oiv4 features` recorded, and named by it; a shard whose bytes differ is
named in one line (exit 6) and never cached."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import fsspec
import numpy as np
import pytest

import oiv4
from oiv4.contracts.layout import LAYOUT
from support.tiny_weights import save_tiny_weights

OIV4 = str(Path(sys.executable).with_name("oiv4"))
MODEL = "tiny-cnn"
SETS = ("validation", "targets")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_weights(tmp_path_factory.mktemp("w") / "tiny.pth", seed=7)


def _env(endpoint: str, cache: Path) -> dict[str, str]:
    """The CLI finds the server the way it finds any S3-compatible store: the AWS variables."""
    return {
        **os.environ,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
        "OIV4_VECTOR_CACHE": str(cache),
    }


def _oiv4(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OIV4, *args], capture_output=True, text=True, env=env, timeout=300)


def _build_both(tiny_demo_root: Path, tmp_path: Path, s3_root, weights: Path) -> tuple[Path, str, dict, dict]:
    """The tiny demo on a folder and in a bucket, features of both sets and ground truth written on each."""
    local = shutil.copytree(tiny_demo_root, tmp_path / "local", ignore=shutil.ignore_patterns("report", "dedup"))
    remote, options = s3_root
    fs = fsspec.filesystem("s3", **options)
    fs.put(f"{local}/", remote.removeprefix("s3://") + "/", recursive=True)
    env = _env(options["endpoint_url"], tmp_path / "cache")
    for root in (str(local), remote):
        for image_set in SETS:
            done = _oiv4(env, "features", image_set, "--root", root, "--model", MODEL, "--weights", str(weights))
            assert done.returncode == 0, done.stderr
        done = _oiv4(env, "neighbors", "--root", root, "--queries", "validation", "--database", "targets",
                     "--model", MODEL, "--k", "5")  # fmt: skip
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return local, remote, options, env


def test_features_and_ground_truth_on_an_s3_root_are_the_bytes_of_a_folder_root(
    tiny_demo_root: Path, tmp_path: Path, s3_root, weights: Path
) -> None:
    local, remote, options, env = _build_both(tiny_demo_root, tmp_path, s3_root, weights)
    fs = fsspec.filesystem("s3", **options)
    bucket = remote.removeprefix("s3://")
    written = [LAYOUT.features_npy(MODEL, s, 0) for s in SETS] + [LAYOUT.features_metadata(MODEL, s, 0) for s in SETS]
    written.append(LAYOUT.neighbors_file(MODEL, "validation-targets"))
    for rel in written:
        assert fs.cat_file(f"{bucket}/{rel}") == (local / rel).read_bytes(), rel

    cache = tmp_path / "cache"
    copies = sorted(p.name for p in cache.iterdir())
    assert len(copies) == 2 and all(c.startswith("xxh3-") and c.endswith(".npy") for c in copies), copies
    stamps = {p: p.stat().st_mtime_ns for p in cache.iterdir()}
    again = _oiv4(env, "neighbors", "--root", remote, "--queries", "validation:5", "--database", "targets",
                  "--model", MODEL, "--k", "3")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert {p: p.stat().st_mtime_ns for p in cache.iterdir()} == stamps  # copied once, then reused

    os.environ["OIV4_VECTOR_CACHE"] = str(cache)
    try:
        theirs = oiv4.open(remote, **options)["targets"].features(MODEL)
        ours = oiv4.open(str(local))["targets"].features(MODEL)
        assert np.array_equal(np.asarray(theirs.array), np.asarray(ours.array))
        assert theirs.ids.to_pylist() == ours.ids.to_pylist()
    finally:
        del os.environ["OIV4_VECTOR_CACHE"]


def test_a_remote_shard_that_differs_from_its_checksum_is_named_in_one_line_and_never_cached(
    tiny_demo_root: Path, tmp_path: Path, s3_root, weights: Path
) -> None:
    _local, remote, options, env = _build_both(tiny_demo_root, tmp_path, s3_root, weights)
    cache = tmp_path / "cache"
    shutil.rmtree(cache)
    fs = fsspec.filesystem("s3", **options)
    npy = f"{remote.removeprefix('s3://')}/{LAYOUT.features_npy(MODEL, 'targets', 0)}"
    data = bytearray(fs.cat_file(npy))
    data[-1] ^= 0xFF  # same size, one vector changed: only the checksum can tell
    fs.pipe_file(npy, bytes(data))
    # A ground truth not written yet (the finished one is kept as it is, without reading any vector).
    done = _oiv4(env, "neighbors", "--root", remote, "--queries", "validation:7", "--database", "targets",
                 "--model", MODEL, "--k", "5")  # fmt: skip
    line = done.stderr.strip()
    assert done.returncode == 6 and len(line.splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"{remote}/{LAYOUT.features_npy(MODEL, 'targets', 0)}" in line and "hashes to xxh3:" in line, line
    recorded = json.loads(
        fs.cat_file(f"{remote.removeprefix('s3://')}/{LAYOUT.features_checksums(MODEL, 'targets', 0)}")
    )
    bad_copy = cache / recorded["npy"]["checksum"].replace(":", "-", 1)
    kept = sorted(p.name for p in cache.iterdir())
    assert not bad_copy.with_suffix(".npy").exists() and not [k for k in kept if k.endswith(".tmp")], kept
    assert len(kept) == 1  # the queries' good shard only

    fs.pipe_file(npy, bytes(data[:-8]))  # cut short: its header no longer fits its size, seen before any copy
    done = _oiv4(env, "neighbors", "--root", remote, "--queries", "validation:6", "--database", "targets",
                 "--model", MODEL, "--k", "5")  # fmt: skip
    line = done.stderr.strip()
    assert done.returncode == 6 and len(line.splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "img_emb_00000.npy is damaged" in line and "do not hold" in line, line
