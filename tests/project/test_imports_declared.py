"""What src imports is declared: every third-party module is a dependency of the install that reaches it.

A module that came only through another package (click through typer, until typer >= 0.26 vendored its own)
breaks a plain `pip install .` the day that package drops it, and nothing in a dev venv notices: the lock
brings everything. So every import under src/ (top level, inside functions, and the names passed to
`oiv4.contracts.extras.require`) is read from the source and checked against pyproject.toml:

- an import in a module that exists to use an extra (GATED_MODULES), or of a module some `require(...,
  extra=E)` call guards, belongs to that extra: it must be a core dependency or one of extra E's;
- every other import belongs to the core install and must be a core dependency.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from support.paths import REPO

SRC = REPO / "src"
FIRST_PARTY = {"oiv4", "oiv4_mirror"}
#: Modules imported only behind an extra: by `require` first, or never by the installed code at all.
GATED_MODULES = {
    "oiv4.run.dask_executor": "dask",  # run.executor calls require("dask", "distributed") before importing it
    "oiv4.read.torch_adapter": "torch",  # imports torch only after require("torch")
    "oiv4_mirror.tls": "dev",  # the HTTPS mirror's test CA: only tests import it
    "oiv4.stages.features.nets": "features",  # imported by models.py only after require("torch")
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _required(node: ast.Call) -> tuple[list[str], str] | None:
    """(modules, extra) of a `require("a", "b", extra="x", ...)` call, else None."""
    name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
    if name != "require":
        return None
    extra = next((k.value.value for k in node.keywords if k.arg == "extra" and isinstance(k.value, ast.Constant)), None)
    modules = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    return (modules, extra) if extra and modules else None


def scan() -> tuple[list[tuple[str, str, int, bool]], dict[str, set[str]]]:
    """Every third-party import under src: (importing module, top-level name, line, at module level), and
    the extras each `require`d top-level name belongs to (torch: `[torch]` for the dataset adapter and
    `[features]` for `oiv4 features`; it must be declared in each)."""
    imports, required = [], {}
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        top_level = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Call) and (found := _required(node)):
                modules, extra = found
                for m in modules:
                    required.setdefault(m.split(".")[0], set()).add(extra)
                names = modules
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                    imports.append((_module_name(path), top, node.lineno, id(node) in top_level))
    return imports, required


def _declared() -> dict[str, set[str]]:
    """Distribution names per install: "core" and every extra (an extra also has the core's)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    out = {"core": core}
    for extra, reqs in project["optional-dependencies"].items():
        out[extra] = core | {canonicalize_name(Requirement(r).name) for r in reqs if not r.startswith("oiv4[")}
    return out


@functools.cache
def _providers() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _distribution(top: str) -> str:
    """The distribution that provides import name `top` here (the name itself when it is not installed, e.g. torch)."""
    found = _providers().get(top, [top])
    assert len(set(found)) == 1, f"{top} is provided by several distributions: {found}"
    return canonicalize_name(found[0])


def test_every_third_party_import_under_src_is_declared_for_the_install_that_reaches_it() -> None:
    imports, required = scan()
    declared = _declared()
    problems = []
    for module, top, line, _ in imports:
        extras = {GATED_MODULES[module]} if module in GATED_MODULES else required.get(top) or {"core"}
        dist = _distribution(top)
        for extra in sorted(extras):
            if dist not in declared[extra]:
                where = "a core dependency" if extra == "core" else f"a dependency of the [{extra}] extra (or the core)"
                problems.append(f"{module}:{line} imports {top} ({dist}), which is not {where} in pyproject.toml")
    assert not problems, "\n".join(problems)
    # The scan really reads the code: the core's own imports and the extras' are all found.
    tops = {top for _, top, _, _ in imports}
    assert {"numpy", "pyarrow", "PIL", "aiohttp", "typer", "dask", "s3fs", "torch", "cryptography"} <= tops, tops
    assert required == {
        "dask": {"dask"},
        "distributed": {"dask"},
        "s3fs": {"s3"},
        "aiobotocore": {"s3"},
        "botocore": {"s3"},
        "torch": {"torch", "features"},
        "open_clip": {"clip"},
        "faiss": {"neighbors"},
    }


def test_a_required_module_is_imported_only_inside_functions_outside_its_gated_module() -> None:
    # A module-level `import s3fs` in a core module would make every core command need the extra.
    imports, required = scan()
    eager = [
        f"{module}:{line} imports {top} at module level"
        for module, top, line, at_module_level in imports
        if at_module_level and top in required and module not in GATED_MODULES
    ]
    assert not eager, eager


def test_the_cli_imports_no_click() -> None:
    # typer >= 0.26 parses with its own copy of click and no longer installs the click package.
    assert not [i for i in scan()[0] if i[1] == "click"]
