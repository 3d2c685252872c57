"""docs/architecture.md's path and ledger rules, enforced by parsing src/.

- Every path under a root comes from `LAYOUT` (contracts/layout.py): no module outside contracts spells a
  folder or file name of the root's layout in a string.
- One ledger reader: only io.ledger and io.sql glob or read ledger files as Parquet; everything else asks them.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from support import paths

SRC = paths.SRC / "oiv4"

# ----------------------------------------------------------------------------------------------------------
# path literals

#: A string (or an f-string's literal pieces) without whitespace that names part of the root's layout. Prose
#: (help texts, messages: they hold spaces) and docstrings may mention paths; code building one may not.
_LAYOUT_LITERAL = re.compile(
    r"^(metadata|plan|ledger|dedup|features|neighbors|report)/"
    r"|(^|/)(images|staging|webdataset|img_emb|checksums|work)/|/(images|staging|webdataset)$"
    r"|shard-|\.parts(/|$)|(^|/)part-|settings\.json|rejected\.parquet|summary\.json|pairs\.parquet"
)
#: Where the layout is spelled: the one place.
_LAYOUT_HOME = ("contracts",)


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _literal_pieces(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every string constant outside docstrings; an f-string is its literal pieces joined by '*'."""
    skip = _docstrings(tree)
    inside_fstring = set()
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "*" for v in node.values)
            inside_fstring.update(id(v) for v in node.values)
            out.append((node.lineno, text))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip | inside_fstring:
            out.append((node.lineno, node.value))
    return out


def path_literals(src: Path) -> list[str]:
    """`module:line: text` for every layout path spelled outside contracts."""
    found = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src)
        if rel.parts[0] in _LAYOUT_HOME:
            continue
        for line, text in sorted(_literal_pieces(ast.parse(path.read_text(), str(path)))):
            # A command-line flag (`--shard-rows`) names an option, not a path.
            if not text.startswith("-") and not re.search(r"\s", text) and _LAYOUT_LITERAL.search(text):
                found.append(f"{rel}:{line}: {text!r}")
    return found


def test_every_path_under_a_root_comes_from_layout() -> None:
    assert path_literals(SRC) == [], "spell these paths with LAYOUT (contracts/layout.py)"


def test_the_path_check_sees_a_spelled_path(tmp_path: Path) -> None:
    (tmp_path / "contracts").mkdir()
    (tmp_path / "contracts" / "layout.py").write_text('PAIRS = "dedup/pairs.parquet"\n')
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "x.py").write_text(
        '"""Writes dedup/pairs.parquet."""\n'
        'HELP = "see plan/rejected.parquet for the rows"\n'
        'REJECTED = "plan/rejected.parquet"\n'
        'def staged(s, n):\n    return f"{s}/staging/shard-{n:05d}"\n'
    )
    found = path_literals(tmp_path)
    assert [f.split(": ", 1)[0] for f in found] == ["stages/x.py:3", "stages/x.py:5"]


# ----------------------------------------------------------------------------------------------------------
# one ledger reader

#: The ledger's readers: the set ledger's, DuckDB's views of it, and folder ledgers of their own schema (features).
#: io.damage lists ledger files too: it finds which file a failed read hit (by its footer) for the reader, which
#: imports it, and reads no rows.
_LEDGER_READERS = ("io/ledger.py", "io/sql.py", "io/ledger_folder.py", "io/damage.py")
_READ_CALLS = {"glob", "read_table", "ParquetFile", "read_parquet", "dataset"}
_LEDGER_PATHS = {
    "ledger_dir",
    "ledger_shard",
    "ledger_parts_dir",
    "features_ledger_dir",
    "features_ledger_shard",
    "features_ledger_parts_dir",
    "folder_shard_file",
    "folder_shard_parts_dir",
    "shard_files_glob",
    "part_files_glob",
    "shard_parts_glob",
    "anything_glob",
    "features_ledger_dirs_glob",
}


def _scopes(tree: ast.Module) -> list[ast.AST]:
    """The module body and every function, each without the functions nested in it."""
    return [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))]


def _own_nodes(scope: ast.AST) -> list[ast.AST]:
    out, todo = [], list(ast.iter_child_nodes(scope))
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        out.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return out


def _reads(node: ast.AST) -> bool:
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        return name in _READ_CALLS
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and "read_parquet(" in node.value


def _names_ledger(node: ast.AST) -> bool:
    if isinstance(node, ast.Attribute):
        return node.attr in _LEDGER_PATHS
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and "ledger/" in node.value


def ledger_reads(src: Path) -> list[str]:
    """`module:function` for every scope outside the ledger's readers that globs or reads Parquet and names a
    ledger path."""
    found = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src).as_posix()
        if rel in _LEDGER_READERS:
            continue
        for scope in _scopes(ast.parse(path.read_text(), str(path))):
            nodes = _own_nodes(scope)
            if any(_reads(n) for n in nodes) and any(_names_ledger(n) for n in nodes):
                found.append(f"{rel}:{getattr(scope, 'name', '<module>')}")
    return found


def test_only_the_ledger_modules_glob_or_read_ledger_files() -> None:
    assert ledger_reads(SRC) == [], "read ledgers through oiv4.io.ledger / oiv4.io.sql"


@pytest.mark.parametrize(
    "code",
    [
        "def built(storage, s):\n    return storage.glob(f'{LAYOUT.ledger_dir(s)}/shard-*.parquet')\n",
        "def rows(storage, s, n):\n    with storage.open(LAYOUT.ledger_shard(s, n)) as fh:\n"
        "        return pq.read_table(fh)\n",
        "def sql(con):\n    return con.sql(\"SELECT * FROM read_parquet('R/ledger/train/*.parquet')\")\n",
    ],
)
def test_the_ledger_read_check_sees_a_reader_of_its_own(tmp_path: Path, code: str) -> None:
    (tmp_path / "io").mkdir()
    (tmp_path / "io" / "ledger.py").write_text(code)  # the reader itself may
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "x.py").write_text(code)
    assert [f.split(":")[0] for f in ledger_reads(tmp_path)] == ["stages/x.py"]
