"""A damaged file under a built root is one line naming it, exit 6 (integrity), and nothing on disk changes.

A disk error or a bad copy leaves a ledger shard, a ledger part, a plan manifest, the plan summary or a
shard's settings record truncated, full of garbage or empty. Every command that reads such a file must
say which file is damaged, what is wrong and what to do, and exit with the integrity code; commands that
never read it may succeed. No command may print a traceback or change a file of the root when it fails.
The tiny build of a run (conftest's `tiny_demo_root`) is copied once and hard-linked per case: the damaged file is
written as a new file, and every write oiv4 makes is a rename, so the shared build stays pristine (checked).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import oiv4
from oiv4.cli import app
from oiv4.contracts.errors import DamagedFileError, IntegrityError

SHARD = "ledger/train/shard-00000.parquet"
PART = "ledger/train/shard-00000.parts/part-20240501T120000000000-abcdef.parquet"
PLAN = "plan/train.parquet"
SUMMARY = "plan/summary.json"
SETTINGS = "ledger/train/shard-00000.settings.json"
FILES = {"ledger-shard": SHARD, "ledger-part": PART, "plan": PLAN, "plan-summary": SUMMARY, "settings": SETTINGS}
DAMAGES: dict[str, Callable[[bytes], bytes]] = {
    "truncated": lambda b: b[: len(b) // 2],
    "garbage": lambda b: bytes(range(256)) * 8,
    "empty": lambda b: b"",
    # the footer intact, pages inside overwritten: found only by reading the pages
    "corrupt-pages": lambda b: b[:200] + b"U" * (len(b) // 2 - 200) + b[len(b) // 2 :],
}
#: Every kind truncated, garbage and empty; pages corrupted behind an intact footer for the Parquet kinds.
CASES = [(k, d) for k in sorted(FILES) for d in ("empty", "garbage", "truncated")] + [
    ("ledger-shard", "corrupt-pages"),
    ("plan", "corrupt-pages"),
    ("plan", "folder"),  # plan/train.parquet is a folder
]
#: The lock file is the run lock's; every other file must be left exactly as it was.
IGNORED = {".oiv4-run.lock"}


def _commands(out: Path, src: Path) -> dict[str, list[str]]:
    return {
        "status": ["status"],
        "verify": ["verify", "--fast"],
        "report": ["report", "--out", str(out / "report.html")],
        "fetch": ["fetch", "train"],
        "estimate": ["estimate"],
        "sql": ["sql", "select count(*) from ledger_train"],
        "sql-plan": ["sql", "select count(*) from plan_train"],
        "hash": ["hash"],
        "dedup": ["dedup"],
        "plan": ["plan", "--train-size", "60", "--shard-rows", "250"],
        "archives": ["archives", "validation", "--source", str(src)],
    }


#: (file kind, command) pairs where the command reads that file, so it must stop with exit 6.
MUST_FAIL = {
    **{("ledger-shard", c): 6 for c in ("status", "verify", "report", "fetch", "estimate", "sql", "hash", "dedup")},
    **{("ledger-part", c): 6 for c in ("status", "verify", "report", "fetch", "estimate", "sql", "hash", "dedup")},
    **{("plan", c): 6 for c in ("verify", "report", "estimate", "sql", "sql-plan", "dedup")},
    **{("plan-summary", c): 6 for c in ("status", "fetch", "plan")},
    ("settings", "fetch-retry"): 6,
}
#: The same for pages corrupted behind an intact footer (a query that needs no page, e.g. count(*), may pass, and
#: so does `status`, which counts a finished shard from its footer summary alone; `verify` reads every page).
MUST_FAIL_PAGES = {("ledger-shard", c): 6 for c in ("verify", "report", "estimate")}


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in IGNORED
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_demo_root: Path) -> tuple[Path, dict[str, str]]:
    root = shutil.copytree(tiny_demo_root, tmp_path_factory.mktemp("damaged") / "root")
    return root, _digests(root)


def _damaged_copy(built: tuple[Path, dict[str, str]], tmp_path: Path, kind: str, damage: str) -> tuple[Path, bytes]:
    source, _ = built
    root = tmp_path / "root"
    shutil.copytree(source, root, copy_function=os.link)
    rel = FILES[kind]
    original = (source / (SHARD if kind == "ledger-part" else rel)).read_bytes()
    target = root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)  # a new file: the hard link to the shared build stays intact
    if damage == "folder":
        target.mkdir()
    else:
        target.write_bytes(DAMAGES[damage](original))
    return root, _content(target)


def _content(path: Path) -> bytes:
    return b"<a folder>" if path.is_dir() else path.read_bytes()


@pytest.mark.parametrize(("kind", "damage"), CASES)
def test_every_command_names_a_damaged_file_and_changes_nothing(
    built: tuple[Path, dict[str, str]], tmp_path: Path, kind: str, damage: str
) -> None:
    root, damaged_bytes = _damaged_copy(built, tmp_path, kind, damage)
    src = tmp_path / "empty-source"
    src.mkdir()
    commands = _commands(tmp_path, src)
    if kind == "settings":  # read only when its shard runs again: a retry of shard 0 must stop before any work
        commands["fetch-retry"] = ["fetch", "train", "--retry-failed", "http_410"]
    path = str(root / FILES[kind])
    for name, args in commands.items():
        before = _digests(root)
        result = CliRunner().invoke(app, [*args, "--root", str(root)])
        out = " ".join(result.output.split())
        where = f"{name} on a {damage} {kind}: {out[-600:]}"
        assert "Traceback" not in result.output, where
        assert result.exception is None or isinstance(result.exception, SystemExit), where
        assert result.exit_code in (0, 6, 10), where  # done, the damage named, complete with recorded failures
        if (kind, name) in (MUST_FAIL_PAGES if damage == "corrupt-pages" else MUST_FAIL):
            assert result.exit_code == IntegrityError.exit_code, where
        if result.exit_code == IntegrityError.exit_code:
            assert f"damaged file {path}:" in out and "Restore it from a copy" in out, where
            assert out.count(f"oiv4 {args[0]}:") == 1, where
            assert _digests(root) == before, where  # a command that stopped changed nothing
        assert _content(root / FILES[kind]) == damaged_bytes, where
    assert _digests(built[0]) == built[1]  # the shared build was never written through a hard link


@pytest.mark.parametrize(("kind", "damage"), CASES)
def test_oiv4_open_raises_one_error_naming_the_damaged_file(
    built: tuple[Path, dict[str, str]], tmp_path: Path, kind: str, damage: str
) -> None:
    root, damaged_bytes = _damaged_copy(built, tmp_path, kind, damage)
    try:
        with oiv4.open(root) as ds:
            for name in ds:
                reader = ds[name]
                manifest = reader.manifest  # a table, or for big sets a lazy relation
                if not isinstance(manifest, pa.Table):
                    manifest.to_arrow_table()
                if len(reader):
                    reader.read_bytes_at(0)
    except DamagedFileError as err:
        assert err.path == str(root / FILES[kind]) and err.problem and err.advice
        assert isinstance(err, IntegrityError) and err.exit_code == 6
    else:  # only files a reader never needs may be damaged without an error
        assert kind in ("settings", "plan-summary"), kind
    assert _content(root / FILES[kind]) == damaged_bytes


def test_the_reported_case_from_a_shell_exits_6_with_one_line(
    built: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    # truncate -s 1000 R/ledger/train/shard-00000.parquet; oiv4 status --root R
    root = tmp_path / "root"
    shutil.copytree(built[0], root, copy_function=os.link)
    shard = root / SHARD
    data = shard.read_bytes()[:1000]
    shard.unlink()
    shard.write_bytes(data)
    oiv4_bin = str(Path(sys.executable).with_name("oiv4"))
    run = subprocess.run([oiv4_bin, "status", "--root", str(root)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 6, run.stderr
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    text = " ".join(run.stderr.split())
    assert f"oiv4 status: damaged file {shard}:" in text and "oiv4 fetch train --root" in text
    assert len(lines) <= 4, run.stderr  # one message (rich may wrap it at the terminal's width)


def test_a_damaged_plan_is_recomputed_as_the_message_says(built: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    root, _ = _damaged_copy(built, tmp_path, "plan", "garbage")
    failed = CliRunner().invoke(app, ["sql", "--root", str(root), "select count(*) from plan_train"])
    assert failed.exit_code == 6
    assert f"oiv4 plan --root {root} --force" in " ".join(failed.output.split())
    redo = CliRunner().invoke(
        app, ["plan", "--root", str(root), "--force", "--train-size", "60", "--shard-rows", "250"]
    )
    assert redo.exit_code == 0, redo.output
    assert pq.read_table(root / PLAN).equals(pq.read_table(built[0] / PLAN))  # the same rows, so ledgers still match
    again = CliRunner().invoke(app, ["status", "--root", str(root)])
    assert again.exit_code == 0, again.output


@pytest.mark.parametrize("rel", ["dedup/pairs.parquet", "dedup/summary.json"])
def test_damaged_dedup_results_are_named_by_report_and_the_reader(
    built: tuple[Path, dict[str, str]], tmp_path: Path, rel: str
) -> None:
    root = tmp_path / "root"
    shutil.copytree(built[0], root, copy_function=os.link)
    (root / rel).unlink()
    (root / rel).write_bytes(b"garbage{")
    result = CliRunner().invoke(app, ["report", "--root", str(root), "--out", str(tmp_path / "r.html")])
    out = " ".join(result.output.split())
    assert result.exit_code == 6 and "Traceback" not in result.output, out
    assert f"damaged file {root / rel}:" in out and f"run `oiv4 dedup --root {root}` again" in out
    if rel.endswith(".parquet"):
        with oiv4.open(root) as ds, pytest.raises(DamagedFileError) as err:
            ds["train"].without_duplicates_of("validation")
        assert err.value.path == str(root / rel)
    assert (root / rel).read_bytes() == b"garbage{"
