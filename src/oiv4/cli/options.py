"""Command-line options generated from the settings dataclasses, so a default and its help live once.

`@settings_command({"settings": FetchSettings, "executor": ExecutorSettings})` gives a command one option
per dataclass field (nested settings included) and hands the function ready-built instances under those
parameter names. Every field spells its own flag where it is declared (`setting(..., flag="--max-side")`,
see `oiv4.contracts.setting`), so a grep for a flag finds its field. A command that holds the same settings
class twice (`oiv4 build`: the metadata, archive and fetch transfers) says how it tells them apart, in its
own registration: `prefix` puts a stage in front of every flag under a path (`--fetch-attempts`), `rename`
gives one field another flag. Two fields that still want one flag are an error when the command is defined
(at import), never a silent renaming; a `shared` field (`--allow-private-networks`) is one option that sets
the field wherever the command's settings hold it.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import typer

from oiv4.contracts.errors import SettingRangeError, UsageError

_NONE = type(None)
Path = tuple[str, ...]  # ("settings", "fetch", "transfer", "attempts"): group parameter, nested fields, field


@dataclass(frozen=True)
class Leaf:
    """One non-settings field reached from a command's groups, with its default inside the groups' defaults."""

    path: Path
    field: dataclasses.Field
    hint: Any  # the field's resolved type
    default: Any  # MISSING when the enclosing settings need arguments
    off_cli: str | None  # why the field is no option here (cli=False, or unused by its owner), else None

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True)
class OptionSpec:
    """One command-line option: the field it sets, at one path (or several, for a `shared` field)."""

    paths: tuple[Path, ...]
    field: dataclasses.Field
    hint: Any
    flag: str  # "--attempts", or "--rotate/--no-rotate" for a boolean
    short: str | None
    default: Any

    @property
    def meta(self) -> Mapping[str, Any]:
        return self.field.metadata

    @property
    def path(self) -> Path:
        return self.paths[0]

    @property
    def param(self) -> str:
        """The Python parameter name in the generated signature (unique, never shown)."""
        return "opt__" + "__".join(self.path)

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

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


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The resolved type of each field of `cls` (`typing.get_type_hints`: no annotation is evaluated by hand)."""
    return typing.get_type_hints(cls)


def _is_settings(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _default_of(cls: type) -> Any:
    try:
        return cls()
    except TypeError:  # required arguments: no default instance
        return dataclasses.MISSING


def leaves(groups: Mapping[str, type]) -> Iterator[Leaf]:
    """Every leaf field of `groups`, nested settings walked into, with the default its enclosing default
    instance gives it (a stage's `group(FETCH_TRANSFER)` makes `attempts` 4 there, not the class's 5)."""

    def walk(cls: type, path: Path, instance: Any, unused: Mapping[str, str]) -> Iterator[Leaf]:
        hints = _hints(cls)
        for f in dataclasses.fields(cls):
            value = dataclasses.MISSING if instance is dataclasses.MISSING else getattr(instance, f.name)
            if _is_settings(hints[f.name]):
                yield from walk(hints[f.name], (*path, f.name), value, f.metadata.get("unused", {}))
                continue
            why = unused.get(f.name) or (f.metadata.get("why") if f.metadata.get("cli") is False else None)
            if f.metadata.get("cli") is False and not why:
                raise TypeError(f"{cls.__name__}.{f.name} is kept off the command line without a `why`")
            yield Leaf((*path, f.name), f, hints[f.name], value, why)

    for name, cls in groups.items():
        yield from walk(cls, (name,), _default_of(cls), {})


def _flag(leaf: Leaf, rename: Mapping[str, str], prefix: Mapping[str, str]) -> str:
    """The flag of `leaf`: the command's `rename`, else the field's own flag behind the command's `prefix`."""
    if leaf.dotted in rename:
        return rename[leaf.dotted]
    flag = leaf.field.metadata.get("flag")
    if not flag:
        owner = ".".join(leaf.path[1:]) or leaf.dotted
        raise TypeError(f"{owner} declares no flag: give it `setting(..., flag=...)` where it is declared")
    if leaf.field.metadata.get("shared"):
        return str(flag)
    scopes = [p for p in prefix if leaf.dotted.startswith(p + ".")]
    if not scopes:
        return str(flag)
    stage = prefix[max(scopes, key=len)]
    return "/".join(("--no-" + stage + p[5:]) if p.startswith("--no-") else stage + p[2:] for p in flag.split("/"))


def collect(
    groups: Mapping[str, type],
    rename: Mapping[str, str] | None = None,
    prefix: Mapping[str, str] | None = None,
    reserved: set[str] | None = None,
) -> list[OptionSpec]:
    """One `OptionSpec` per option of a command whose settings are `groups`.

    `rename` maps dotted paths to flags ("settings.verification.workers": "--verify-workers"); `prefix` maps
    dotted paths to what goes before every flag under them ("settings.fetch.transfer": "--fetch-");
    `reserved` are names the command already uses. Raises TypeError when two options want one name.
    """
    rename, prefix, reserved = rename or {}, prefix or {}, set(reserved or ())
    specs: dict[str, OptionSpec] = {}
    for leaf in leaves(groups):
        if leaf.off_cli:
            continue
        if "help" not in leaf.field.metadata:
            raise TypeError(f"{leaf.dotted} has no help text: declare it with oiv4.contracts.setting")
        flag = _flag(leaf, rename, prefix)
        same = specs.get(flag)
        if same is not None and same.field is leaf.field and leaf.field.metadata.get("shared"):
            if same.default != leaf.default:
                raise TypeError(f"shared {flag} defaults differ at {same.dotted} and {leaf.dotted}")
            specs[flag] = dataclasses.replace(same, paths=(*same.paths, leaf.path))
            continue
        if same is not None:
            raise TypeError(f"option {flag} is claimed by both {same.dotted} and {leaf.dotted}: rename one of them")
        short = leaf.field.metadata.get("short")
        specs[flag] = OptionSpec((leaf.path,), leaf.field, leaf.hint, flag, short, leaf.default)
    seen: dict[str, str] = {}
    for spec in specs.values():
        for name in [*spec.flag.split("/"), *([spec.short] if spec.short else [])]:
            if name in seen or name in reserved:
                other = seen.get(name, "the command's own parameters")
                raise TypeError(f"option {name} is claimed by both {other} and {spec.dotted}: rename one of them")
            seen[name] = spec.dotted
    return list(specs.values())


def build(groups: Mapping[str, type], specs: list[OptionSpec], values: Mapping[str, Any]) -> dict[str, Any]:
    """The settings instances for `groups` from the command line's `values` (keyed by `OptionSpec.param`).

    Each nested instance starts from its owner's default (`dataclasses.replace`), so fields kept off the
    command line keep the values the owner chose. A value out of range is a `UsageError` naming the option.
    """
    given = {path: (spec, spec.to_field(values[spec.param])) for spec in specs for path in spec.paths}

    def make(cls: type, path: Path, default: Any) -> Any:
        kwargs = {}
        hints = _hints(cls)
        for f in dataclasses.fields(cls):
            sub = (*path, f.name)
            if _is_settings(hints[f.name]):
                inner = dataclasses.MISSING if default is dataclasses.MISSING else getattr(default, f.name)
                kwargs[f.name] = make(hints[f.name], sub, inner)
            elif sub in given:
                kwargs[f.name] = given[sub][1]
        try:
            return cls(**kwargs) if default is dataclasses.MISSING else dataclasses.replace(default, **kwargs)
        except SettingRangeError as exc:
            hit = given.get((*path, exc.name)) if exc.owner is cls else None
            raise UsageError(_range_message(exc, hit[0]) if hit else str(exc)) from None
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    return {name: make(cls, (name,), _default_of(cls)) for name, cls in groups.items()}


def _range_message(exc: SettingRangeError, spec: OptionSpec) -> str:
    """The range error with the option as this command spells it (`--fetch-attempts` in `oiv4 build`)."""
    scale = spec.meta.get("scale")
    shown = exc.value / scale if scale and isinstance(exc.value, int | float) else exc.value
    flag = spec.flag.split("/")[0]
    return f"{flag} must be {exc.rule}, got " + (f"{shown:g}" if isinstance(shown, float) else f"{shown}")


def _own_names(params: list[inspect.Parameter]) -> set[str]:
    names: set[str] = set()
    for p in params:
        decls = getattr(p.default, "param_decls", None) or ()
        names.update(d for decl in decls for d in decl.split("/"))
        names.add("--" + p.name.replace("_", "-"))
    return names


def settings_command(
    groups: Mapping[str, type],
    *,
    rename: Mapping[str, str] | None = None,
    prefix: Mapping[str, str] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a typer command so that its `groups` parameters are generated options (see the module doc).

    Settings that fail their own validation (`ValueError` in `__post_init__`) become a `UsageError`.
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn)
        # Only the command's own parameters need real types (the group parameters are replaced).
        own_annotations = {k: v for k, v in fn.__annotations__.items() if k not in groups and k != "return"}
        hints = typing.get_type_hints(_Annotated(own_annotations), globalns=fn.__globals__)
        own = [
            p.replace(annotation=hints.get(p.name, p.annotation), kind=inspect.Parameter.KEYWORD_ONLY)
            for p in sig.parameters.values()
            if p.name not in groups
        ]
        specs = collect(groups, rename, prefix, reserved=_own_names(own) | {"--help", "-h"})
        generated = [
            inspect.Parameter(
                s.param, inspect.Parameter.KEYWORD_ONLY, default=s.typer_option(), annotation=s.annotation()
            )
            for s in specs
        ]
        params = own + generated

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            values = {s.param: kwargs.pop(s.param) for s in specs}
            return fn(**kwargs, **build(groups, specs, values))

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.__oiv4_settings__ = SettingsBinding(dict(groups), specs)  # type: ignore[attr-defined]
        return command

    return decorate


class _Annotated:
    """An object carrying just some of a function's annotations, for `typing.get_type_hints`."""

    def __init__(self, annotations: dict[str, Any]) -> None:
        self.__annotations__ = annotations


@dataclass(frozen=True)
class SettingsBinding:
    """What `settings_command` attached to a command: its groups and their options."""

    groups: dict[str, type]
    specs: list[OptionSpec]


__all__ = ["Leaf", "OptionSpec", "SettingsBinding", "build", "collect", "leaves", "settings_command"]
