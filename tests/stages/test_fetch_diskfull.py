"""A full disk stops the run with a clear message instead of burning through the rows; freeing space resumes it.

The root is a 1 MB tmpfs mounted in a private user+mount namespace (`unshare -rm`, no privileges needed), so
ENOSPC is real, not simulated.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from support.fetch_env import planned_root

DUMP = textwrap.dedent(
    """
    import json, sys
    from oiv4.io.ledger import read_set
    from oiv4.io.storage import Storage
    rows = read_set(Storage(sys.argv[1]), "extended_targets").to_pylist()
    print(json.dumps([[r["image_id"], r["outcome"], r["reason"]] for r in rows]))
    """
)

SCRIPT = textwrap.dedent(
    """
    set -u
    R=$1; T=$2; OUT=$3; PY=$4
    mount -t tmpfs -o size=2m tmpfs "$R" || exit 90
    cp -r "$T/plan" "$R/plan"
    FETCH="$PY -m oiv4 fetch extended_targets --root $R --allow-private-networks --no-progress --workers 1 --deadline 2 --attempts 3 --backoff 0.1 --concurrency 4"
    $FETCH --min-free-mb 0 > "$OUT/out1" 2> "$OUT/err1"; echo $? > "$OUT/rc1"
    $PY -c "$DUMP" "$R" > "$OUT/ledger1.json"
    mount -o remount,size=400m "$R"   # free space
    $FETCH > "$OUT/out2" 2> "$OUT/err2"; echo $? > "$OUT/rc2"
    $PY -c "$DUMP" "$R" > "$OUT/ledger2.json"
    """
)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with planned_root(tmp_path_factory.mktemp("plan"), train_size=10, shard_rows=26) as (mirror, template):
        yield mirror, template


def test_disk_full_aborts_the_run_clearly_and_a_rerun_after_freeing_space_finishes(env, tmp_path):
    mirror, template = env
    root, out = tmp_path / "root", tmp_path / "out"
    root.mkdir()
    out.mkdir()
    unshare = shutil.which("unshare")
    assert unshare, "util-linux `unshare` is needed for a real ENOSPC"
    proc = subprocess.run(
        [
            unshare,
            "--user",
            "--map-root-user",
            "--mount",
            "bash",
            "-c",
            SCRIPT,
            "sh",
            root,
            template,
            out,
            sys.executable,
        ],
        env={"DUMP": DUMP, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr

    err1 = (out / "err1").read_text()
    assert (out / "rc1").read_text().strip() == "5", err1  # StorageError: disk full
    assert "disk full" in err1 and "free some space and re-run" in err1 and "Traceback" not in err1
    first = json.loads((out / "ledger1.json").read_text())
    planned = 52
    assert sum(o == "ok" for _, o, _ in first) >= 1
    assert planned - len(first) >= 15  # it stopped: the rest is left for the next run, not failed one by one
    # Only rows whose own write failed say disk_full (at most one per CPU thread), no others; none at all when
    # the ledger's own write was the first to hit the full disk (the rows then stay unrecorded for the rerun).
    assert sum(o == "disk_full" for _, o, _ in first) <= 4

    assert (out / "rc2").read_text().strip() == "10", (out / "err2").read_text()  # complete, some rows failed
    second = json.loads((out / "ledger2.json").read_text())
    assert len(second) == planned
    assert {i: o for i, o, _ in second} == {i: mirror.universe.expected(i) for i, _, _ in second}
