"""Kill -9 a running `oiv4 fetch` at random moments, resume, and end exactly where an uninterrupted run ends."""

from __future__ import annotations

import dataclasses
import io
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from oiv4.contracts.errors import COMPLETE_WITH_FAILURES
from oiv4_mirror import Misbehaviour
from support.fetch_env import SPEC, copy_root, files_under, ledger_rows, planned_root, temp_files

#: More rows, mostly healthy (kill windows should land in the middle of real work), no slow trickles.
KILL_SPEC = dataclasses.replace(
    SPEC,
    seed=5,
    n_images=200,
    megapixels=(0.4, 1.6),
    misbehaviour_fraction=0.15,
    misbehaviours=tuple(m.value for m in Misbehaviour if m not in (Misbehaviour.none, Misbehaviour.slow_timeout)),
)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with planned_root(tmp_path_factory.mktemp("plan"), KILL_SPEC, train_size=20, shard_rows=42) as (m, template):
        yield m, template


def _cmd(root: Path, layout: str) -> list[str]:
    return [
        sys.executable, "-m", "oiv4", "fetch", "extended_targets", "--root", str(root), "--no-progress", "--allow-private-networks",
        "--layout", layout, "--workers", "2", "--deadline", "2", "--attempts", "3", "--backoff", "0.1",
    ]  # fmt: skip


def _assert_no_partial_file_at_a_final_path(root: Path) -> None:
    for p in (root / "extended_targets").rglob("*.jpg"):
        if "staging" in p.parts or p.parent.name != p.name[:2]:
            continue
        with Image.open(io.BytesIO(p.read_bytes())) as im:
            im.load()  # raises on a truncated file


@pytest.mark.parametrize(("layout", "kills"), [("folder", 3), ("zip", 1)])
def test_resume_after_kill_9_ends_byte_identical_to_an_uninterrupted_run(env, tmp_path, layout, kills):
    _, template = env
    killed = copy_root(template, tmp_path / "killed")
    clean = copy_root(template, tmp_path / "clean")
    rng = random.Random(f"{layout}-{kills}")

    for _ in range(kills):
        proc = subprocess.Popen(
            _cmd(Path(killed.root), layout),
            start_new_session=True,  # its own process group: kill the CLI *and* its pool workers, like a lost node
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(rng.uniform(1.5, 4.0))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        _assert_no_partial_file_at_a_final_path(Path(killed.root))
        status = subprocess.run(
            [sys.executable, "-m", "oiv4", "status", "--root", killed.root], capture_output=True, text=True
        )
        assert status.returncode == 0 and "Traceback" not in status.stderr  # works on a half-written ledger

    final = subprocess.run(_cmd(Path(killed.root), layout), capture_output=True, text=True, timeout=300)
    assert final.returncode == COMPLETE_WITH_FAILURES, final.stderr  # every row has its outcome; some are failures
    # The uninterrupted run shows its live progress (rich draws its last frame even without a terminal).
    whole_cmd = [a for a in _cmd(Path(clean.root), layout) if a != "--no-progress"]
    whole = subprocess.run(whole_cmd, capture_output=True, text=True, timeout=300)
    assert whole.returncode == COMPLETE_WITH_FAILURES, whole.stderr  # every row has its outcome; some are failures
    assert "images/s" in whole.stderr and "MB/s" in whole.stderr and "ETA" in whole.stderr

    got, want = files_under(Path(killed.root)), files_under(Path(clean.root))
    assert got.keys() == want.keys()
    assert [k for k in want if got[k] != want[k]] == []  # every stored byte identical
    rows_killed, rows_clean = ledger_rows(killed, "extended_targets"), ledger_rows(clean, "extended_targets")
    assert {(r["image_id"], r["outcome"]) for r in rows_killed} == {(r["image_id"], r["outcome"]) for r in rows_clean}
    assert len(rows_killed) == len(rows_clean) == len({r["image_id"] for r in rows_clean})
    # Rows recovered from a file found at its final path record the same checksum, and a phash, too.
    clean_by_id = {r["image_id"]: r for r in rows_clean}
    assert [r["image_id"] for r in rows_killed if r["checksum"] != clean_by_id[r["image_id"]]["checksum"]] == []
    assert all(r["phash"] is not None for r in rows_killed if r["outcome"] == "ok")
    assert sum(r["outcome"] == "ok" for r in rows_clean) > 60
    assert temp_files(Path(killed.root)) == []
    assert not (Path(killed.root) / "extended_targets" / "staging").exists()
    assert not list((Path(killed.root) / "ledger").rglob("*.parts"))  # every shard finished and compacted
