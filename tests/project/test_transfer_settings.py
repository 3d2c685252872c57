"""Transfer settings, once: only `TransferSettings` declares timeouts, retries, the network guard or ranged
parts, and no code copies one settings object into another field by field.

Both rules are checked on the source (every module of `src/`), and each checker is shown to catch a planted
violation in a temp copy, so a rule that cannot fail does not pass for one that holds.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

from support import paths

SRC = paths.SRC
HOME = ("oiv4/contracts/transfer.py", "TransferSettings")
#: Field names that say "how a transfer behaves": timeouts, the retry policy, the guard, ranged parts.
TRANSFER_FIELD = re.compile(
    r"timeout|deadline|attempts|backoff|retry_after|jitter|allow_private|ca_bundle|allowed_endpoints|part_size"
    r"|^connections$|checkpoint|^(connect|read|base|max)_s$"
)
SETTINGS_NAME = re.compile(r"(Settings|Policy|Timeouts|Limits|Config)$")


def _is_dataclass(node: ast.ClassDef) -> bool:
    return any("dataclass" in ast.unparse(d) for d in node.decorator_list)


def _fields(node: ast.ClassDef) -> list[ast.AnnAssign]:
    return [n for n in node.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]


def _declared_as_setting(field: ast.AnnAssign) -> bool:
    call = field.value
    return isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in ("setting", "group")


def settings_classes(src: Path) -> dict[str, tuple[str, ast.ClassDef]]:
    """Every settings dataclass under `src` by name: named like one, or with fields declared by `setting()`."""
    found = {}
    for path in sorted(src.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ClassDef) and _is_dataclass(node)):
                continue
            if SETTINGS_NAME.search(node.name) or any(_declared_as_setting(f) for f in _fields(node)):
                found[node.name] = (path.relative_to(src).as_posix(), node)
    return found


def transfer_fields_elsewhere(src: Path) -> list[str]:
    """`module: Class.field` for each transfer field a settings class other than TransferSettings declares."""
    out = []
    for name, (rel, node) in settings_classes(src).items():
        if (rel, name) == HOME:
            continue
        out += [f"{rel}: {name}.{f.target.id}" for f in _fields(node) if TRANSFER_FIELD.search(f.target.id)]  # type: ignore[union-attr]
    return sorted(out)


def _copied_attributes(call: ast.Call) -> list[str]:
    """The `obj.attr` arguments of `call` that read the same object (`s.connect_timeout, s.read_timeout`)."""
    values = list(call.args) + [k.value for k in call.keywords if k.arg is not None]
    by_owner: dict[str, list[str]] = {}
    for v in values:
        if isinstance(v, ast.Attribute):
            by_owner.setdefault(ast.unparse(v.value), []).append(ast.unparse(v))
    return max(by_owner.values(), key=len, default=[])


def field_copies(src: Path) -> list[str]:
    """Calls that build a settings object from two or more attributes of another one: a translation by hand.

    Covers constructing a settings class (`RangedSettings(s.part_size, s.connections, ...)`) and
    `dataclasses.replace(x, a=s.a, b=s.b)`."""
    names = set(settings_classes(src))
    out = []
    for path in sorted(src.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = ast.unparse(node.func).rsplit(".", 1)[-1]
            if func not in names and func != "replace":
                continue
            copied = _copied_attributes(node)
            if len(copied) >= 2:
                out.append(f"{path.relative_to(src).as_posix()}:{node.lineno}: {func}({', '.join(copied)})")
    return out


def test_only_transfer_settings_declares_timeouts_retries_the_guard_or_parts() -> None:
    assert transfer_fields_elsewhere(SRC) == []
    home = {f.target.id for f in _fields(settings_classes(SRC)["TransferSettings"][1])}  # type: ignore[union-attr]
    assert {"connect_timeout_s", "attempts", "allow_private_networks", "part_size"} <= home


def test_no_settings_object_is_copied_field_by_field() -> None:
    assert field_copies(SRC) == []


def _planted(tmp_path: Path, rel: str, code: str) -> Path:
    copy = tmp_path / "src"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (copy / rel).write_text(code)
    return copy


def test_the_checkers_see_a_second_timeout_and_a_copy(tmp_path: Path) -> None:
    copy = _planted(
        tmp_path,
        "oiv4/stages/planted.py",
        "from dataclasses import dataclass\n"
        "from oiv4.contracts.transfer import TransferSettings\n\n"
        "@dataclass(frozen=True)\n"
        "class PlantedSettings:\n"
        "    read_timeout: float = 3.0\n\n"
        "def translate(s: PlantedSettings) -> TransferSettings:\n"
        "    return TransferSettings(read_timeout_s=s.read_timeout, connect_timeout_s=s.read_timeout)\n",
    )
    assert transfer_fields_elsewhere(copy) == ["oiv4/stages/planted.py: PlantedSettings.read_timeout"]
    assert field_copies(copy) == ["oiv4/stages/planted.py:9: TransferSettings(s.read_timeout, s.read_timeout)"]
