"""Command-line options generated from the settings dataclasses, so a default and its help live once.

`@settings_command({"settings": FetchSettings, "executor": ExecutorSettings})` gives a command one option
per dataclass field (nested dataclasses included) and hands the function ready-built instances under
those parameter names. The spelling comes from each field's metadata (see `oiv4.contracts.setting`):
flags, MiB/MB/megapixel scales, choices, `--x/--no-x` booleans. When two fields of one command want the
same flag (e.g. `attempts` of the metadata download, the fetch and the archives in `oiv4 build`), both
are prefixed with the part of their path that tells them apart: `--metadata-attempts`, `--fetch-attempts`.
A new field in a settings class therefore appears on every command that uses the class, without edits here.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import typer

from oiv4.contracts.errors import SettingRangeError, UsageError

_NONE = type(None)


@dataclass(frozen=True)
class OptionSpec:
    """One settings field as one command-line option."""

    path: tuple[str, ...]  # ("settings", "http", "attempts"): group parameter, nested fields, field
    field: dataclasses.Field
    hint: Any  # the field's resolved type
    flag: str  # "--attempts", or "--rotate/--no-rotate" for a boolean
    short: str | None
    #: The default as the enclosing settings make it: a parent's `default_factory` may set a nested field to
    #: something other than that field's own default (DownloadSettings makes RetryPolicy(attempts=8)).
    inherited: Any = dataclasses.MISSING

    @property
    def meta(self) -> Mapping[str, Any]:
        return self.field.metadata

    @property
    def param(self) -> str:
        """The Python parameter name in the generated signature (unique, never shown)."""
        return "opt__" + "__".join(self.path)

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    @property
    def default(self) -> Any:
        f = self.field
        if self.inherited is not dataclasses.MISSING:
            return self.inherited
        return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]

    @property
    def optional(self) -> bool:
        return _NONE in typing.get_args(self.hint)

    @property
    def base(self) -> Any:
        args = [a for a in typing.get_args(self.hint) if a is not _NONE]
        return args[0] if self.optional and len(args) == 1 else self.hint

    @property
    def repeated_item(self) -> Any | None:
        """The item type of a `tuple[X, ...]` field, which becomes a repeatable option."""
        base = self.base
        if typing.get_origin(base) is tuple:
            args = typing.get_args(base)
            if len(args) == 2 and args[1] is Ellipsis:
                return args[0]
        return None

    def cli_default(self) -> Any:
        """The default as the command line spells it (MiB for a bytes field, None for an empty list, ...)."""
        default = self.default
        if self.repeated_item is not None or default is None:
            return None
        scale = self.meta.get("scale")
        if scale:
            value = default / scale
            cli_type = self.meta.get("cli_type") or (int if value == int(value) else float)
            return cli_type(value)
        return default

    def to_field(self, value: Any) -> Any:
        """The field's value for what the command line gave (the inverse of `cli_default`)."""
        value = _plain(value)
        item = self.repeated_item
        if item is not None:
            if not value:
                return self.default
            return (
                tuple(item(v) for v in value)
                if isinstance(item, type) and issubclass(item, enum.Enum)
                else tuple(value)
            )
        if value is None:
            return self.default
        scale = self.meta.get("scale")
        if scale:
            return type(self.default)(round(value * scale)) if isinstance(self.default, int) else value * scale
        return value

    def choices(self) -> tuple[str, ...] | None:
        choices = self.meta.get("choices")
        item = self.repeated_item
        if choices is None and isinstance(item, type) and issubclass(item, enum.Enum):
            choices = tuple(e.value for e in item)
        return tuple(choices) if choices else None

    def annotation(self) -> Any:
        choices = self.choices()
        if self.repeated_item is not None:
            return typing.Optional[list[choice_enum(choices)] if choices else list[str]]  # noqa: UP045
        cli_type = self.meta.get("cli_type") or (choice_enum(choices) if choices else self.base)
        return typing.Optional[cli_type] if self.cli_default() is None else cli_type  # noqa: UP045 (typer reads it)

    def typer_option(self) -> Any:
        decls = [self.flag] + ([self.short] if self.short else [])
        text = self.meta.get("default_text")
        if text is None and self.repeated_item is not None:
            default = self.default
            text = ", ".join(getattr(v, "value", str(v)) for v in default) if default else False
        default = self.cli_default()
        if self.choices() and default is not None:
            default = choice_enum(self.choices())(default)
        help_text = self.meta["help"]
        if isinstance(text, str):  # typer would show "(text)"; the help says it plainly instead
            help_text, text = f"{help_text} \\[default: {text}]", False
        return typer.Option(default, *decls, help=help_text, show_default=text if text is not None else True)


@functools.cache
def choice_enum(choices: tuple[str, ...]) -> type[enum.Enum]:
    """A str Enum of `choices`: typer shows and checks the values of an Enum (it has no plain choice list)."""
    return enum.Enum("Choice", {c: c for c in choices}, type=str)  # type: ignore[return-value]


def _plain(value: Any) -> Any:
    """Enum members back to their strings; anything else unchanged."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    return value


def _hints(cls: type) -> dict[str, Any]:
    module = inspect.getmodule(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        try:
            out[f.name] = typing.get_type_hints(cls, vars(module) if module else None)[f.name]
        except NameError:  # a type only imported for type checking: only ever on fields kept off the CLI
            out[f.name] = Any
    return out


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _walk(cls: type, path: tuple[str, ...], instance: Any = None):
    """(path, field, hint, default) of every leaf field; nested dataclasses are walked into, and a leaf's
    default is read from the enclosing default instance (`instance`) when there is one."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        value = getattr(instance, f.name) if instance is not None else _field_default(f)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            yield from _walk(hint, (*path, f.name), value if value is not dataclasses.MISSING else None)
        else:
            yield (*path, f.name), f, hint, value


def _flag(f: dataclasses.Field, hint: Any) -> str:
    flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
    if (hint is bool or hint == bool | None) and "/" not in flag:
        flag = f"{flag}/--no-{flag[2:]}"
    return flag


def _prefixed(flag: str, prefix: str) -> str:
    return "/".join(
        ("--no-" + prefix + "-" + p[5:]) if p.startswith("--no-") else f"--{prefix}-{p[2:]}" for p in flag.split("/")
    )


def _names(flag: str) -> list[str]:
    return flag.split("/")


def collect(
    groups: Mapping[str, type],
    rename: Mapping[str, str] | None = None,
    exclude: Mapping[str, str] | None = None,
    reserved: set[str] | None = None,
) -> list[OptionSpec]:
    """One `OptionSpec` per field of `groups` that belongs on the command line.

    `rename` maps dotted paths to flags ("settings.executor.workers": "--workers"); `exclude` maps dotted
    paths to the reason the command spells them itself; `reserved` are names the command already uses.
    """
    rename, exclude, reserved = rename or {}, exclude or {}, set(reserved or ())
    raw = []
    for name, cls in groups.items():
        for path, f, hint, value in _walk(cls, (name,)):
            dotted = ".".join(path)
            if f.metadata.get("cli") is False or dotted in exclude:
                continue
            if "help" not in f.metadata:
                raise TypeError(f"{cls.__name__}.{f.name} has no help text: declare it with oiv4.contracts.setting")
            raw.append([path, f, hint, rename.get(dotted) or _flag(f, hint), value])
    fixed = {".".join(r[0]) for r in raw if ".".join(r[0]) in rename}
    # Fields whose flag clashes get the first path element that tells them apart as a prefix.
    by_flag: dict[str, list[list]] = {}
    for r in raw:
        by_flag.setdefault(_names(r[3])[0], []).append(r)
    for first, rows in by_flag.items():
        loose = [r for r in rows if ".".join(r[0]) not in fixed]
        if (len(rows) < 2 and first not in reserved) or not loose:
            continue
        for r in loose:
            others = [o[0] for o in rows if o is not r] or [()]
            depth = next(
                (i for i in range(len(r[0]) - 1) if any(len(o) <= i or o[i] != r[0][i] for o in others)), len(r[0]) - 2
            )
            r[3] = _prefixed(r[3], r[0][depth].replace("_", "-"))
    seen: dict[str, str] = {}
    for r in raw:
        for n in _names(r[3]):
            if n in seen or n in reserved:
                raise TypeError(f"option {n} is claimed by both {seen.get(n, 'the command')} and {'.'.join(r[0])}")
            seen[n] = ".".join(r[0])
    specs = []
    for path, f, hint, flag, value in raw:
        short = f.metadata.get("short")
        if short in reserved or short in seen:
            short = None
        if short:
            seen[short] = ".".join(path)
        specs.append(OptionSpec(path, f, hint, flag, short, value))
    return specs


def build(groups: Mapping[str, type], specs: list[OptionSpec], values: Mapping[str, Any]) -> dict[str, Any]:
    """The settings instances for `groups` from the command line's `values` (keyed by `OptionSpec.param`)."""
    by_path = {s.path: s for s in specs}

    def make(cls: type, path: tuple[str, ...]) -> Any:
        kwargs = {}
        hints = _hints(cls)
        for f in dataclasses.fields(cls):
            sub = (*path, f.name)
            hint = hints[f.name]
            if isinstance(hint, type) and dataclasses.is_dataclass(hint):
                kwargs[f.name] = make(hint, sub)
            elif sub in by_path:
                kwargs[f.name] = by_path[sub].to_field(values[by_path[sub].param])
        return cls(**kwargs)

    return {name: make(cls, (name,)) for name, cls in groups.items()}


def _own_names(sig: inspect.Signature, groups: Mapping[str, type]) -> set[str]:
    names: set[str] = set()
    for p in sig.parameters.values():
        if p.name in groups:  # replaced by the generated options: its name is no flag of the command
            continue
        decls = getattr(p.default, "param_decls", None) or ()
        names.update(d for decl in decls for d in decl.split("/"))
        names.add("--" + p.name.replace("_", "-"))
    return names


def settings_command(
    groups: Mapping[str, type],
    *,
    rename: Mapping[str, str] | None = None,
    exclude: Mapping[str, str] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a typer command so that its `groups` parameters are generated options (see the module doc).

    Settings that fail their own validation (`ValueError` in `__post_init__`) become a `UsageError`.
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn)
        # Only the command's own parameters need real types; the group parameters are replaced.
        hints = {
            p.name: eval(p.annotation, fn.__globals__) if isinstance(p.annotation, str) else p.annotation
            for p in sig.parameters.values()
            if p.name not in groups
        }
        own = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in sig.parameters.values()
            if p.name not in groups
        ]
        specs = collect(groups, rename, exclude, reserved=_own_names(sig, groups) | {"--help", "-h"})
        generated = [
            inspect.Parameter(
                s.param, inspect.Parameter.KEYWORD_ONLY, default=s.typer_option(), annotation=s.annotation()
            )
            for s in specs
        ]
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + generated

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            values = {s.param: kwargs.pop(s.param) for s in specs}
            try:
                built = build(groups, specs, values)
            except SettingRangeError as exc:
                raise UsageError(_range_message(exc, specs)) from None
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            return fn(**kwargs, **built)

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.__oiv4_settings__ = SettingsBinding(dict(groups), specs, dict(exclude or {}))  # type: ignore[attr-defined]
        return command

    return decorate


def _range_message(exc: SettingRangeError, specs: list[OptionSpec]) -> str:
    """The range error with the option as this command spells it (`--fetch-attempts` in `oiv4 build`)."""
    spec = next((s for s in specs if s.field is exc.field()), None)
    if spec is None:
        return str(exc)
    scale = spec.meta.get("scale")
    shown = exc.value / scale if scale and isinstance(exc.value, int | float) else exc.value
    return (
        f"{_names(spec.flag)[0]} must be {exc.rule}, got {shown:g}"
        if isinstance(shown, float)
        else (f"{_names(spec.flag)[0]} must be {exc.rule}, got {shown}")
    )


@dataclass(frozen=True)
class SettingsBinding:
    """What `settings_command` attached to a command: its groups, options and hand-spelled exclusions."""

    groups: dict[str, type]
    specs: list[OptionSpec]
    exclude: dict[str, str]


__all__ = ["OptionSpec", "SettingsBinding", "build", "collect", "settings_command"]
