"""No import cycles in src/, counting every import: at module level, inside functions and under TYPE_CHECKING.

An import moved into a function only hides a cycle until the day the import order changes; a module pair that needs
each other is one idea split in two, or a shared piece that belongs a level down.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import test_architecture as arch

#: Cycles still being taken apart by the restructuring; each must still be a cycle (so the list only shrinks).
KNOWN_CYCLES: set[frozenset[str]] = set()


def _targets(module: str, path: Path, modules: set[str]) -> set[str]:
    """The project's modules that `module` imports: `from p import m` of a submodule m counts as importing p.m
    (not p, whose `__init__` may import its submodules), `from m import name` as importing m."""

    def owner(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {owner(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else owner(base))
    return found - {"", module}


def _graph() -> dict[str, set[str]]:
    """module -> the modules of the project it imports, wherever the import statement is."""
    modules = dict(arch._modules())
    return {m: _targets(m, path, set(modules)) for m, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def test_no_module_imports_itself_back_through_others() -> None:
    found = set(_cycles(_graph()))
    assert {tuple(sorted(c)) for c in found - KNOWN_CYCLES} == set(), "new import cycles"
    assert KNOWN_CYCLES - found == set(), "gone: remove these from KNOWN_CYCLES"


def test_the_cycle_finder_sees_a_cycle_hidden_in_a_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Plant a -> b at module level and b -> c -> a inside a function and under TYPE_CHECKING: one cycle of three.
    pkg = tmp_path / "oiv4" / "io"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text("from oiv4.io.b import thing\n")
    (pkg / "b.py").write_text("def f():\n    from oiv4.io import c\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import oiv4.io.a\n")
    (pkg / "d.py").write_text("import oiv4.io.a\n")  # imports into the cycle, not part of it
    monkeypatch.setattr(arch, "SRC", tmp_path)
    assert _cycles(_graph()) == [frozenset({"oiv4.io.a", "oiv4.io.b", "oiv4.io.c"})]
