"""Optional dependencies stay optional: the core imports none of them, a missing extra is a one-line hint.

Each hint test runs oiv4 in a subprocess where the optional module is made unimportable
(`sys.modules[name] = None` makes `import name` raise ImportError exactly as an absent package does), so
the real import path runs; nothing of oiv4 is replaced.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from oiv4.contracts.errors import MissingExtraError
from oiv4.contracts.extras import require
from oiv4.io.storage import Storage
from support.fetch_env import write_manifest
from support.layout_builder import build_set
from support.paths import REPO

SRC = REPO / "src"
#: Importable only with an extra (boto3 only with [dev]: tests seed moto with it, oiv4 itself never imports it).
OPTIONAL = (
    "dask",
    "distributed",
    "s3fs",
    "aiobotocore",
    "boto3",
    "botocore",
    "torch",
    "faiss",
    "open_clip",
    "torchvision",
)


def _run(script: str, *, hide: tuple[str, ...] = (), cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `script` in a fresh interpreter that sees this tree's oiv4 and cannot import `hide`."""
    prelude = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in hide)
    env_path = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": env_path, "COLUMNS": "200"},
    )


def test_importing_every_core_module_loads_no_optional_dependency() -> None:
    # Everything but the modules that exist to use an extra; `oiv4 --help` renders every command too.
    script = """
        import importlib, pkgutil, sys
        import oiv4, oiv4_mirror
        skip = {"oiv4.run.dask_executor", "oiv4.read.torch_adapter", "oiv4.stages.features.nets"}
        names = [m.name for pkg in (oiv4, oiv4_mirror) for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
        for name in names:
            if name not in skip and not name.endswith(".__main__"):  # __main__ would run the CLI
                importlib.import_module(name)
        from typer.testing import CliRunner
        from oiv4.cli import app
        assert CliRunner().invoke(app, ["--help"]).exit_code == 0
        assert CliRunner().invoke(app, ["fetch", "--help"]).exit_code == 0
        print(len(names), "modules")
        print("LOADED", sorted({m.split(".")[0] for m in sys.modules} & set(@OPTIONAL@)))
    """.replace("@OPTIONAL@", repr(OPTIONAL))
    done = _run(script)
    assert done.returncode == 0, done.stderr
    assert "LOADED []" in done.stdout, done.stdout
    assert int(done.stdout.split()[0]) > 40  # the walk really found the package's modules


def test_the_dask_executor_without_dask_raises_the_hint_before_doing_anything() -> None:
    done = _run(
        """
        from oiv4.contracts.errors import UsageError
        from oiv4.contracts.extras import MissingExtraError
        from oiv4.run.dask_executor import run_dask
        from oiv4.run.executor import ExecutorSettings
        try:
            run_dask([], print, ExecutorSettings(kind="dask"))
        except MissingExtraError as exc:
            # A usage error: the CLI prints every category in one line, so the hint needs no handling of its own.
            print("HINT", isinstance(exc, UsageError), exc)
        """,
        hide=("dask", "distributed"),
    )
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.strip()
        == "HINT True the dask executor needs the [dask] extra: in the oiv4 clone, pip install '.[dask]'"
    )


def test_oiv4_fetch_with_the_dask_executor_and_no_dask_prints_only_the_hint_before_any_progress(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    rows = [{"ImageID": f"{i:016x}", "OriginalURL": f"http://127.0.0.1:9/{i}.jpg"} for i in range(3)]
    write_manifest(storage, "train", rows)
    # Progress on: the options are checked before the progress display starts, so nothing else is printed.
    script = f"""
        sys.argv = ["oiv4", "fetch", "train", "--root", {str(tmp_path)!r}, "--executor", "dask"]
        from oiv4.cli import main
        main()
    """
    done = _run(script, hide=("dask", "distributed"))
    assert done.returncode == 2, done.stderr
    assert (
        done.stderr
        == "oiv4 fetch: the dask executor needs the [dask] extra: in the oiv4 clone, pip install '.[dask]'\n"
    )
    assert done.stdout == ""
    assert not (tmp_path / "train").exists() or not any(p.is_file() for p in (tmp_path / "train").rglob("*"))


def test_oiv4_fetch_into_an_s3_root_without_s3fs_prints_only_the_install_hint(tmp_path: Path) -> None:
    # Nothing about credentials or endpoints: they are not the problem, and the hint must not drown in them.
    script = """
        sys.argv = ["oiv4", "fetch", "train", "--root", "s3://bucket/prefix"]
        from oiv4.cli import main
        main()
    """
    done = _run(script, hide=("s3fs",), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr == "oiv4 fetch: an s3:// root needs the [s3] extra: in the oiv4 clone, pip install '.[s3]'\n"
    assert done.stdout == ""


def test_an_s3_root_without_s3fs_names_the_s3_extra() -> None:
    done = _run(
        """
        from oiv4.contracts.extras import MissingExtraError
        from oiv4.io.storage import Storage
        try:
            Storage("s3://bucket/prefix").exists("plan/summary.json")
        except MissingExtraError as exc:
            print("HINT", exc)
        """,
        hide=("s3fs",),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "HINT an s3:// root needs the [s3] extra: in the oiv4 clone, pip install '.[s3]'"


def test_an_s3_archive_source_without_its_client_names_the_s3_extra() -> None:
    done = _run(
        """
        from oiv4.contracts.extras import MissingExtraError
        from oiv4.stages.archives.sources import S3Source
        try:
            S3Source("s3://open-images-dataset/tar/")
        except MissingExtraError as exc:
            print("HINT", exc)
        """,
        hide=("s3fs", "aiobotocore"),
    )
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.strip()
        == "HINT an s3:// archive source needs the [s3] extra: in the oiv4 clone, pip install '.[s3]'"
    )


def test_tensors_without_torch_name_the_torch_extra_while_pil_items_still_work(tmp_path: Path) -> None:
    build_set(tmp_path, "validation", 4, "archive_zip")
    done = _run(
        f"""
        import oiv4
        from oiv4.contracts.extras import MissingExtraError
        s = oiv4.open({str(tmp_path)!r})["validation"]
        print("PIL", s.torch()[0].mode)
        try:
            s.torch(to_tensor=True)[0]
        except MissingExtraError as exc:
            print("HINT", exc)
        """,
        hide=("torch",),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "PIL RGB",
        "HINT TorchImageDataset(to_tensor=True) needs the [torch] extra: in the oiv4 clone, pip install '.[torch]'",
    ]


def test_an_installed_but_broken_extra_says_what_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Present but unimportable (one of its own dependencies is missing): the hint alone would send the
    # user round in circles, so the underlying reason is part of the one line.
    (tmp_path / "oiv4_brokenextra").mkdir()
    (tmp_path / "oiv4_brokenextra" / "__init__.py").write_text("import oiv4_dependency_that_is_not_there\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtraError) as caught:
        require("json", "oiv4_brokenextra", extra="dask", feature="the dask executor")
    message = str(caught.value)
    assert message.startswith(
        "the dask executor needs the [dask] extra: in the oiv4 clone, pip install '.[dask]' (import oiv4_brokenextra"
    )
    assert "oiv4_dependency_that_is_not_there" in message
    assert "\n" not in message
    assert caught.value.extra == "dask" and caught.value.module == "oiv4_brokenextra"


def test_an_extra_whose_import_raises_something_else_is_named_with_what_it_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not an ImportError: a binary extension built for another torch raises RuntimeError or OSError at import.
    (tmp_path / "oiv4_raisingextra").mkdir()
    (tmp_path / "oiv4_raisingextra" / "__init__.py").write_text(
        "raise RuntimeError('operator x::y does not\\nexist')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtraError) as caught:
        require("oiv4_raisingextra", extra="clip", feature="the clip-vit-b-32 model")
    assert str(caught.value) == (
        "the clip-vit-b-32 model needs the [clip] extra: in the oiv4 clone, pip install '.[clip]' "
        "(import oiv4_raisingextra failed: RuntimeError: operator x::y does not exist)"
    )
    assert caught.value.cause == "RuntimeError: operator x::y does not exist"


def test_require_returns_the_module_when_it_is_installed() -> None:
    import json

    assert require("json", extra="x", feature="y") is json
    with pytest.raises(ValueError):
        require(extra="x", feature="y")


# ---- the declared ranges -------------------------------------------------------------------------


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_every_dependency_has_a_lower_bound_and_the_lock_satisfies_every_range() -> None:
    project = _project()
    lock = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            lock[name.strip().lower().replace("_", "-")] = Version(version.strip())
    declared = [Requirement(r) for r in project["dependencies"]]
    for extra, reqs in project["optional-dependencies"].items():
        declared += [Requirement(r) for r in reqs if not r.startswith("oiv4[")]
        assert extra in ("s3", "dask", "torch", "features", "clip", "neighbors", "all", "dev"), extra
    for req in declared:
        assert any(s.operator == ">=" for s in req.specifier), f"{req} has no tested lower bound"
        assert not any(s.operator == "==" for s in req.specifier), f"{req} is pinned: pins belong in requirements.lock"
        name = req.name.lower().replace("_", "-")
        if name in lock:  # torch is declared, not locked: it is never installed by make/CI
            assert lock[name] in req.specifier, f"requirements.lock has {name}=={lock[name]}, outside {req}"


def test_the_core_install_declares_no_cluster_cloud_or_torch_package() -> None:
    project = _project()
    core = {Requirement(r).name.lower() for r in project["dependencies"]}
    assert core.isdisjoint({"dask", "distributed", "s3fs", "boto3", "botocore", "torch"}), core
    extras = project["optional-dependencies"]
    assert {Requirement(r).name for r in extras["dask"]} == {"dask", "distributed"}
    assert {Requirement(r).name for r in extras["s3"]} == {"s3fs", "aiobotocore", "botocore"}
    assert {Requirement(r).name for r in extras["torch"]} == {"torch"}
    # [all] is every other extra but dev.
    assert extras["all"] == [f"oiv4[{','.join(sorted(set(extras) - {'all', 'dev'}, key=list(extras).index))}]"]
    assert "oiv4[s3,dask]" in extras["dev"]  # `make test` runs the s3 and dask tests
    assert (REPO / "LICENSE").read_text().startswith("MIT License")


def test_the_cluster_guide_installs_the_dask_extra_it_then_uses() -> None:
    # The guide runs `.venv/bin/dask scheduler`: only the [dask] extra installs that command
    # (tests/project/test_install.py runs it from the lowest [s3,dask] install).
    text = (REPO / "docs" / "cluster.md").read_text()
    installs = [line for line in text.splitlines() if "pip install" in line and "requirements.lock" in line]
    assert installs and all("'.[s3,dask]'" in line for line in installs), installs
    assert ".venv/bin/dask scheduler" in text and "comes with oiv4" not in text


def test_readme_installs_from_a_clone_not_from_a_package_index() -> None:
    readme = (REPO / "README.md").read_text()
    assert "pip install oiv4" not in readme  # no index serves it
    assert "`pip install .`" in readme and "pip install '.[s3,dask]'" in readme
