"""The layers of docs/architecture.md, enforced: each layer imports only the layers below it.

contracts -> io -> stages -> run -> read -> report -> cli. Stages never import each other. The mirror is a
separate package that only the demo, the CLI's `mirror` command, tests and benchmarks use.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from support.paths import SRC

LAYERS = ("contracts", "io", "stages", "run", "read", "report", "cli")
#: Modules allowed to import the mirror (it starts one); everything else in oiv4 must not.
MIRROR_USERS = ("oiv4.cli",)
MAX_LINES = 400
#: Modules of the stages layer that are no stage: every stage may import them, and they import no stage.
SHARED_STAGE_MODULES = ("base",)
#: Debts still being paid off by the restructuring; each entry must still be true (so the list only shrinks).
KNOWN_VIOLATIONS: set[str] = set()
KNOWN_LONG: set[str] = set()


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append((".".join(parts), path))
    return out


def _imports(module: str, path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append(name)
            found += [f"{name}.{a.name}" for a in node.names]  # `from oiv4 import stages`
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "oiv4" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in LAYERS else None


def _violations() -> list[str]:
    problems = []
    for module, path in _modules():
        own = _layer(module)
        for imported in _imports(module, path):
            if imported.startswith("oiv4_mirror"):
                if module.startswith("oiv4.") and not module.startswith(MIRROR_USERS):
                    problems.append(f"{module} imports the mirror ({imported})")
                continue
            if module.startswith("oiv4_mirror"):
                if _layer(imported) not in (None, "contracts", "io"):
                    problems.append(f"the mirror imports {imported}: it may use contracts and io only")
                continue
            other = _layer(imported)
            if own is None or other is None:
                continue
            if LAYERS.index(other) > LAYERS.index(own):
                problems.append(f"{module} ({own}) imports {imported} ({other}), a layer above it")
            if own == other == "stages":
                mine, theirs = module.split(".")[2], imported.split(".")[2] if imported.count(".") >= 2 else ""
                if theirs and mine != theirs and theirs not in SHARED_STAGE_MODULES:
                    problems.append(f"stage {module} imports another stage ({imported})")
    return sorted(set(problems))


def test_every_layer_imports_only_the_layers_below_it() -> None:
    found = set(_violations())
    assert found - KNOWN_VIOLATIONS == set(), "new layer violations"
    assert KNOWN_VIOLATIONS - found == set(), "fixed: remove these from KNOWN_VIOLATIONS"


def test_the_checker_sees_a_violation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A rule test that cannot fail proves nothing: plant a stage importing another stage and an io module
    # importing a stage, and the checker must name both.
    fake = tmp_path / "oiv4"
    (fake / "stages" / "plan").mkdir(parents=True)
    (fake / "io").mkdir()
    (fake / "stages" / "plan" / "__init__.py").write_text("from oiv4.stages.fetch import run\n")
    (fake / "io" / "x.py").write_text("import oiv4.stages.verify\n")
    # The shared base may be imported by any stage, but it is no back door: it may not import a stage either.
    (fake / "stages" / "verify.py").write_text("from oiv4.stages.base import ShardStage\n")
    (fake / "stages" / "base.py").write_text("from oiv4.stages.hash import HASH\n")
    monkeypatch.setattr(__import__(__name__), "SRC", tmp_path)
    found = _violations()
    assert any("stage oiv4.stages.plan imports another stage" in p for p in found)
    assert any("stage oiv4.stages.base imports another stage" in p for p in found)
    assert not any(p.startswith("stage oiv4.stages.verify ") for p in found)
    assert any("oiv4.io.x (io) imports oiv4.stages.verify" in p for p in found)


def test_no_module_is_too_long_to_read_in_one_sitting() -> None:
    long = {m for m, p in _modules() if len(p.read_text().splitlines()) > MAX_LINES}
    assert long - KNOWN_LONG == set(), "split these modules"
    assert KNOWN_LONG - long == set(), "short now: remove these from KNOWN_LONG"
