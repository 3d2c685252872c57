"""Every option of every command, given nonsense, is refused up front: exit 2, one line, no traceback.

The list is generated from the click command tree, so a new option is covered without editing this file.
The root is a plain file: if a bad value slipped through, the command would fail on the root instead
and the message would not name the option, so the test fails.
"""

from __future__ import annotations

import enum
import re
import typing
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from oiv4.cli import app
from support.paths import REPO as ROOT

COMMAND = typer.main.get_command(app)
NUMERIC = ("integer", "float")
#: Options for which 0 is meaningful (no wait, no limit, an empty train set, pick a free port, ...).
ZERO_OK = {
    "--draft-gap", "--min-free-mb", "--backoff", "--backoff-max", "--retry-after-max", "--max-redirects",
    "--train-size", "--seed", "--samples", "--max-pool-restarts", "--show", "--port", "--latency-ms",
    "--bandwidth-mbps", "--misbehaviour-fraction", "--report-samples", "--checkpoint", "--jitter", "--max-backoff", "--threshold", "--spool-mb",
    "--duplicates", "--loader-workers",
}  # fmt: skip
#: Options where a huge value is valid and would make the command do real work (the mirror generates images).
HUGE_RUNS = {"mirror"}


def _zero_ok(flag: str) -> bool:
    return flag in ZERO_OK or any(flag.endswith("-" + z[2:]) for z in ZERO_OK)


def _kind(t: object) -> str:
    args = typing.get_args(t)
    if typing.get_origin(t) in (list, tuple) and args:
        t = args[0]
    if t is int:
        return "integer"
    if t is float:
        return "float"
    if isinstance(t, type) and issubclass(t, enum.Enum):
        return "choice"
    return "other"


def _cases() -> list[tuple[str, str, str, str]]:
    cases = []
    for name, cmd in sorted(COMMAND.commands.items()):
        for p in cmd.params:
            if not p.opts or not p.opts[0].startswith("--"):
                continue
            flag, kind = p.opts[0], _kind(p.type_descriptor.annotation)
            if kind in NUMERIC:
                values = ["-1", "abc"] + ([] if _zero_ok(flag) else ["0"])
                values += [] if name in HUGE_RUNS else ["1e30" if "float" in kind else str(10**30)]
                cases += [(name, flag, v, kind) for v in values]
            elif kind == "choice":
                cases.append((name, flag, "bogus-choice", kind))
    return cases


def _args(name: str, flag: str, value: str, root: Path) -> list[str]:
    cmd = COMMAND.commands[name]
    nargs = next(p.nargs for p in cmd.params if p.opts and p.opts[0] == flag)
    args = [name] + (["targets"] if name in ("archives", "features") else [])
    if name == "neighbors":  # required, else their absence is reported before a bad executor option
        args += ["--queries", "validation", "--database", "targets"]
    if any(p.opts and p.opts[0] == "--root" for p in cmd.params):
        args += ["--root", str(root)]
    return [*args, flag, *([value] * max(1, nargs))]


@pytest.mark.parametrize(("name", "flag", "value", "kind"), _cases(), ids=lambda x: str(x)[:20])
def test_a_bad_option_value_is_a_one_line_usage_error(name: str, flag: str, value: str, kind: str, tmp_path) -> None:
    root = tmp_path / "a-file"
    root.write_text("not a folder")
    result = CliRunner().invoke(app, _args(name, flag, value, root))
    out = result.output.strip()
    assert ("Traceback" not in out and result.exception is None) or isinstance(result.exception, SystemExit), out
    assert len(out.splitlines()) == 1, out
    if value in ("1e30", str(10**30)):
        # Huge but maybe valid: refused for the value or, past it, for the root; never a crash.
        assert result.exit_code == 2, out
        return
    assert result.exit_code == 2, out
    assert flag in out or flag.lstrip("-") in out, out


@pytest.mark.parametrize(
    "args",
    [
        ["status", "--root", "{file}"],
        ["verify", "--root", "{file}"],
        ["report", "--root", "{file}"],
        ["plan", "--root", "{file}"],
        ["metadata", "--root", "{file}"],
        ["fetch", "--root", "{file}"],
        ["archives", "targets", "--root", "{file}"],
        ["build", "--root", "{file}"],
        ["demo", "--root", "{file}"],
        ["status", "--root", "{missing}"],
        ["verify", "--root", "{missing}"],
        ["status", "--root", "{empty}"],
        ["report", "--root", "{empty}"],
        ["fetch", "--root", "{empty}", "--retry-failed", "bogus_outcome"],
        ["report", "--root", "{built}", "--out", "{empty}"],
    ],
    ids=lambda a: " ".join(a),
)
def test_a_root_that_cannot_be_used_is_one_line_and_exit_2(args: list[str], tmp_path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "built" / "plan").mkdir(parents=True)
    paths = {k: str(tmp_path / k) for k in ("file", "missing", "empty", "built")}
    result = CliRunner().invoke(app, [a.format(**paths) for a in args])
    out = result.output.strip()
    assert result.exit_code == 2 and len(out.splitlines()) == 1 and "Traceback" not in out, out


def test_report_out_into_a_missing_folder_creates_it(tmp_path) -> None:
    (tmp_path / "root" / "plan").mkdir(parents=True)
    out = tmp_path / "new" / "deeper" / "r.html"
    result = CliRunner().invoke(app, ["report", "--root", str(tmp_path / "root"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("<!doctype html") or out.stat().st_size > 0


#: Flags of `dask worker`, quoted in cluster hints.
DASK_FLAGS = {"--nworkers", "--nthreads"}
#: pip's own, in the hint that says how to install a matching torchvision.
PIP_FLAGS = {"--index-url"}


def _all_flags() -> set[str]:
    flags = {"--help", "--version", "--no-x", "--x"}  # the group's own; "--x/--no-x" documents the boolean pattern
    for cmd in COMMAND.commands.values():
        for p in cmd.params:
            flags.update(p.opts + getattr(p, "secondary_opts", []))
    return flags


def test_every_flag_named_in_src_strings_exists_on_some_command() -> None:
    """Reasons, errors and help texts that name a flag name a real one (`--max-pixels` did not exist)."""
    import ast

    flags = _all_flags() | DASK_FLAGS | PIP_FLAGS
    wrong = []
    for path in sorted((ROOT / "src" / "oiv4").rglob("*.py")):  # oiv4_mirror's own argv is not a command's
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and ":root{" not in node.value:
                for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9](?![\w-])", node.value):
                    if flag not in flags:
                        wrong.append(f"{path.relative_to(ROOT)}: {flag}")
    assert not sorted(set(wrong)), sorted(set(wrong))
