"""No function in src/ is longer than ~60 lines unless a comment directly above it says why it must stay long.

Length is counted from the first statement of the body (after the signature and the docstring) to the last line,
so a long signature (a CLI command's options) or a long docstring does not count. The reason is a comment
directly above the `def` (or its decorators): a line starting with `# Kept long:` and the comment lines below it.
"""

from __future__ import annotations

import ast
import shutil
import textwrap
from pathlib import Path

from support import paths

SRC = paths.SRC
MAX_LINES = 60
MARK = "# Kept long:"


def body_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement after the docstring to the end of the function."""
    body = fn.body
    if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return (fn.end_lineno or fn.lineno) - body[0].lineno + 1


def reason_above(lines: list[str], fn: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """The `# Kept long:` comment block directly above `fn` (its decorators included), or ""."""
    first = min([fn.lineno, *(d.lineno for d in fn.decorator_list)]) - 1  # 0-based line of the def/decorator
    block: list[str] = []
    i = first - 1
    while i >= 0 and lines[i].strip().startswith("#"):
        block.insert(0, lines[i].strip())
        i -= 1
    starts = [k for k, line in enumerate(block) if line.startswith(MARK)]
    if not starts:
        return ""
    return " ".join(line.lstrip("# ") for line in block[starts[-1] :]).removeprefix(MARK.lstrip("# ")).strip()


def long_functions(root: Path) -> list[str]:
    """Every function under `root` over MAX_LINES without a reason above it, as `path:line name (N lines)`."""
    found = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            n = body_lines(node)
            # A reason is a sentence, not the bare mark.
            if n > MAX_LINES and len(reason_above(lines, node).split()) < 5:
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({n} lines)")
    return found


def test_no_function_is_long_without_a_reason_written_above_it() -> None:
    assert long_functions(SRC) == []


def _long_function(name: str, above: str = "") -> str:
    statements = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES + 1))
    return f'{above}def {name}():\n    """Docstring lines do not count."""\n{statements}\n'


def test_the_check_finds_a_planted_long_function_in_a_copy_of_src(tmp_path: Path) -> None:
    fake = tmp_path / "src"
    shutil.copytree(SRC, fake, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    assert long_functions(fake) == []
    planted = fake / "oiv4" / "io" / "planted.py"
    planted.write_text(
        _long_function("bare")
        + "\n\n"
        + _long_function("excused", "# Kept long: one table of cases that reads best as one sequence.\n")
        + "\n\n"
        + _long_function("detached", "# Kept long: a reason separated from its function by a blank line.\n\n")
        + "\n\n"
        + _long_function("mark_only", "# Kept long:\n")
        + "\n\n"
        + _long_function("decorated", "# Kept long: the reason goes above the decorators.\n@staticmethod\n")
        + "\n\n"
        + "def short():\n"
        + textwrap.indent("\n".join(f"x{i} = {i}" for i in range(MAX_LINES)), "    ")
        + "\n"
    )
    found = [f.split(" ")[1] for f in long_functions(fake)]
    assert found == ["bare", "detached", "mark_only"]
