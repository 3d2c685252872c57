"""`oiv4 features` reports while it runs, off a terminal as plain lines (or JSON lines) every --log-every seconds,
from the features ledger: this run's images done of those it set out to do, the share with a vector, the rate
and an ETA. A resumed run counts only the images left; those a killed run recorded are reported as already done.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oiv4.contracts.layout import LAYOUT
from support.tiny_weights import save_tiny_weights

OIV4 = str(Path(sys.executable).with_name("oiv4"))
MODEL = "tiny-cnn"
LINE = re.compile(r"^features (\w+): ([\d,]+)/([\d,]+) \(([\d.]+)%\) ok ([\d.]+)% ([\d,.]+) images/s ETA \S+$")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_weights(tmp_path_factory.mktemp("w") / "tiny.pth", seed=3)


@pytest.fixture
def root(tiny_demo_root: Path, tmp_path: Path) -> Path:
    return shutil.copytree(tiny_demo_root, tmp_path / "root", ignore=shutil.ignore_patterns("report", "dedup"))


def _cmd(root: Path, weights: Path, image_set: str, *extra: str) -> list[str]:
    return [OIV4, "features", image_set, "--root", str(root), "--model", MODEL, "--weights", str(weights), *extra]


def _ledger_rows(root: Path, image_set: str) -> pa.Table:
    """Every row of the set's features ledger (compacted files and parts)."""
    folder = root / LAYOUT.features_ledger_dir(MODEL, image_set)
    files = sorted(folder.rglob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else pa.table({"row": pa.array([], pa.int64())})


def test_progress_lines_off_a_terminal_count_this_runs_images_up_to_the_ledgers_total(
    root: Path, weights: Path
) -> None:
    done = subprocess.run(
        _cmd(root, weights, "train", "--log-every", "0.01", "--batch-size", "4"),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert done.returncode == 0, done.stderr
    lines = [m for m in (LINE.match(x) for x in done.stderr.splitlines()) if m]
    assert lines, done.stderr  # a stderr that is not a terminal gets plain progress lines
    stored = _ledger_rows(root, "train").num_rows
    counts = [(int(m[2].replace(",", "")), int(m[3].replace(",", ""))) for m in lines]
    assert all(m[1] == "train" for m in lines) and {total for _, total in counts} == {stored}
    assert [d for d, _ in counts] == sorted(d for d, _ in counts)  # never goes back
    assert counts[-1] == (stored, stored) and lines[-1][4] == "100.0"  # the last line is the run's end
    assert "MB/s" not in done.stderr  # features downloads nothing
    assert f"features: train ({MODEL}, 16-d): {stored:,} vectors" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_run_resumed_after_kill_9_counts_only_the_images_left_and_the_rest_as_already_done(
    root: Path, weights: Path
) -> None:
    parts = root / LAYOUT.features_ledger_parts_dir(MODEL, "train", 0)
    first = subprocess.Popen(
        _cmd(root, weights, "train", "--batch-size", "1", "--loader-workers", "0"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while not (parts.exists() and any(parts.glob("part-*.parquet"))) and first.poll() is None:
        assert time.monotonic() < deadline, "no batch was recorded"
        time.sleep(0.005)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    recorded = _ledger_rows(root, "train").num_rows
    assert first.returncode == -signal.SIGKILL and 0 < recorded < 40, (first.returncode, recorded)

    resumed = subprocess.run(
        _cmd(root, weights, "train", "--log-every", "0.01", "--log-format", "json"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    events = [json.loads(x) for x in resumed.stderr.splitlines()]  # JSON logs: stderr holds JSON lines only
    progress = [e for e in events if e["event"] == "progress"]
    summary = json.loads(resumed.stdout)
    stored = summary["vectors"] + summary["already"]
    assert summary["event"] == "summary" and summary["command"] == "features" and summary["set"] == "train"
    assert summary["already"] == recorded and stored == len({*_ledger_rows(root, "train")["row"].to_pylist()})
    assert progress and {e["total"] for e in progress} == {stored - recorded}
    assert progress[-1]["done"] == stored - recorded and progress[-1]["mb_per_s"] is None
