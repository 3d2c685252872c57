"""Comments and docstrings in src/ say why the code is as it is, not how it came to be.

"issue #11", "(Before, ...)", "used to", "previously", "no longer", "once boto3 is gone": history belongs in git
log and the issue tracker; a reader of the code needs the reason that still holds.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

from support import paths

SRC = paths.SRC
HISTORY = re.compile(
    r"\bissues? #\d+|(?:^|[.(;]\s*)before[,:] |(?<!\bis )(?<!\bare )(?<!\bbe )(?<!\bbeing )\bused to\b"
    r"|\bpreviously\b|\bno longer\b|\bonce [\w.`]+ (is|are) gone\b|\bformerly\b|\bnot anymore\b",
    re.IGNORECASE,
)


def _texts(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every comment and docstring in `path`."""
    source = path.read_text()
    found = [
        (tok.start[0], tok.string)
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc is not None:
                found.append((node.body[0].lineno, doc))
    return found


def history_comments(root: Path) -> list[str]:
    """`file:line: phrase` for every comment or docstring under `root` that narrates history."""
    out = []
    for path in sorted(root.rglob("*.py")):
        for line, text in _texts(path):
            for match in HISTORY.finditer(" ".join(text.split())):
                out.append(f"{path.relative_to(root)}:{line}: {match.group(0)!r}")
    return out


def test_no_comment_or_docstring_in_src_narrates_history() -> None:
    assert history_comments(SRC) == []


@pytest.mark.parametrize(
    "planted",
    [
        "# Flickr throttles hard (issue #11).\n",
        '"""Reads the ledger.\n\n(Before, it globbed the shards itself.)\n"""\n',
        "def f():\n    # This used to retry forever.\n    pass\n",
        "x = 1  # no longer needed once boto3 is gone\n",
    ],
)
def test_the_check_finds_a_planted_history_comment(tmp_path: Path, planted: str) -> None:
    (tmp_path / "m.py").write_text(planted)
    assert history_comments(tmp_path), planted
    (tmp_path / "m.py").write_text("# The row is used to find it, before any read.\n")
    assert history_comments(tmp_path) == []
