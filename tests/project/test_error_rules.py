"""The error rules of docs/architecture.md, enforced on the source: one exception tree, no bare user errors,
one place that exits.

- Every exception class is defined in `oiv4.contracts.errors` (the package), except the private ones listed
  in PRIVATE_EXCEPTIONS with why they never leave their module.
- No `raise ValueError(...)` / `raise RuntimeError(...)` outside INVARIANT_CHECKS: a user error is a
  category of the tree, so the CLI maps it to its exit code instead of calling it a bug (exit 70).
- Only the central handler (`oiv4.cli.crash.finish`, called by `oiv4.cli.app.main`) ends the process.
Each rule has a test proving it can fail: a violation planted in a temporary tree must be found.
"""

from __future__ import annotations

import ast
import builtins
import functools
from pathlib import Path

import pytest

from oiv4.contracts import errors
from support import paths

SRC = paths.SRC
TREE = "oiv4/contracts/errors/"

#: (file, class) -> why it may live there: private, never raised past its module, or bound to a library.
PRIVATE_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("oiv4/io/net_guard.py", "_Refused"): "a BlockedAddress that is also aiohttp's ClientError, so aiohttp's "
    "connector passes it on; callers catch BlockedAddress (contracts does not import aiohttp)",
    ("oiv4/stages/archives/convert.py", "_Stopped"): "unwinds the member loop on a stop request; caught in "
    "the same function",
    ("oiv4/stages/fetch/pipeline.py", "_AbortedBeforeWrite"): "a row left for the next run when its shard "
    "stops; caught by the row pipeline itself",
}
#: Classes still defined beside the code that raises them: each entry must still be true (the list only shrinks).
KNOWN_OUTSIDE: set[tuple[str, str]] = set()

#: (file, start of the message) -> why this ValueError/RuntimeError is an invariant of oiv4, not a user error.
INVARIANT_CHECKS: dict[tuple[str, str], str] = {
    ("oiv4/contracts/extras.py", "require() needs"): "a call without module names is a bug in the caller",
    ("oiv4/io/ledger.py", "ledger column `row` has nulls"): "io.ledger_write writes `row` for every row",
    ("oiv4/io/memory_budget.py", "a memory budget needs"): "capacities come from range-checked settings",
    ("oiv4/io/store.py", "unknown layout"): "FetchSettings refuses an unknown layout before a writer is made",
    ("oiv4/stages/archives/catalog.py", "not a CVDF archive stem"): "stems come from the catalog itself",
    ("oiv4/stages/archives/gunzip.py", "unknown decoder"): "ArchiveSettings refuses an unknown decoder first",
    ("oiv4/stages/archives/zipwriter.py", "zip already closed"): "the builder closes a zip once, after its last member",
    ("oiv4/stages/archives/zipwriter.py", "does not fit a STORED member"): "members.py refuses members over "
    "MAX_MEMBER before they reach the writer",
    ("oiv4_mirror/duplicates.py", "unknown copy variant"): "variants come from the mirror's own list",
    ("oiv4_mirror/images.py", "kind"): "the branches above cover every ImageKind",
}

#: file -> why it may end the process itself.
EXITS: dict[str, str] = {
    "oiv4/cli/crash.py": "the central handler: `finish` is the one place the oiv4 command exits",
    "oiv4/run/worker_process.py": "a worker initializer whose parent has already died: there is no handler above it",
    "oiv4_mirror/__main__.py": "the mirror's own process (`python -m oiv4_mirror`), not the oiv4 command",
}

_BUILTIN_EXCEPTIONS = {n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)}


@functools.cache
def _files(src: Path) -> list[tuple[str, ast.Module]]:
    return [(p.relative_to(src).as_posix(), ast.parse(p.read_text(), str(p))) for p in sorted(src.rglob("*.py"))]


def _base_name(node: ast.expr) -> str:
    return node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""


def exception_classes(src: Path) -> set[tuple[str, str]]:
    """(file, class) of every exception class under `src`, at any depth: a class whose base is a builtin
    exception, one of the tree's names, a library's `...Error`/`...Exception`, or another class found here."""
    known = _BUILTIN_EXCEPTIONS | set(errors.__all__)
    classes = [(rel, node) for rel, tree in _files(src) for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    found: set[tuple[str, str]] = set()
    grew = True
    while grew:
        grew = False
        for rel, node in classes:
            if (rel, node.name) in found:
                continue
            bases = {_base_name(b) for b in node.bases}
            if bases & known or any(b.endswith(("Error", "Exception")) for b in bases):
                found.add((rel, node.name))
                known.add(node.name)
                grew = True
    return found


def outside_the_tree(src: Path) -> set[tuple[str, str]]:
    return {(rel, name) for rel, name in exception_classes(src) if not rel.startswith(TREE)}


def value_and_runtime_errors(src: Path) -> set[tuple[str, str]]:
    """(file, message) of each `raise ValueError(...)`/`raise RuntimeError(...)` under `src`."""
    found = set()
    for rel, tree in _files(src):
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            if _base_name(node.exc.func) in ("ValueError", "RuntimeError"):
                args = node.exc.args
                found.add((rel, ast.unparse(args[0]) if args else ""))
    return found


def _listed(rel: str, message: str) -> bool:
    return any(rel == f and start in message for f, start in INVARIANT_CHECKS)


def bare_user_errors(src: Path) -> set[tuple[str, str]]:
    """(file, message) of each `raise ValueError(...)`/`raise RuntimeError(...)` not in INVARIANT_CHECKS."""
    return {(rel, message) for rel, message in value_and_runtime_errors(src) if not _listed(rel, message)}


def process_exits(src: Path) -> set[tuple[str, str]]:
    """(file, call) of each `sys.exit`, `os._exit`, `exit`/`quit` call and `raise SystemExit` under `src`."""
    found = set()
    for rel, tree in _files(src):
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                if name in ("sys.exit", "os._exit", "exit", "quit", "os.abort"):
                    found.add((rel, name))
            elif isinstance(node, ast.Raise) and node.exc is not None:
                raised = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if _base_name(raised) == "SystemExit":
                    found.add((rel, "SystemExit"))
    return found


def test_every_exception_class_is_defined_in_the_one_tree() -> None:
    found = outside_the_tree(SRC)
    assert found - set(PRIVATE_EXCEPTIONS) - KNOWN_OUTSIDE == set(), "define these in oiv4.contracts.errors"
    assert set(PRIVATE_EXCEPTIONS) | KNOWN_OUTSIDE <= found, "gone: remove them from the lists"
    assert all(name.startswith("_") for _rel, name in PRIVATE_EXCEPTIONS), "a private exception has a private name"


def test_the_tree_exports_every_class_it_defines() -> None:
    defined = {name for rel, name in exception_classes(SRC) if rel.startswith(TREE)}
    assert defined <= set(errors.__all__), "import them in oiv4/contracts/errors/__init__.py and list in __all__"
    for name in errors.__all__:
        assert hasattr(errors, name), name
    assert len(defined) >= 55, "the scan lost classes"


def test_no_user_error_is_a_bare_value_or_runtime_error() -> None:
    assert bare_user_errors(SRC) == set(), "raise a category of oiv4.contracts.errors (or list an invariant)"
    raised = value_and_runtime_errors(SRC)
    used = {(f, start) for f, start in INVARIANT_CHECKS if any(r == f and start in m for r, m in raised)}
    assert used == set(INVARIANT_CHECKS), "gone: remove these from INVARIANT_CHECKS"


def test_only_the_central_handler_exits() -> None:
    found = process_exits(SRC)
    assert {rel for rel, _call in found} - set(EXITS) == set(), f"exits outside the handler: {sorted(found)}"
    assert set(EXITS) <= {rel for rel, _call in found}, "gone: remove these from EXITS"


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """A copy-like tree holding one violation of each rule (and one sanctioned case of each)."""
    oiv4 = tmp_path / "oiv4"
    (oiv4 / "contracts" / "errors").mkdir(parents=True)
    (oiv4 / "stages").mkdir()
    (oiv4 / "cli").mkdir()
    (oiv4 / "contracts" / "errors" / "__init__.py").write_text("class Oiv4Error(Exception):\n    pass\n")
    (oiv4 / "stages" / "x.py").write_text(
        "import aiohttp\n"
        "from oiv4.contracts.errors import InputError\n\n"
        "class BadThing(InputError):\n    pass\n\n"
        "class Worse(BadThing):\n    pass\n\n"
        "class Hung(aiohttp.ClientError):\n    pass\n\n"
        "def check(n):\n"
        "    class _Local(ValueError):\n        pass\n"
        "    if n < 0:\n        raise ValueError(f'--n must be >= 0, got {n}')\n"
        "    raise RuntimeError('run `oiv4 plan` first')\n"
    )
    (oiv4 / "cli" / "run.py").write_text(
        "import os, sys\n\ndef go(code):\n    if code:\n        os._exit(130)\n    raise SystemExit(2)\n\n"
        "def stop():\n    sys.exit(1)\n"
    )
    return tmp_path


def test_the_class_rule_sees_a_class_outside_the_tree(planted: Path) -> None:
    found = outside_the_tree(planted)
    assert found == {
        ("oiv4/stages/x.py", "BadThing"),
        ("oiv4/stages/x.py", "Worse"),
        ("oiv4/stages/x.py", "Hung"),
        ("oiv4/stages/x.py", "_Local"),
    }


def test_the_raise_rule_sees_bare_user_errors(planted: Path) -> None:
    messages = {m for _rel, m in bare_user_errors(planted)}
    assert messages == {"f'--n must be >= 0, got {n}'", "'run `oiv4 plan` first'"}


def test_the_exit_rule_sees_every_way_out(planted: Path) -> None:
    assert process_exits(planted) == {("oiv4/cli/run.py", c) for c in ("os._exit", "SystemExit", "sys.exit")}


def index_problems(doc: str) -> list[str]:
    """What the tree drawn in the package docstring gets wrong: a class missing, or drawn under a category
    it does not belong to."""
    tree = doc[doc.index("    Oiv4Error") : doc.index("Bases without a category")]
    placed: dict[str, type] = {}
    category: type = errors.Oiv4Error
    for line in tree.splitlines()[1:]:
        words = line.replace("├──", " ").replace("└──", " ").replace("│", " ").split()
        if words and words[0] in {c.__name__ for c in errors.CATEGORIES}:
            category, words = getattr(errors, words[0]), words[2:]  # the category and its exit code
        for word in words:
            name = word.strip(";,()>")
            if name[:1].isupper() and isinstance(getattr(errors, name, None), type):
                placed[name] = category
    problems = [f"{n} is drawn under {c.__name__}" for n, c in placed.items() if not issubclass(getattr(errors, n), c)]
    uncategorised = {"TransferError", "ReaderError", "ArchiveError"}
    drawn = set(placed) | {c.__name__ for c in errors.CATEGORIES} | {"Oiv4Error"} | uncategorised
    classes = {n for n in errors.__all__ if isinstance(getattr(errors, n), type)}
    problems += [f"{n} is not drawn" for n in sorted(classes - drawn)]
    return problems + [f"{n} is not named" for n in sorted(uncategorised) if n not in doc]


def test_the_index_shows_every_class_under_its_category() -> None:
    # The tree drawn in the package docstring is the one place a reader learns the classes.
    assert index_problems(errors.__doc__ or "") == []


def test_the_index_check_sees_a_wrong_drawing() -> None:
    doc = (errors.__doc__ or "").replace("RootLockedError, LedgerChangingError", "RootLockedError")
    doc = doc.replace("UnwritableRootError, UnsafePath,", "UnwritableRootError, UnsafePath, BlockedAddress,")
    assert index_problems(doc) == ["BlockedAddress is drawn under StorageError", "LedgerChangingError is not drawn"]
