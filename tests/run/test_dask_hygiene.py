"""`--executor dask` without `--scheduler` starts a LocalCluster: its worker processes must not outlive the
main process, however it ends (SIGKILL, SIGTERM, SIGINT sent to the main process alone). Real processes, a
real mirror, real signals: the same checks tests/run/test_process_hygiene.py makes for the local pool.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from oiv4_mirror import UniverseSpec
from support.fetch_env import copy_root, planned_root
from support.paths import SRC
from support.process_marks import marked_processes, wait_for

#: Slow answers (latency) so the fetch is still running when the test signals it.
SLOW = UniverseSpec(seed=4, n_images=160, megapixels=(0.02, 0.05), misbehaviour_fraction=0.0, latency_seconds=0.4)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory):
    with planned_root(tmp_path_factory.mktemp("plan"), SLOW, train_size=120, shard_rows=30) as (_mirror, root):
        yield root


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_the_local_clusters_processes_die_with_the_main_process(template, tmp_path, signum: signal.Signals) -> None:
    root = tmp_path / "root"
    copy_root(template, root)
    marker = f"OIV4_TEST_MARK={uuid.uuid4().hex}"
    env = {**os.environ, "PYTHONPATH": f"{SRC}:{os.environ.get('PYTHONPATH', '')}", marker.split("=")[0]: marker}
    cmd = [sys.executable, "-m", "oiv4", "fetch", "train", "--root", str(root), "--executor", "dask",
           "--workers", "2", "--concurrency", "2", "--flush-seconds", "0.3", "--no-progress", "--allow-private-networks"]  # fmt: skip
    # A session of its own: the signal reaches the main process only, as `kill <pid>` from a supervisor does.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        wait_for(
            lambda: (
                proc.poll() is not None
                or (len(marked_processes(marker)) >= 3 and any(root.glob("ledger/train/*/part-*")))
            ),
            120,
            "Dask workers recording rows",
        )
        assert proc.poll() is None, proc.stderr.read().decode()
        workers = [p for p in marked_processes(marker) if p != proc.pid]
        assert len(workers) >= 2, [_cmdline(p) for p in workers]
        os.kill(proc.pid, signum)
        if signum == signal.SIGKILL:
            proc.wait(timeout=30)
        else:
            _out, err = proc.communicate(timeout=90)
            assert proc.returncode == 130, err.decode()
            assert "Traceback" not in err.decode(), err.decode()
        # Deadline only so a failure ends the test; the check is that nothing is left at all.
        wait_for(lambda: not marked_processes(marker), 30, "no cluster process left behind")
    finally:
        for pid in marked_processes(marker):  # only if the assertion above failed: leave no process for the next test
            os.kill(pid, signal.SIGKILL)
