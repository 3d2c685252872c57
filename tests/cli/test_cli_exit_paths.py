"""How the real `oiv4` process ends: a closed pipe is not an error, an empty query is a usage error, a bug is exit 70.

These run the installed script in a subprocess, because a closed pipe and the final flush only exist there.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from support.layout_builder import build_set

OIV4 = str(Path(sys.executable).with_name("oiv4"))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("exit-paths")
    build_set(path, "train", 6, "folder")
    return path


def _piped_into_head(args: list[str]) -> tuple[int, str]:
    """Run `oiv4 args | head -c 20`-like: read a little of stdout, close it, return (exit code, stderr)."""
    proc = subprocess.Popen([OIV4, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(20)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    return proc.wait(timeout=120), err


@pytest.mark.parametrize(
    "args",
    [
        ["sql", "--csv", "--limit", "1000000", "select * from range(500000)"],
        ["sql", "--limit", "100000", "select * from range(100000)"],
        ["status"],
        ["--help"],
    ],
    ids=["sql-csv", "sql-table", "status", "help"],
)
def test_a_reader_that_closes_the_pipe_ends_the_command_quietly_with_0(root: Path, args: list[str]) -> None:
    if args != ["--help"]:
        args = [*args, "--root", str(root)]
    code, err = _piped_into_head(args)
    assert code == 0, err
    assert "Traceback" not in err and "Broken pipe" not in err and "BrokenPipeError" not in err, err


@pytest.mark.parametrize("query", ["", "   ", ";"])
def test_an_empty_sql_query_is_a_usage_error(root: Path, query: str) -> None:
    run = subprocess.run([OIV4, "sql", "--root", str(root), query], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr and "oiv4 sql: the query is empty" in run.stderr
