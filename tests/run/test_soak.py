"""Leave it alone for a week, in two minutes: a 5,000-row fetch against a mirror where every Flickr fault
happens, through the real CLI in subprocesses, killed with SIGKILL five times at random points (the main
process alone, or it and its workers), one disk-full episode (a real ENOSPC on a shrunken tmpfs) and one
second run refused while the first holds the root. It must end complete, duplicate-free, `verify`-clean,
byte-identical to an undisturbed run of the same universe, and with no process left behind.

The disturbed run lives on a tmpfs in a private user+mount namespace (`unshare -rm`, no privileges needed),
driven by DRIVER below, which writes what it saw to a JSON file and copies the root out for the checks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest

from oiv4.io.storage import Storage
from oiv4_mirror import ALL_MISBEHAVIOURS, UniverseSpec
from support.fetch_env import copy_root, files_under, ledger_rows, planned_root
from support.paths import SRC
from support.process_marks import marked_processes

ROWS = 5000
#: Tiny pictures (~35x35) so 5,000 rows take seconds; 10% of rows misbehave, every misbehaviour ~38 times.
SPEC = UniverseSpec(
    seed=12,
    n_images=5300,
    megapixels=(0.001, 0.002),
    validation_fraction=0.02,
    test_fraction=0.02,
    boxable_fraction=0.0,
    misbehaviour_fraction=0.1,
    misbehaviours=ALL_MISBEHAVIOURS,
    trickle_seconds=3.0,
    slow_ok_seconds=0.1,
    transient_failures=2,
    retry_after=1,
)
FETCH = ["fetch", "train", "--workers", "2", "--concurrency", "16", "--deadline", "1", "--attempts", "3",
         "--backoff", "0.05", "--retry-after-max", "1", "--flush-seconds", "0.3", "--no-progress", "--allow-private-networks"]  # fmt: skip
#: How each of the five SIGKILLs is aimed: at the main process alone (its workers must die by themselves)
#: or at its whole process group. The disk-full episode comes after the third.
KILLS = ("main", "group", "main", "main", "group")

DRIVER = r"""
import json, os, random, signal, subprocess, sys, time
from pathlib import Path
from oiv4.io.ledger import read_set
from oiv4.io.storage import Storage

template, R, out, fetch, kills, marker = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), *map(json.loads, sys.argv[4:6]), sys.argv[6]
env = {**os.environ, "OIV4_SOAK_MARK": marker}
oiv4 = [sys.executable, "-m", "oiv4"]
seen = {"kills": [], "left_after_kill": [], "phases": []}

def sh(*cmd):
    subprocess.run(cmd, check=True)

def marked():
    found = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and marker.encode() in (p / "environ").read_bytes():
                if (p / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    found.append(int(p.name))
        except OSError:
            pass
    return found

def wait(pred, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False

def recorded():
    try:
        return read_set(Storage(str(R)), "train").num_rows
    except Exception:  # a part being renamed under us: ask again at the next poll
        return -1

def run(*args, **kw):
    p = subprocess.run([*oiv4, *args, "--root", str(R)], env=env, capture_output=True, text=True, **kw)
    return {"args": list(args), "rc": p.returncode, "out": p.stdout, "err": p.stderr[-4000:]}

sh("mount", "-t", "tmpfs", "-o", "size=400m", "tmpfs", str(R))
sh("cp", "-r", f"{template}/plan", f"{template}/metadata", str(R))
rng = random.Random(2024)
targets = sorted(rng.sample(range(200, 4000, 50), len(kills)))
for i, mode in enumerate(kills):
    proc = subprocess.Popen([*oiv4, *fetch, "--root", str(R)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    target = max(targets[i], recorded() + 150)  # always some progress in between
    if not wait(lambda: proc.poll() is not None or recorded() >= target, 240):
        seen["error"] = f"no progress to {target} rows in phase {i}"
    if i == 1 and proc.poll() is None:  # a second run while this one holds the root
        seen["busy"] = {**run(*fetch), "holder_pid": proc.pid}
    if proc.poll() is not None:
        seen["error"] = f"run {i} ended before its kill: rc {proc.returncode}: {proc.stderr.read()[-2000:]}"
        break
    at = recorded()
    if mode == "main":
        os.kill(proc.pid, signal.SIGKILL)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # PDEATHSIG kills workers at once; the deadline only bounds a failure.
    wait(lambda: not marked(), 15)
    seen["kills"].append({"mode": mode, "target": target, "recorded": at})
    seen["left_after_kill"].append(marked())
    if i == 2:  # disk full: shrink the tmpfs to what is used plus a little, run until ENOSPC stops it
        st = os.statvfs(R)
        used_kb = (st.f_blocks - st.f_bfree) * st.f_frsize // 1024
        # 2 MiB of room: the resumed run first compacts the killed run's parts and sweeps its temps, so a
        # smaller margin can fill before the first new ledger part is durable (seen once in ~6 runs with 768 KiB);
        # the rows still to fetch need several times 2 MiB, so the disk still fills mid-run (asserted: exit 5).
        sh("mount", "-o", f"remount,size={used_kb + 2048}k", str(R))
        before = recorded()
        seen["disk_full"] = {**run(*fetch, "--min-free-mb", "0", timeout=240), "before": before}
        seen["disk_full"]["after"] = recorded()
        seen["left_after_kill"].append(marked())
        sh("mount", "-o", "remount,size=400m", str(R))
seen["final"] = run(*fetch, timeout=300)
seen["again"] = run(*fetch, timeout=300)
seen["status"] = run("status", "--set", "train", "--json")
seen["sql"] = run("sql", "--csv", "select count(*) as n, count(distinct row) as rows, count(distinct image_id) as ids from ledger_train")
seen["plan_sql"] = run("sql", "--csv", "select count(*) as n from plan_train")
seen["verify"] = run("verify", timeout=300)
seen["left_at_end"] = marked()
sh("cp", "-a", str(R), str(out / "root"))
(out / "seen.json").write_text(json.dumps(seen))
"""


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory):
    with planned_root(tmp_path_factory.mktemp("plan"), SPEC, train_size=ROWS, shard_rows=250) as (mirror, root):
        yield mirror, root


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{SRC}:{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "oiv4", *args, "--root", str(root)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _resolved(root: Path) -> dict[int, tuple]:
    """The ledger without its timing columns: {row: (image_id, outcome, location, stored_bytes)}."""
    rows = ledger_rows(Storage(str(root)), "train")
    return {r["row"]: (r["image_id"], r["outcome"], r["location"], r["stored_bytes"]) for r in rows}


def test_a_fetch_killed_five_times_through_a_full_disk_ends_as_if_undisturbed(planned, tmp_path) -> None:
    mirror, template = planned
    reference = tmp_path / "reference"
    copy_root(template, reference)
    undisturbed = _cli(reference, *FETCH)
    assert undisturbed.returncode == 10, undisturbed.stderr  # complete, with the misbehaving rows failed

    unshare = shutil.which("unshare")
    assert unshare, "util-linux `unshare` is needed for the tmpfs root and a real ENOSPC"
    root, out = tmp_path / "soak", tmp_path / "out"
    root.mkdir()
    out.mkdir()
    marker = uuid.uuid4().hex
    namespace = [unshare, "--user", "--map-root-user", "--mount"]
    args = [str(template), str(root), str(out), json.dumps(FETCH), json.dumps(KILLS), marker]
    proc = subprocess.run(
        [*namespace, sys.executable, "-c", DRIVER, *args],
        env={**os.environ, "PYTHONPATH": f"{SRC}:{os.environ.get('PYTHONPATH', '')}"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads((out / "seen.json").read_text())
    soaked = out / "root"
    assert "error" not in seen, seen.get("error")

    # Five SIGKILLs, each after progress, and nothing outlived any of them (nor the disk-full stop, nor the end).
    assert [k["mode"] for k in seen["kills"]] == list(KILLS)
    assert all(k["recorded"] >= k["target"] for k in seen["kills"]), seen["kills"]
    assert all(left == [] for left in seen["left_after_kill"]), seen["left_after_kill"]
    assert seen["left_at_end"] == []
    assert marked_processes(marker) == []

    # The second run was refused: busy, one line naming the holder.
    busy = seen["busy"]
    assert busy["rc"] == 9, busy
    assert f"pid {busy['holder_pid']}" in busy["err"] and len(busy["err"].strip().splitlines()) == 1, busy

    # The full disk stopped the run clearly (exit 5) after it had made some progress.
    full = seen["disk_full"]
    assert full["rc"] == 5 and "disk full" in full["err"] and "Traceback" not in full["err"], full
    assert full["after"] > full["before"], full

    # Complete: every planned row has one outcome, by the fetch's exit code, status and sql.
    assert seen["final"]["rc"] == 10, seen["final"]
    assert seen["again"]["rc"] == 10, seen["again"]  # nothing left to do, and it says the same
    assert seen["status"]["rc"] == 0, seen["status"]
    [train] = json.loads(seen["status"]["out"].strip().splitlines()[-1])["items"]
    assert (train["planned"], train["recorded_planned"], train["remaining"]) == (ROWS, ROWS, 0), train
    assert sum(train["counts"].values()) == ROWS, train
    assert seen["plan_sql"]["out"].split() == ["n", str(ROWS)]
    assert seen["sql"]["out"].split() == ["n,rows,ids", f"{ROWS},{ROWS},{ROWS}"], seen["sql"]
    assert seen["verify"]["rc"] == 0, seen["verify"]

    # Duplicate-free and byte-identical to the undisturbed run: same files, same bytes, same ledger.
    files = files_under(soaked)
    stems = Counter(Path(p).stem for p in files)
    assert not [s for s, n in stems.items() if n > 1]
    assert sorted(files) == sorted(files_under(reference))
    assert [p for p, data in files.items() if (reference / p).read_bytes() != data] == []
    ledger, expected = _resolved(soaked), _resolved(reference)
    assert len(ledger) == ROWS and ledger == expected
    # Every fault really happened: each row ends in the outcome its misbehaviour calls for.
    wrong = {i: (o, mirror.universe.expected(i)) for i, o, _, _ in ledger.values() if o != mirror.universe.expected(i)}
    assert wrong == {}
    assert {"http_403", "http_404", "http_410", "http_5xx", "timeout", "truncated", "placeholder", "corrupt_jpeg"} <= {
        o for _, o, _, _ in ledger.values()
    }
