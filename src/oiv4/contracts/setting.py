"""`setting()`: a dataclass field that carries its own help text and command-line spelling.

Settings dataclasses are the single place where a default lives; the CLI generates its options from
these fields (`oiv4.cli.options`), so a default or a help text is written once. Keys understood by the
generator, all optional except `help` and `flag`:

- `flag`: the option, e.g. "--max-mb"; "--x/--no-x" pairs for booleans. Written out at every field, so
  `grep -- --max-mb src/` finds it (a field kept off the command line has none).
- `short`: a one-letter alias such as "-r".
- `scale`: the field holds `cli value * scale` (e.g. MiB on the command line, bytes in the field).
- `cli_type`: the command line's type when it differs from the field's (e.g. float megapixels -> int pixels).
- `choices`: the accepted values of a string field.
- `default_text`: what `--help` shows as the default when the value itself says nothing (e.g. None).
- `cli`: False keeps the field off the command line; `why` must then say why (the test checks both).
- `shared`: one option per command sets this field wherever the command's settings hold it (e.g.
  `--allow-private-networks` of `oiv4 build` for the metadata, archive and fetch transfers alike).

A field holding another settings dataclass is declared with `group()`: its fields become options too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, field
from typing import Any


def setting(default: Any = MISSING, *, help: str, default_factory: Any = MISSING, **cli: Any) -> Any:
    """A dataclass `field` whose metadata holds `help` and the CLI keys above."""
    if cli.get("cli") is False:
        if not cli.get("why") or cli.get("flag"):
            raise TypeError("a setting kept off the command line needs a `why`, and has no `flag`")
    elif not cli.get("flag"):
        raise TypeError("a setting spells its command-line flag where it is declared (`flag=...`)")
    meta = {"help": help, **cli}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def group(default: Any, *, unused: Mapping[str, str] | None = None) -> Any:
    """A dataclass field holding the settings dataclass instance `default` (frozen, so safely shared).

    `unused` maps fields of it that this owner never reads to why (e.g. ranged parts for whole images):
    they stay off the command line of every command using the owner.
    """
    return field(default_factory=lambda: default, metadata={"unused": dict(unused or {})})
