"""An unattended fetch: workers die with the main process, SIGTERM stops like Ctrl-C, one run per root,
and progress off a terminal is plain (or JSON) lines. Real processes, a real mirror, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from oiv4.cli import app
from oiv4.io.run_lock import RunLock
from oiv4.io.storage import Storage
from oiv4_mirror import UniverseSpec
from support.fetch_env import copy_root, planned_root
from support.paths import SRC
from support.process_marks import marked_processes, wait_for

#: Slow answers (latency) so a fetch is still running when the test signals it.
SLOW = UniverseSpec(seed=3, n_images=160, megapixels=(0.02, 0.05), misbehaviour_fraction=0.0, latency_seconds=0.4)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    with planned_root(tmp_path_factory.mktemp("plan"), SLOW, train_size=120, shard_rows=30) as (mirror, template):
        yield mirror, template


def _start_fetch(root: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    marker = f"OIV4_TEST_MARK={uuid.uuid4().hex}"
    env = {**os.environ, "PYTHONPATH": f"{SRC}:{os.environ.get('PYTHONPATH', '')}", marker.split("=")[0]: marker}
    cmd = [sys.executable, "-m", "oiv4", "fetch", "train", "--root", str(root), "--allow-private-networks", "--workers", "2",
           "--concurrency", "2", "--flush-seconds", "0.3", *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    return proc, marker


def _workers_running(proc: subprocess.Popen, marker: str, root: Path) -> bool:
    """Workers are in the middle of shards: they have recorded rows (not merely started up)."""
    return len([p for p in marked_processes(marker) if p != proc.pid]) >= 2 and any(root.glob("ledger/train/*/part-*"))


def test_kill_9_of_the_main_process_leaves_no_worker_and_closes_the_pipe(env, tmp_path) -> None:
    _mirror, template = env
    root = tmp_path / "root"
    copy_root(template, root)
    proc, marker = _start_fetch(root)
    wait_for(lambda: _workers_running(proc, marker, root) or proc.poll() is not None, 60, "workers recording rows")
    assert proc.poll() is None, proc.stderr.read().decode()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # PDEATHSIG kills at once; without it the workers would finish their shards (seconds here, hours for real).
    wait_for(lambda: not marked_processes(marker), 2, "the workers to die with their parent")
    eof = threading.Event()
    threading.Thread(target=lambda: (proc.stdout.read(), eof.set()), daemon=True).start()
    assert eof.wait(10), "a process still holds the caller's pipe open"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_stops_like_ctrl_c_with_exit_130_and_a_resume_hint(env, tmp_path, signum) -> None:
    _mirror, template = env
    root = tmp_path / "root"
    copy_root(template, root)
    proc, marker = _start_fetch(root, "--no-progress")
    wait_for(lambda: _workers_running(proc, marker, root) or proc.poll() is not None, 60, "workers recording rows")
    proc.send_signal(signum)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err.decode()
    # The resume hint and nothing else: no traceback, and no multiprocessing warning about the pool's semaphores
    # (the pool is shut down, so the process exits normally and multiprocessing cleans up after it).
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "run the same command again" in lines[0], lines
    wait_for(lambda: not marked_processes(marker), 15, "no process left behind")


def test_a_second_run_on_a_held_root_is_refused_naming_the_holder_and_status_shows_it(env, tmp_path) -> None:
    _mirror, template = env
    root = tmp_path / "root"
    copy_root(template, root)
    with RunLock(Storage(str(root)), "oiv4 fetch train"):
        refused = CliRunner().invoke(app, ["plan", "--root", str(root)])
        status = CliRunner().invoke(app, ["status", "--root", str(root)])
    assert refused.exit_code == 9, refused.output
    assert f"pid {os.getpid()}" in refused.output and "oiv4 fetch train" in refused.output
    assert len(refused.output.strip().splitlines()) == 1
    assert status.exit_code == 0 and "a run is going" in status.output, status.output
    after = CliRunner().invoke(app, ["status", "--root", str(root)])
    assert "a run is going" not in after.output


def test_off_a_terminal_progress_is_json_lines_and_the_summary_a_line_of_its_own(env, tmp_path) -> None:
    _mirror, template = env
    root = tmp_path / "root"
    copy_root(template, root)
    proc, marker = _start_fetch(root, "--log-format", "json", "--log-every", "0.5")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode in (0, 10), err.decode()
    events = [json.loads(line) for line in err.decode().splitlines()]  # every stderr line is one JSON object
    progress = [e for e in events if e["event"] == "progress"]
    assert len(progress) >= 2 and progress[-1]["done"] == progress[-1]["total"] > 0
    assert {"ok_pct", "images_per_s", "mb_per_s", "eta_s", "top_failure"} <= set(progress[0])
    summary = json.loads(out.decode().splitlines()[-1])
    assert summary["event"] == "summary" and summary["remaining"] == 0
    assert not marked_processes(marker)


def test_off_a_terminal_text_progress_is_plain_lines_ending_in_newlines(env, tmp_path) -> None:
    _mirror, template = env
    root = tmp_path / "root"
    copy_root(template, root)
    proc, _marker = _start_fetch(root, "--log-every", "0.5")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode in (0, 10), err.decode()
    lines = err.decode().splitlines()
    assert any(line.startswith("fetch train: ") and " images/s " in line and "ETA" in line for line in lines), lines
    assert err.decode().endswith("\n") and "\x1b[" not in err.decode()
    assert out.decode().lstrip().startswith("fetch train:")  # the summary table starts on its own line
