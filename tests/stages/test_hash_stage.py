"""`oiv4 hash`: sets stored before fetch recorded phash/checksum get them, resumably, in every layout."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from oiv4.contracts.errors import UsageError
from oiv4.contracts.schema import REWRITE_OWNERS
from oiv4.io.ledger import read_set
from oiv4.io.storage import Storage
from oiv4.run.executor import ExecutorSettings
from oiv4.run.fetch import fetch_set
from oiv4.run.hash import hash_set
from oiv4.stages.hash import HashSettings
from support.fetch_env import EXECUTOR, SETTINGS, SPEC, copy_root, ledger_rows, planned_root

HASH_SPEC = dataclasses.replace(SPEC, seed=44, n_images=60, misbehaviour_fraction=0.2, misbehaviours=("not_found",))


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    with planned_root(tmp_path_factory.mktemp("plan"), HASH_SPEC, train_size=12, shard_rows=8) as (_, tmp):
        yield tmp


def _forget_hashes(root: Path) -> None:
    """Rewrite every ledger file as fetch wrote it before the checksum/phash columns existed."""
    for path in (root / "ledger").rglob("*.parquet"):
        table = pq.read_table(path)
        pq.write_table(table.drop_columns(["checksum", "phash", "hashed_at", "hash_s"]), path)


@pytest.mark.parametrize("layout", ["folder", "zip", "webdataset"])
def test_hash_records_the_same_checksum_and_phash_fetch_would_have_and_a_rerun_does_nothing(template, tmp_path, layout):
    storage = copy_root(template, tmp_path)
    fetch_set(storage, "train", dataclasses.replace(SETTINGS, layout=layout), EXECUTOR)
    fetched = {r["image_id"]: r for r in ledger_rows(storage, "train")}
    _forget_hashes(tmp_path)
    assert read_set(storage, "train")["phash"].null_count == len(fetched)

    summary = hash_set(storage, "train", HashSettings(batch_rows=3), ExecutorSettings(kind="thread", workers=2))
    ok = [i for i, r in fetched.items() if r["outcome"] == "ok"]
    assert summary.hashed == len(ok) and summary.unreadable == 0 and len(ok) < len(fetched)
    after = {r["image_id"]: r for r in ledger_rows(storage, "train")}
    assert sorted(after) == sorted(fetched)  # one row per image still
    for i, r in after.items():
        if r["outcome"] != "ok":
            assert r["phash"] is None and r["checksum"] is None
            continue
        assert r["checksum"] == fetched[i]["checksum"]  # exactly the bytes fetch stored
        # decoded at reduced scale from the stored JPEG vs fetch's hash of the pixels it encoded: a bit or two
        assert int(np.bitwise_count(np.uint64(r["phash"]) ^ np.uint64(fetched[i]["phash"]))) <= 4
        # everything but what hash owns is exactly as fetch recorded it, its `started_at` included
        assert {k: v for k, v in r.items() if k not in REWRITE_OWNERS["hash"]} == {
            k: v for k, v in fetched[i].items() if k not in REWRITE_OWNERS["hash"]
        }
        assert r["hashed_at"] is not None and r["hash_s"] >= 0
    assert not list((tmp_path / "ledger").rglob("*.parts"))  # compacted

    again = hash_set(storage, "train")
    assert again.shards_run == 0 and again.hashed == 0 and again.already == len(ok)
    # the shards' recorded output settings were echoed, not replaced: fetch still resumes them
    assert fetch_set(storage, "train", dataclasses.replace(SETTINGS, layout=layout), EXECUTOR).done == 0


def test_hash_of_a_set_without_a_ledger_says_to_build_it_first(tmp_path):
    with pytest.raises(UsageError, match="no ledger"):
        hash_set(Storage(str(tmp_path)), "validation")


def test_cli_dedup_asks_for_hash_first_then_prints_the_headline(template, tmp_path):
    import json
    import subprocess
    import sys

    storage = copy_root(template, tmp_path)
    fetch_set(storage, "train", SETTINGS, EXECUTOR)
    _forget_hashes(tmp_path)
    cmd = [sys.executable, "-m", "oiv4"]
    before = subprocess.run([*cmd, "dedup", "--root", str(tmp_path)], capture_output=True, text=True)
    assert before.returncode == 3 and "oiv4 hash" in before.stderr and "Traceback" not in before.stderr
    hashed = subprocess.run([*cmd, "hash", "--root", str(tmp_path), "--workers", "1"], capture_output=True, text=True)
    assert hashed.returncode == 0 and "train: hashed" in hashed.stderr, hashed.stderr
    after = subprocess.run([*cmd, "dedup", "--root", str(tmp_path), "--json"], capture_output=True, text=True)
    assert after.returncode == 0, after.stderr
    summary = json.loads(after.stdout)
    assert summary["headline"].startswith("0 train images duplicate a target or validation image")
    assert (tmp_path / "dedup" / "pairs.parquet").exists()
