"""The project installs the way a user installs it, at both ends of its declared ranges.

Newest: a fresh venv gets `pip install .` from a copy of the clone (no lock, no extras, no -e), so pip picks
the newest versions the ranges allow; then `oiv4 --help`, every command's `-h`, and metadata -> plan ->
fetch -> verify against `oiv4 mirror` served by that same install; then `pip install '.[neighbors]'` adds the
newest faiss-cpu and `oiv4 neighbors` must give the lock venv's ground truth. That venv is rebuilt every run: the newest
versions change under the ranges, which is what it is there to catch (typer 0.26 dropping click did).

Lowest: a venv with `name==<lower bound>` of every core dependency (read from pyproject.toml, so the bounds
cannot drift from what is tested: numpy 1.26.4, Pillow 10.4.0, pyarrow 15.0.2, ...) and oiv4 itself without
extras runs the demo pipeline (metadata, plan, archives, fetch, hash, dedup, verify, report) against the
bundled mirror on 127.0.0.1, reads the result back and runs `oiv4 status`/`verify`/`sql`/`estimate`. A
second venv adds the lowest [s3] and [dask] extras and fetches on a Dask LocalCluster into an s3:// root
(moto on 127.0.0.1). A third holds the lowest [neighbors] (faiss-cpu 1.8.0.post1 with numpy 1.26.4), whose
`oiv4 neighbors` must give the lock venv's ground truth for l2, ip and cosine. Each lowest venv is kept under `.venv-lowest/<hash of the constraints and of what
pyproject.toml tells an install>`, so later runs install nothing.

All of them need the package registry. Measured on 2 shared cores (load average about 8), `pytest -n 2
tests/project/test_install.py`: 4 min 41 s with nothing installed yet, 2 min 50 s with the lowest venvs kept (the
newest-versions test, 165 s of it, always installs).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from support.paths import REPO

VENVS = REPO / ".venv-lowest"
#: Must not be importable after a core install (the [dask], [s3], [torch] and [neighbors] extras, or [dev]).
NOT_IN_CORE = ("dask", "distributed", "s3fs", "aiobotocore", "boto3", "botocore", "torch", "faiss")
#: The extras whose lower bounds are tested too (torch is declared only: too big to install in CI); the
#: [neighbors] extra (faiss-cpu) has a venv of its own at its lower bounds, and joins the newest-versions venv.
EXTRAS = ("s3", "dask")
NEIGHBORS = ("neighbors",)
COMPLETE = ".complete"  # written last, so a half-built venv (killed run) is rebuilt, never used


def lowest_constraints(extras: tuple[str, ...] = ()) -> str:
    """A pip constraints file pinning every core dependency (and those of `extras`) to its declared lower bound."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = []
    for text in [*project["dependencies"], *(r for e in extras for r in project["optional-dependencies"][e])]:
        req = Requirement(text)
        lower = [s.version for s in req.specifier if s.operator == ">="]
        assert len(lower) == 1, f"{text}: needs exactly one >= lower bound"
        lines.append(f"{req.name}=={lower[0]}")
    return "\n".join(sorted(lines)) + "\n"


def _clean_env() -> dict[str, str]:
    # Nothing of the test run's own environment may leak in: the venv must import its own oiv4 and packages.
    # Nor pip's own constraints: each venv's versions are the test's choice (the lower bounds, or the newest).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PIP_CONSTRAINT"))}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _pip(venv: Path, *args: str) -> None:
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", *args],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=540,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        pytest.fail(
            f"installing the lowest supported versions failed (this test needs the package registry): "
            f"pip {' '.join(args)}\n{tail}",
            pytrace=False,
        )


def lowest_venv(extras: tuple[str, ...] = ()) -> Path:
    """The cached venv for these extras, the constraints and pyproject.toml, built (under a lock) if missing."""
    constraints = lowest_constraints(extras)
    key = lowest_venv_key(extras)
    VENVS.mkdir(exist_ok=True)
    venv = VENVS / key
    with open(VENVS / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test runs share one build instead of racing
        if (venv / COMPLETE).exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=_clean_env(), timeout=120)
        (venv / "lowest-constraints.txt").write_text(constraints)
        # Editable: the venv runs this checkout's code, so the cache stays valid while src changes.
        target = f"{REPO}[{','.join(extras)}]" if extras else str(REPO)
        _pip(venv, "install", "--quiet", "-c", str(venv / "lowest-constraints.txt"), "-e", target)
        tmp = venv / f"{COMPLETE}.tmp"
        tmp.write_text(constraints)
        tmp.rename(venv / COMPLETE)
    return venv


def lowest_venv_key(extras: tuple[str, ...] = ()) -> str:
    # Only what an install reads: a change to the tools' settings (pytest, ruff) keeps the cached venvs.
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    installed = [pyproject["build-system"], pyproject["project"], pyproject["tool"]["setuptools"]]
    text = lowest_constraints(extras) + json.dumps(installed, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _prune_others(keep: set[str]) -> None:
    """Remove venvs of older constraints that no other run is building or using right now."""
    for lock_path in VENVS.glob("*.lock"):
        if lock_path.stem in keep:
            continue
        with open(lock_path, "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            shutil.rmtree(VENVS / lock_path.stem, ignore_errors=True)
            lock_path.unlink(missing_ok=True)


def _python(venv: Path, script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "python"), "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        env={**_clean_env(), "COLUMNS": "200"},
        cwd=cwd,
        timeout=300,
    )


SMOKE = """
    import json, sys
    import oiv4
    from oiv4.cli.demo import DemoSettings, run_demo

    root = sys.argv[1]
    result = run_demo(DemoSettings(root=root, images=240, train_size=60, workers=2))
    assert result.ok, result
    ds = oiv4.open(root)
    out = {"oiv4": oiv4.__file__, "sets": {}}
    for name in ds.sets:
        s = ds[name]
        sizes = [s[i].size for i in range(min(3, len(s)))]
        assert all(w > 0 and h > 0 for w, h in sizes), sizes
        outcomes = s.manifest["outcome"]
        assert outcomes.null_count == 0, f"{name}: planned rows without a recorded outcome"
        out["sets"][name] = len(s)
        out["outcomes"] = sorted(set(out.get("outcomes", [])) | set(outcomes.to_pylist()))
    heavy = sorted(m.split(".")[0] for m in sys.modules if m.split(".")[0] in sys.argv[2].split(","))
    out["optional_imported"] = heavy
    print(json.dumps(out))
"""


@pytest.mark.timeout(900)  # a cold cache installs from the registry first; a warm run takes well under a minute
def test_the_lowest_supported_versions_plan_fetch_and_read_against_the_mirror(tmp_path: Path) -> None:
    venv = lowest_venv()
    _prune_others({venv.name, lowest_venv_key(EXTRAS), lowest_venv_key(NEIGHBORS)})

    versions = _python(
        venv,
        """
        import importlib.metadata as m, importlib.util, json, sys
        names = sys.argv[1].split(",")
        print(json.dumps({
            "installed": {n: m.version(n) for n in names},
            "importable_optional": [n for n in sys.argv[2].split(",") if importlib.util.find_spec(n) is not None],
        }))
        """,
        ",".join(line.split("==")[0] for line in lowest_constraints().split()),
        ",".join(NOT_IN_CORE),
        cwd=tmp_path,
    )
    assert versions.returncode == 0, versions.stderr
    found = json.loads(versions.stdout)
    wanted = dict(line.split("==") for line in lowest_constraints().split())
    assert found["installed"] == wanted, "the venv does not hold the declared lower bounds"
    # The core install pulls in none of the extras' packages.
    assert found["importable_optional"] == []
    no_dask = _python(venv, "import dask", cwd=tmp_path)
    assert no_dask.returncode != 0 and "No module named 'dask'" in no_dask.stderr
    assert not (venv / "bin" / "dask").exists()  # docs/cluster.md: the `dask` command comes with [dask] only

    root = tmp_path / "root"
    smoke = _python(venv, SMOKE, str(root), ",".join(NOT_IN_CORE), cwd=tmp_path)
    assert smoke.returncode == 0, smoke.stderr[-4000:]
    # A worker's unexpected exception is logged and its shard retried, so the build can still end "ok":
    # any traceback means some code path does not work with these versions.
    assert "Traceback" not in smoke.stderr, smoke.stderr[-4000:]
    summary = json.loads(smoke.stdout.strip().splitlines()[-1])
    assert summary["oiv4"].startswith(str(REPO / "src")), summary  # this checkout's code, not another install
    assert set(summary["sets"]) == {"targets", "validation", "train", "extended_targets"}, summary
    assert all(n > 0 for n in summary["sets"].values()), summary
    assert summary["optional_imported"] == []
    assert "ok" in summary["outcomes"] and len(summary["outcomes"]) > 3, summary  # the mirror's failures too

    helps = _python(
        venv,
        """
        from typer.main import get_command
        from typer.testing import CliRunner
        from oiv4.cli import app
        names = sorted(get_command(app).commands)
        for args in [[], *([n] for n in names)]:
            done = CliRunner().invoke(app, [*args, "--help"])
            assert done.exit_code == 0, (args, done.output, repr(done.exception))
        print(" ".join(names))
        """,
        cwd=tmp_path,
    )
    assert helps.returncode == 0, helps.stderr[-4000:]
    assert {"plan", "fetch", "archives", "verify", "status"} <= set(helps.stdout.split())

    # Beyond the demo's stages: the commands that read a root with duckdb and pyarrow on their own.
    sql = "select outcome, count(*) from ledger_train group by 1 order by 2 desc"
    for command in (
        ["status", "--root", str(root)],
        ["verify", "--root", str(root)],
        ["sql", "--root", str(root), "--csv", sql],
        ["estimate", "--root", str(root)],
    ):
        cli = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "oiv4", *command],
            capture_output=True,
            text=True,
            env={**_clean_env(), "COLUMNS": "200"},
            cwd=tmp_path,
            timeout=300,
        )
        assert cli.returncode == 0, f"oiv4 {command[0]}: {cli.stdout[-2000:]}{cli.stderr[-2000:]}"


EXTRAS_SMOKE = """
    import json, sys
    import oiv4
    from oiv4.io.storage import Storage
    from oiv4.run.executor import ExecutorSettings
    from oiv4.run.fetch import fetch_set
    from dataclasses import replace
    from oiv4.contracts.transfer import TransferSettings
    from oiv4.stages.fetch import FETCH_TRANSFER, FetchSettings
    from oiv4.stages.metadata import MetadataSettings, fetch_metadata
    from oiv4.stages.plan import PlanSettings, build_plan
    from oiv4_mirror import UniverseSpec, start_mirror

    if __name__ == "__main__":
        root, options = sys.argv[1], json.loads(sys.argv[2])
        spec = UniverseSpec(seed=18, n_images=120, megapixels=(0.2, 1.5), trickle_seconds=8.0)
        transfer = replace(FETCH_TRANSFER, allow_private_networks=True, deadline_s=1.0, read_timeout_s=1.0, connect_timeout_s=2.0, attempts=3, backoff_s=0.05)
        with start_mirror(spec) as mirror:
            storage = Storage(root, options)
            fetch_metadata(storage, MetadataSettings(base_url=mirror.metadata_base_url, transfer=TransferSettings(allow_private_networks=True)))
            build_plan(storage, PlanSettings(train_size=30, shard_rows=16))
            summary = fetch_set(storage, "train", FetchSettings(transfer=transfer), ExecutorSettings(kind="dask", workers=2))
        s = oiv4.open(root, **options)["train"]
        outcomes = s.manifest["outcome"]
        assert outcomes.null_count == 0, "planned rows without a recorded outcome"
        assert len(s) > 0 and s[0].size[0] > 0
        print(json.dumps({"ok": len(s), "planned": len(outcomes), "modules": sorted(
            m for m in ("dask", "distributed", "s3fs") if m in sys.modules)}))
"""


@pytest.mark.timeout(900)
def test_the_lowest_s3_and_dask_extras_fetch_on_a_dask_cluster_into_an_s3_root(tmp_path: Path, s3_root) -> None:
    # moto runs in this (dev) process; the venv only talks to it over HTTP, like a worker to real S3.
    venv = lowest_venv(EXTRAS)
    root, options = s3_root
    versions = _python(
        venv,
        "import dask, distributed, s3fs, fsspec; print(dask.__version__, distributed.__version__, s3fs.__version__)",
        cwd=tmp_path,
    )
    assert versions.returncode == 0, versions.stderr
    wanted = dict(line.split("==") for line in lowest_constraints(EXTRAS).split())
    assert versions.stdout.split() == [wanted["dask"], wanted["distributed"], wanted["s3fs"]]
    # docs/cluster.md starts the scheduler and workers with the `dask` command the [dask] extra installs,
    # with these options.
    for command, flags in (("scheduler", ["--port"]), ("worker", ["--nworkers", "--nthreads", "--memory-limit"])):
        dask = subprocess.run(
            [str(venv / "bin" / "dask"), command, "--help"],
            capture_output=True,
            text=True,
            env=_clean_env(),
            timeout=120,
        )
        assert dask.returncode == 0, dask.stderr[-2000:]
        assert all(f in dask.stdout for f in flags), (command, dask.stdout[-3000:])

    smoke = _python(venv, EXTRAS_SMOKE, root, json.dumps(options), cwd=tmp_path)
    assert smoke.returncode == 0, smoke.stderr[-4000:]
    assert "Traceback" not in _without_distributed_logs(smoke.stderr), smoke.stderr[-4000:]
    summary = json.loads(smoke.stdout.strip().splitlines()[-1])
    assert summary["planned"] == 30 and summary["ok"] > 0, summary
    assert summary["modules"] == ["dask", "distributed", "s3fs"], summary


_LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ - (\S+) - ", re.M)


def _without_distributed_logs(stderr: str) -> str:
    """stderr minus the records distributed's own loggers wrote (with their tracebacks): a LocalCluster's workers
    may log a failed heartbeat while the cluster shuts down, which is distributed's noise, not an oiv4 error."""
    kept, pos, keep = [], 0, True
    for m in _LOG_RECORD.finditer(stderr):
        if keep:
            kept.append(stderr[pos : m.start()])
        keep, pos = not m.group(1).startswith("distributed."), m.start()
    if keep:
        kept.append(stderr[pos:])
    return "".join(kept)


# ---- the way a user installs: a fresh venv, `pip install .`, no lock, no extras, the newest versions -----------

#: What a clone holds that `pip install .` reads (a copy: the build must not write into this checkout).
CLONE_FILES = ("pyproject.toml", "README.md", "LICENSE", "src")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_http(url: str, mirror: subprocess.Popen[str], seconds: float = 240) -> None:
    """Until the mirror answers (it renders its universe before serving); fails if it exits first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if mirror.poll() is not None:
            pytest.fail(f"oiv4 mirror exited with {mirror.returncode}: {mirror.communicate()[1][-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"oiv4 mirror did not answer {url}")


@pytest.mark.timeout(900)
def test_a_plain_pip_install_at_the_newest_versions_runs_every_command_and_a_fetch(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in CLONE_FILES:
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(
            REPO / name,
            clone / name,
            **({"ignore": shutil.ignore_patterns("*.egg-info", "__pycache__")} if name == "src" else {}),
        )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=_clean_env(), timeout=120)
    # No -c requirements.lock, no extras, no -e: exactly what README tells a user to type in a clone.
    env = _clean_env()
    done = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "."],
        capture_output=True,
        text=True,
        env=env,
        cwd=clone,
        timeout=600,
    )
    assert done.returncode == 0, f"pip install . failed:\n{done.stderr[-3000:]}"

    def oiv4(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(venv / "bin" / "oiv4"), *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=timeout
        )

    where = _python(
        venv,
        """
        import importlib.metadata as m, importlib.util, json, oiv4, oiv4_mirror
        from typer.main import get_command
        from oiv4.cli import app
        print(json.dumps({
            "files": [oiv4.__file__, oiv4_mirror.__file__],
            "commands": sorted(get_command(app).commands),
            "typer": m.version("typer"),
            "click": importlib.util.find_spec("click") is not None,
        }))
        """,
        cwd=tmp_path,
    )
    assert where.returncode == 0, where.stderr[-3000:]
    found = json.loads(where.stdout)
    # Both packages come from the installed distribution (the mirror ships with oiv4), not from this checkout.
    assert all(f.startswith(str(venv)) for f in found["files"]), found
    # The newest typer parses with its own click and installs none: the case that crashed `oiv4 --help`.
    assert not found["click"], found

    # A research container's numpy 1.26, Pillow 10.4 and pyarrow 15, pinned in the same command, resolve (they
    # were ResolutionImpossible); running with them is the lowest-versions test's job.
    pins = {"numpy": "1.26.4", "pillow": "10.4.0", "pyarrow": "15.0.2"}
    report = tmp_path / "resolution.json"
    resolved = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--dry-run", "--quiet", "--report", str(report), ".",
         *(f"{n}=={v}" for n, v in pins.items())],
        capture_output=True, text=True, env=env, cwd=clone, timeout=300,
    )  # fmt: skip
    assert resolved.returncode == 0, resolved.stderr[-3000:]
    chosen = {
        i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]
    }
    assert {n: chosen[n] for n in pins} == pins, chosen

    assert oiv4("--help").returncode == 0
    helps = {name: oiv4(name, "-h") for name in found["commands"]}
    failed = {
        n: (d.returncode, d.stderr[-1500:]) for n, d in helps.items() if d.returncode != 0 or "Usage" not in d.stdout
    }
    assert not failed, failed
    assert {"metadata", "plan", "fetch", "verify", "mirror"} <= set(helps), found["commands"]

    # plan -> fetch -> verify against the mirror this very install serves (no misbehaving rows: every row ends ok).
    port = _free_port()
    mirror = subprocess.Popen(
        [str(venv / "bin" / "oiv4"), "mirror", "--images", "60", "--megapixels", "0.1", "0.3",
         "--misbehaviour-fraction", "0", "--port", str(port), "--cache-dir", str(tmp_path / "mirror-cache")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}/openimages/2018_04/"
        _wait_for_http(base + "image_ids_and_rotation.csv", mirror)
        root = str(tmp_path / "root")
        steps = [
            ["metadata", "--root", root, "--base-url", base, "--allow-private-networks"],
            ["plan", "--root", root, "--train-size", "20"],
            ["fetch", "train", "--root", root, "--allow-private-networks", "--no-progress"],
            ["verify", "--root", root, "--set", "train"],
        ]
        for step in steps:
            ran = oiv4(*step)
            assert ran.returncode == 0, (
                f"oiv4 {' '.join(step)}: exit {ran.returncode}\n{ran.stdout[-1500:]}{ran.stderr[-1500:]}"
            )
            assert "Traceback" not in ran.stderr, ran.stderr[-3000:]
    finally:
        mirror.terminate()
        mirror.communicate(timeout=60)
    read = _python(venv, "import sys, oiv4; print(len(oiv4.open(sys.argv[1])['train']))", root, cwd=tmp_path)
    assert read.returncode == 0 and int(read.stdout) == 20, read.stderr[-2000:]

    # The [neighbors] extra at the newest faiss-cpu its range allows, beside the newest numpy already there.
    added = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", ".[neighbors]"],
        capture_output=True, text=True, env=env, cwd=clone, timeout=600,
    )  # fmt: skip
    assert added.returncode == 0, f"pip install '.[neighbors]' failed:\n{added.stderr[-3000:]}"
    _ground_truth_agrees_with_the_locks(venv / "bin" / "oiv4", tmp_path)
    shutil.rmtree(venv)  # ~350 MB that pytest would keep for its last three runs (kept when the test fails)


def _ground_truth_agrees_with_the_locks(oiv4_bin: Path, tmp_path: Path) -> None:
    """`oiv4 neighbors` of another install gives the lock venv's ground truth on the same vectors, per metric.

    float16 vectors with exact duplicates in the database (ties, broken by database order) and 10,000 database
    rows, so the search merges three blocks; the lock's own runs equal a float64 brute force (test_neighbors)."""
    import numpy as np
    import pyarrow.parquet as pq

    from oiv4.contracts.layout import LAYOUT
    from support.feature_shards import write_features

    rng = np.random.default_rng(11)
    db = rng.standard_normal((10_000, 24)).astype(np.float16)
    db[5000:5200] = db[100:300]  # exact ties
    queries = np.concatenate([db[:40] + np.float16(0.01), rng.standard_normal((60, 24)).astype(np.float16)])
    roots = {"lock": tmp_path / "lock-root", "other": tmp_path / "other-root"}
    for root in roots.values():
        write_features(root, "m", "targets", db, shard_rows=3000)
        write_features(root, "m", "validation", queries, shard_rows=40)
    bins = {"lock": Path(sys.executable).with_name("oiv4"), "other": oiv4_bin}
    for metric in ("l2", "ip", "cosine"):
        tables = {}
        for side, root in roots.items():
            done = subprocess.run(
                [str(bins[side]), "neighbors", "--root", str(root), "--queries", "validation", "--database", "targets",
                 "--model", "m", "--k", "10", "--metric", metric],
                capture_output=True, text=True, env=_clean_env(), timeout=300,
            )  # fmt: skip
            assert done.returncode == 0 and "Traceback" not in done.stderr, (side, metric, done.stderr[-3000:])
            name = "validation-targets" + ("" if metric == "l2" else f".{metric}")
            tables[side] = pq.read_table(root / LAYOUT.neighbors_file("m", name))
        assert tables["other"].num_rows == 100 * 10
        assert tables["other"].equals(tables["lock"]), metric


@pytest.mark.timeout(900)
def test_the_lowest_neighbors_extra_gives_the_locks_ground_truth(tmp_path: Path) -> None:
    venv = lowest_venv(NEIGHBORS)
    versions = _python(
        venv, "import importlib.metadata as m; print(m.version('faiss-cpu'), m.version('numpy'))", cwd=tmp_path
    )
    wanted = dict(line.split("==") for line in lowest_constraints(NEIGHBORS).splitlines())
    assert versions.stdout.split() == [wanted["faiss-cpu"], wanted["numpy"]], versions.stderr[-2000:]
    _ground_truth_agrees_with_the_locks(venv / "bin" / "oiv4", tmp_path)


def test_the_numpy_1_bit_count_agrees_with_numpy_2s_bitwise_count() -> None:
    # numpy 1.26 has no np.bitwise_count: Hamming distances (dedup, the report) fall back to popcount_swar.
    import numpy as np

    from oiv4.io.fingerprint import popcount_swar

    rng = np.random.default_rng(7)
    x = rng.integers(0, 2**63, size=20_000, dtype=np.uint64) * np.uint64(2) + rng.integers(
        0, 2, 20_000, dtype=np.uint64
    )
    x = np.concatenate([x, np.array([0, 1, 2**63, 2**64 - 1], dtype=np.uint64)])
    assert np.array_equal(popcount_swar(x), np.bitwise_count(x))
    assert popcount_swar(x.reshape(4, -1)).shape == (4, len(x) // 4)
    assert int(popcount_swar(np.uint64(2**64 - 1))) == 64
