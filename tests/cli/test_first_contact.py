"""What a new user meets first, through the real `oiv4` script against a mirror on 127.0.0.1.

- A refused private address names the flag that admits it (`--allow-private-networks`), not a field name.
- A fetch run without the flag records `blocked_address`; running it again with the flag fetches those
  rows without `--retry-failed`, and a third run redoes nothing.
- `.show()` on an image read from a build says where it wrote the image when no viewer opens.
- Build output speaks words, not Python reprs, and lists the sets in set order.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from oiv4.io.storage import Storage
from oiv4_mirror import MirrorHandle
from support.fetch_env import ledger_rows, planned_root
from support.paths import REPO

OIV4 = str(Path(sys.executable).with_name("oiv4"))  # the script `pip install` puts beside the interpreter
#: The test mirror's slow rows end in seconds, not minutes.
FAST = ["--deadline", "1", "--read-timeout", "1", "--connect-timeout", "2", "--attempts", "3", "--backoff", "0.05"]


def oiv4(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH")}
    env["PYTHONPATH"] = str(REPO / "src")
    return subprocess.run([OIV4, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MirrorHandle, Path]]:
    with planned_root(tmp_path_factory.mktemp("planned")) as (mirror, root):
        yield mirror, root


def test_refused_private_addresses_name_the_cli_flag(planned: tuple[MirrorHandle, Path], tmp_path: Path) -> None:
    mirror, root = planned
    done = oiv4("metadata", "--root", str(tmp_path / "fresh"), "--base-url", mirror.metadata_base_url)
    assert done.returncode == 4, done.stderr
    assert "--allow-private-networks admits a private mirror" in done.stderr
    assert not re.search(r"(?<!-)allow_private_networks", done.stderr)
    shutil.copytree(root, tmp_path / "root")
    done = oiv4("archives", "validation", "--root", str(tmp_path / "root"), "--source", mirror.archives_base_url)
    assert done.returncode != 0
    assert "--allow-private-networks admits a private mirror" in done.stderr  # in full, never cut with "…"
    assert not re.search(r"(?<!-)allow_private_networks", done.stdout + done.stderr)


def test_blocked_rows_are_fetched_when_the_same_fetch_is_rerun_with_the_flag(
    planned: tuple[MirrorHandle, Path], tmp_path: Path
) -> None:
    _, template = planned
    root = tmp_path / "root"
    shutil.copytree(template, root)
    storage = Storage(str(root))

    first = oiv4("fetch", "train", "--root", str(root), "--no-progress", *FAST)
    assert first.returncode == 10, first.stderr
    rows = ledger_rows(storage, "train")
    assert rows and {r["outcome"] for r in rows} == {"blocked_address"}
    assert all("--allow-private-networks" in r["reason"] for r in rows)

    second = oiv4("fetch", "train", "--root", str(root), "--no-progress", "--allow-private-networks", *FAST)
    assert second.returncode in (0, 10), second.stderr
    outcomes = Counter(r["outcome"] for r in ledger_rows(storage, "train"))
    assert "blocked_address" not in outcomes and outcomes["ok"] > 0
    assert " 0 rows were already finished" in " ".join(second.stdout.split())
    stored = sorted(p.relative_to(root).as_posix() for p in (root / "train").rglob("*.jpg"))
    assert len(stored) == outcomes["ok"]

    third = oiv4("fetch", "train", "--root", str(root), "--no-progress", "--allow-private-networks", *FAST)
    assert third.returncode == second.returncode
    assert f"{len(rows):,} rows were already finished" in " ".join(third.stdout.split())
    assert Counter(r["outcome"] for r in ledger_rows(storage, "train")) == outcomes  # nothing redone
    assert sorted(p.relative_to(root).as_posix() for p in (root / "train").rglob("*.jpg")) == stored


def test_without_the_flag_blocked_rows_stay_finished(planned: tuple[MirrorHandle, Path], tmp_path: Path) -> None:
    """Only a run that allows what blocked a row retries it: a second run without the flag redoes nothing."""
    root = tmp_path / "root"
    shutil.copytree(planned[1], root)
    assert oiv4("fetch", "train", "--root", str(root), "--no-progress", *FAST).returncode == 10
    again = oiv4("fetch", "train", "--root", str(root), "--no-progress", *FAST)
    assert again.returncode == 10
    n = len(ledger_rows(Storage(str(root)), "train"))
    assert f"{n:,} rows were already finished" in " ".join(again.stdout.split())


SHOW = """
import sys
from PIL import Image
from oiv4.read.show import showable
image = showable(Image.new("RGB", (40, 30), (200, 10, 10)))
image.show()
"""


def test_show_without_a_viewer_on_path_writes_the_image_and_says_where(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {"PATH": str(empty), "TMPDIR": str(tmp_path), "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-c", SHOW], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    m = re.fullmatch(r"no image viewer found on this machine; wrote the image to (\S+)\n", done.stderr)
    assert m is not None, done.stderr
    from PIL import Image

    with Image.open(m.group(1)) as written:
        assert written.size == (40, 30) and written.getpixel((0, 0)) == (200, 10, 10)


def test_show_with_a_viewer_on_path_opens_it_and_writes_nothing_extra(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    opened = tmp_path / "opened.txt"
    viewer = bin_dir / "xdg-open"  # the first viewer Pillow looks for on Linux
    viewer.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    viewer.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "TMPDIR": str(tmp_path), "PYTHONPATH": str(REPO / "src")}
    code = (
        SHOW
        + "\nimport time\nfor _ in range(600):\n    time.sleep(0.1)\n    if __import__('os').path.exists(%r): break\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code % str(opened)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "no image viewer found" not in done.stderr
    assert opened.exists()


def test_build_output_names_outcomes_in_words_and_sets_in_set_order() -> None:
    from oiv4.cli import render

    assert render.outcome_counts({"missing_from_archive": 3, "ok": 1044}) == "ok 1,044, missing_from_archive 3"
    order = [n for n, _ in render.in_set_order({"extended_targets": 0, "targets": 1, "train": 2, "validation": 3})]
    assert order == ["targets", "validation", "train", "extended_targets"]


def test_a_reused_plan_is_listed_in_set_order(planned: tuple[MirrorHandle, Path]) -> None:
    done = oiv4("plan", "--root", str(planned[1]), "--train-size", "30", "--shard-rows", "16")
    assert done.returncode == 0, done.stderr
    assert "up to date, reused" in done.stdout
    names = re.findall(r"\b(targets|validation|train|extended_targets)\b", done.stdout)
    assert names == ["targets", "validation", "train", "extended_targets"]


def test_no_user_facing_message_names_a_settings_field() -> None:
    """Messages raised to the user spell options as flags (`--keep-tar`), never as dataclass fields."""
    fields = set()
    for path in (REPO / "src/oiv4").rglob("*.py"):
        fields |= set(re.findall(r"^\s+(\w+_\w+):[^=\n]*=\s*setting\(", path.read_text(), re.M))
    assert {"allow_private_networks", "keep_tar", "max_member_bytes"} <= fields
    found = []
    for path in (REPO / "src").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            raised = isinstance(node, ast.Raise) and node.exc is not None
            init = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "__init__"
            if raised or init:
                for const in ast.walk(node):
                    if isinstance(const, ast.Constant) and isinstance(const.value, str):
                        words = set(re.findall(r"(?<![\w`.-])(\w+_\w+)(?![\w`])", const.value))
                        found += [f"{path.relative_to(REPO)}:{const.lineno}: {w}" for w in sorted(words & fields)]
    assert found == [], textwrap.indent("\n".join(found), "  ")


def test_a_demo_rerun_prints_outcomes_in_words_and_the_plan_in_set_order(tmp_path: Path) -> None:
    args = ["demo", "--root", str(tmp_path / "demo"), "--images", "200", "--seed", "3"]
    first = oiv4(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    again = oiv4(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    for run in (first, again):
        text = run.stdout + run.stderr
        assert not re.search(r"\{'\w+': \d+", text), text  # no Python dict
        assert re.search(r"^\s+targets: ok [\d,]+", run.stderr, re.M), run.stderr
        plan = text[text.index("plan") :]
        names = re.findall(r"│ (targets|validation|train|extended_targets) ", plan)[:4]
        assert names == ["targets", "validation", "train", "extended_targets"]
    assert "plan (up to date, reused)" in again.stdout


def test_the_mirror_help_example_is_what_the_mirror_prints() -> None:
    from oiv4.cli.run_commands import mirror_next_commands

    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH")}
    env.update(PYTHONPATH=str(REPO / "src"), COLUMNS="250")
    done = subprocess.run([OIV4, "mirror", "-h"], env=env, capture_output=True, text=True, timeout=120)
    lines = [line.strip() for line in done.stdout.splitlines()]
    assert "Example: oiv4 mirror --images 3000 --port 8000" in lines
    for command in mirror_next_commands("http://127.0.0.1:8000"):
        assert command in lines


def test_a_run_allowing_private_networks_retries_only_the_rows_it_would_not_refuse_again(tmp_path: Path) -> None:
    """0.0.0.0 is refused even with private networks allowed: its row stays finished; the loopback row is
    tried again (here: a closed port, so it ends connection_error instead of blocked_address)."""
    import socket

    from oiv4.run.executor import ExecutorSettings
    from oiv4.run.fetch import fetch_set
    from oiv4.stages.fetch import FETCH_TRANSFER, FetchSettings
    from support.fetch_env import write_manifest

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    storage = Storage(str(tmp_path))
    rows = [
        {"ImageID": "00000000000000b1", "OriginalURL": f"http://0.0.0.0:{closed}/a.jpg"},
        {"ImageID": "00000000000000b2", "OriginalURL": f"http://127.0.0.1:{closed}/b.jpg"},
    ]
    write_manifest(storage, "train", rows)
    executor = ExecutorSettings(kind="thread", workers=1)
    http = replace(FETCH_TRANSFER, attempts=1, deadline_s=5.0)
    fetch_set(storage, "train", FetchSettings(transfer=http), executor)
    assert [r["outcome"] for r in ledger_rows(storage, "train")] == ["blocked_address", "blocked_address"]

    allowed = FetchSettings(transfer=replace(FETCH_TRANSFER, attempts=1, deadline_s=5.0, allow_private_networks=True))
    summary = fetch_set(storage, "train", allowed, executor)
    assert [r["outcome"] for r in ledger_rows(storage, "train")] == ["blocked_address", "connection_error"]
    assert summary.skipped == 1
    again = fetch_set(storage, "train", allowed, executor)
    assert again.shards_run == 0 and again.skipped == 2  # the 0.0.0.0 row is not tried again
