"""Writing commands and the root they are given: no command creates a missing root unless it starts one,
none writes into someone else's folder (not even the run lock), and an empty `--root` is a usage error.

Each refusal is exit code 2 with one line, and the file system is exactly as before the command ran.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from oiv4.cli import app

#: Every command that takes the run lock, with the arguments it needs besides --root. The mirror URL is a closed
#: port: a command that got past the root check would fail later, after writing; none must get that far.
WRITING = {
    "metadata": ["metadata", "--base-url", "http://127.0.0.1:9/", "--allow-private-networks"],
    "plan": ["plan"],
    "archives": ["archives", "targets", "--source", "http://127.0.0.1:9/tar/", "--allow-private-networks"],
    "fetch": ["fetch", "train", "--no-progress"],
    "hash": ["hash"],
    "dedup": ["dedup"],
    "build": ["build", "--metadata-url", "http://127.0.0.1:9/", "--allow-private-networks"],
    "demo": ["demo"],
    "verify_requeue": ["verify", "--requeue"],
}
#: The commands that start a root: a missing folder is theirs to create.
STARTERS = {"metadata", "build", "demo"}


def _tree(path: Path) -> list[str]:
    """Every path under `path` (files and folders), relative, sorted: what a command must leave as it was."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def _run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, args)
    out = result.output.strip()
    assert "Traceback" not in out and (result.exception is None or isinstance(result.exception, SystemExit)), out
    return result.exit_code, out


@pytest.mark.parametrize("name", sorted(set(WRITING) - STARTERS))
def test_writing_command_refuses_a_missing_root_and_creates_nothing(name: str, tmp_path: Path) -> None:
    root = tmp_path / "nope" / "a" / "b"
    code, out = _run([*WRITING[name], "--root", str(root)])
    assert code == 2, out
    assert "does not exist" in out and len(out.splitlines()) == 1, out
    assert _tree(tmp_path) == [], f"{name} created {_tree(tmp_path)}"


@pytest.mark.parametrize("name", sorted(WRITING))
def test_writing_command_leaves_a_foreign_folder_untouched(name: str, tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("mine")
    (tmp_path / "figures").mkdir()
    before = _tree(tmp_path)
    code, out = _run([*WRITING[name], "--root", str(tmp_path)])
    assert code == 2, out
    assert "not an oiv4 root" in out and len(out.splitlines()) == 1, out
    assert _tree(tmp_path) == before, f"{name} wrote into a foreign folder"
    assert not (tmp_path / ".oiv4-run.lock").exists()


@pytest.mark.parametrize("name", sorted(WRITING))
def test_an_empty_root_is_a_usage_error_not_the_current_folder(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = _run([*WRITING[name], "--root", ""])
    assert code == 2, out
    assert "--root is empty" in out, out
    assert _tree(tmp_path) == []


@pytest.mark.parametrize("command", [["status"], ["verify"], ["report"], ["estimate"]])
def test_reading_commands_refuse_an_empty_root(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = _run([*command, "--root", ""])
    assert code == 2 and "--root is empty" in out, out
    assert _tree(tmp_path) == []


def test_a_starting_command_accepts_an_empty_folder_and_a_missing_one(tmp_path: Path) -> None:
    """metadata on a new and on an empty folder gets past the root check (it fails later, on the closed port)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    for root in (empty, tmp_path / "new" / "deeper"):
        code, out = _run([*WRITING["metadata"], "--attempts", "1", "--root", str(root)])
        assert "not an oiv4 root" not in out and "does not exist" not in out, out
        assert code != 2, out
        assert root.is_dir() and (root / ".oiv4-run.lock").exists()
    assert os.listdir(empty)
