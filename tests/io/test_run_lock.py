"""One run per root: a second live run is refused naming the holder; a dead holder is taken over, visibly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oiv4.contracts.errors import RootLockedError
from oiv4.io.run_lock import LOCK_NAME, RunLock, read_holder
from oiv4.io.storage import Storage

HOLDER = """
import sys, time
from oiv4.io.run_lock import RunLock
from oiv4.io.storage import Storage
lock = RunLock(Storage(sys.argv[1]), "oiv4 fetch train").acquire()
print("held", flush=True)
time.sleep(60)
"""


def _start_holder(root: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(root)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_live_run_is_refused_with_a_message_naming_the_holder(tmp_path: Path) -> None:
    proc = _start_holder(tmp_path)
    try:
        with pytest.raises(RootLockedError) as err:
            RunLock(Storage(str(tmp_path)), "oiv4 build").acquire()
        assert f"pid {proc.pid}" in str(err.value) and "oiv4 fetch train" in str(err.value)
        holder = read_holder(Storage(str(tmp_path)))
        assert holder is not None and holder.pid == proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_a_holder_killed_with_sigkill_is_taken_over_and_the_takeover_is_recorded(tmp_path: Path) -> None:
    proc = _start_holder(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    storage = Storage(str(tmp_path))
    assert read_holder(storage) is None  # the kernel dropped the flock with the process
    with RunLock(storage, "oiv4 build") as lock:
        assert lock.took_over is not None and lock.took_over.pid == proc.pid
        record = json.loads((tmp_path / LOCK_NAME).read_text())
        assert record["pid"] == os.getpid() and record["took_over_from"]["pid"] == proc.pid
    # Released cleanly: the next run finds nothing to take over.
    with RunLock(storage, "oiv4 build") as again:
        assert again.took_over is None


def test_the_same_process_can_run_again_after_releasing(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    with RunLock(storage, "oiv4 plan"):
        assert read_holder(storage) is not None
    assert read_holder(storage) is None
    with RunLock(storage, "oiv4 plan"):
        pass


def test_object_store_roots_get_a_lease_that_a_second_run_respects_and_a_dead_one_loses(
    s3_root: tuple[str, dict[str, str]],
) -> None:
    root, options = s3_root
    first = RunLock(Storage(root, options), "oiv4 fetch train", lease_s=1.5).acquire()
    with pytest.raises(RootLockedError, match="oiv4 fetch train"):
        RunLock(Storage(root, options), "oiv4 build", lease_s=1.5).acquire()
    # The first run "dies": its heartbeat stops and the lease runs out.
    first._stop.set()
    first._heartbeat.join()
    time.sleep(1.6)
    second = RunLock(Storage(root, options), "oiv4 build", lease_s=1.5).acquire()
    try:
        assert second.took_over is not None and second.took_over.token == first.holder.token
    finally:
        second.release()
    assert read_holder(Storage(root, options)) is None
