"""Errors, once: every exception oiv4 raises on purpose sits under one category, and the CLI maps categories."""

from __future__ import annotations

import ast
import importlib
import tempfile
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from oiv4.cli.app import Oiv4Group
from oiv4.contracts import errors
from oiv4.contracts.errors import CATEGORIES, InputError, Oiv4Error, SourceError, UsageError, exit_code
from support import paths

SRC = paths.SRC / "oiv4"
#: Bases whose subclasses carry the category; raised alone they mean "this one thing failed" (exit 1).
UNCATEGORISED_BASES = {
    "oiv4.contracts.errors.stages.ArchiveError",
    "oiv4.contracts.errors.data.ReaderError",
    "oiv4.contracts.errors.transfer.TransferError",
}


def _exception_classes() -> list[type[BaseException]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")
        names = [n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.ClassDef)]
        if not names:
            continue
        mod = importlib.import_module(module)
        for name in names:
            cls = getattr(mod, name)
            if isinstance(cls, type) and issubclass(cls, BaseException) and cls.__module__ == module:
                found.append(cls)
    return found


def test_every_exception_in_src_has_exactly_one_category() -> None:
    classes = [c for c in _exception_classes() if c.__module__ != errors.categories.__name__]
    assert len(classes) >= 24, "the scan lost classes"
    for cls in classes:
        name = f"{cls.__module__}.{cls.__qualname__}"
        assert issubclass(cls, Oiv4Error), f"{name} is not an Oiv4Error"
        cats = [c for c in CATEGORIES if issubclass(cls, c)]
        if name in UNCATEGORISED_BASES:
            assert cats == [], name
        else:
            assert len(cats) == 1, f"{name} has categories {cats}"
            assert cls.exit_code == cats[0].exit_code, name


def test_exceptions_keep_the_bases_callers_catch() -> None:
    from oiv4.contracts.errors import ArchiveSourceError, BadArchiveError, HostileIdError, ImageNotFoundError

    assert issubclass(HostileIdError, ValueError) and issubclass(HostileIdError, InputError)
    assert issubclass(ImageNotFoundError, KeyError) and issubclass(BadArchiveError, OSError)
    # An archive's source failure is still an ArchiveError (the set carries on) and exits as a source error.
    exc = ArchiveSourceError("train_0", "gone")
    assert str(exc) == "train_0: gone" and exit_code(exc) == SourceError.exit_code == 4


def test_exit_codes_are_distinct_and_documented() -> None:
    codes = [c.exit_code for c in CATEGORIES]
    assert len(set(codes)) == len(codes) and 0 not in codes and Oiv4Error.exit_code not in codes
    table = [code for code, _short, _meaning in errors.EXIT_CODES]
    assert len(set(table)) == len(table) and table == sorted(table)
    assert set(codes) | {0, Oiv4Error.exit_code, errors.COMPLETE_WITH_FAILURES, errors.INTERNAL_ERROR} == set(table)
    assert exit_code(KeyboardInterrupt()) == 130 and exit_code(RuntimeError()) is None


def test_readme_exit_code_table_is_the_generated_one() -> None:
    readme = (SRC.parent.parent / "README.md").read_text()
    start = readme.index("<!-- exit-codes: start")
    body = readme[readme.index("\n", start) + 1 : readme.index("<!-- exit-codes: end -->")]
    assert body.strip() == errors.exit_code_table(), "regenerate README's table from errors.exit_code_table()"


def test_top_level_help_lists_every_exit_code_from_the_same_table() -> None:
    from oiv4.cli import app

    result = CliRunner().invoke(app, ["--help"], env={"TERMINAL_WIDTH": "4000"})
    text = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 0
    assert errors.exit_code_summary() in text


def _app_raising(exc: BaseException) -> typer.Typer:
    app = typer.Typer(cls=Oiv4Group, pretty_exceptions_enable=False)

    @app.command("boom")
    def boom() -> None:
        raise exc

    @app.command("other")
    def other() -> None:  # a second command, so "boom" is a subcommand and not the whole app
        pass

    return app


@pytest.mark.parametrize(
    ("exc", "code"),
    [(UsageError("run `oiv4 plan` first"), 2), (InputError("bad [row] 3"), 3), (errors.Interrupted("stop"), 130)],
)
def test_cli_turns_a_category_into_one_line_and_its_exit_code(exc: Oiv4Error, code: int) -> None:
    result = CliRunner().invoke(_app_raising(exc), ["boom"])
    assert result.exit_code == code
    assert result.output.strip() == f"oiv4 boom: {exc}"  # markup-like text is printed as is, on one line


def test_cli_ctrl_c_exits_130_and_says_work_is_kept() -> None:
    result = CliRunner().invoke(_app_raising(KeyboardInterrupt()), ["boom"])
    assert result.exit_code == 130 and "finished work is kept" in result.output


def test_cli_turns_a_bug_into_one_line_naming_the_file_with_its_traceback(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    tempfile.tempdir = None  # re-read TMPDIR
    try:
        result = CliRunner().invoke(_app_raising(ZeroDivisionError("bug")), ["boom"])
    finally:
        tempfile.tempdir = None
    assert result.exit_code == errors.INTERNAL_ERROR == 70
    out = " ".join(result.output.split())
    assert "Traceback" not in result.output and out.startswith("oiv4 boom: internal error")
    saved = list(tmp_path.glob("oiv4-crash-*.txt"))
    assert len(saved) == 1 and str(saved[0]) in out
    text = saved[0].read_text()
    assert "Traceback (most recent call last)" in text and "ZeroDivisionError: bug" in text
