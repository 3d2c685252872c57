"""The check behind "settings, once": every settings field has an option whose default is the field's.

`tests/test_cli_settings.py` runs it over every generated command, so a new settings field without an
option, or a CLI default that drifted from the dataclass, fails the suite.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from typer.core import TyperCommand

from oiv4.cli.options import SettingsBinding, _walk


def _instance_default(cls: type, path: tuple[str, ...]) -> Any:
    """The value at `path` in a default-constructed `cls`: what the settings really default to, nested
    default factories included (MISSING when `cls` needs arguments)."""
    try:
        value: Any = cls()
    except TypeError:
        return dataclasses.MISSING
    for name in path:
        value = getattr(value, name)
    return value


def check_command(binding: SettingsBinding, command: TyperCommand) -> list[str]:
    """Problems between a command and its settings: a field without an option, a default that differs."""
    problems = []
    params = {p.name: p for p in command.params}
    covered = {s.path for s in binding.specs}
    for name, cls in binding.groups.items():
        for path, f, _hint, _value in _walk(cls, (name,)):
            dotted = ".".join(path)
            if path in covered or dotted in binding.exclude:
                continue
            if f.metadata.get("cli") is False and f.metadata.get("why"):
                continue
            problems.append(f"{command.name}: {dotted} has no option (nor cli=False with a why)")
    for s in binding.specs:
        p = params.get(s.param)
        if p is None:
            problems.append(f"{command.name}: {s.dotted} has no parameter {s.param}")
            continue
        given = p.default
        value = s.to_field(list(given) if isinstance(given, tuple) and s.repeated_item is not None else given)
        expected = _instance_default(binding.groups[s.path[0]], s.path[1:])
        if expected is not dataclasses.MISSING and value != expected:
            problems.append(
                f"{command.name}: {p.opts[0]} defaults to {given!r}, but {s.dotted} defaults to {expected!r}"
            )
    return problems
