"""Settings, once: every settings field is an option of the commands that use it, with the same default."""

from __future__ import annotations

import dataclasses
import re

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from oiv4.cli import app
from oiv4.cli.options import SettingsBinding, leaves, settings_command
from oiv4.contracts.setting import group, setting
from oiv4.contracts.transfer import TransferSettings
from oiv4.run.build import BuildSettings
from oiv4.stages.fetch import FetchSettings

GENERATED = (
    "metadata", "plan", "archives", "fetch", "verify", "report", "build", "demo", "hash", "estimate", "features",
    "dedup", "neighbors",
)  # fmt: skip


def _instance_default(cls: type, path: tuple[str, ...]) -> object:
    """The value at `path` in a default-constructed `cls`: what the settings really default to, nested
    defaults included (MISSING when `cls` needs arguments)."""
    try:
        value: object = cls()
    except TypeError:
        return dataclasses.MISSING
    for name in path:
        value = getattr(value, name)
    return value


def check_command(binding: SettingsBinding, command: typer.core.TyperCommand) -> list[str]:
    """Problems between a command and its settings: a field without an option (nor a why), a default that
    differs from the dataclass's."""
    problems = []
    params = {p.name: p for p in command.params}
    covered = {path for s in binding.specs for path in s.paths}
    for leaf in leaves(binding.groups):
        if leaf.path not in covered and not leaf.off_cli:
            problems.append(f"{command.name}: {leaf.dotted} has no option (nor cli=False with a why)")
    for s in binding.specs:
        p = params.get(s.param)
        if p is None:
            problems.append(f"{command.name}: {s.dotted} has no parameter {s.param}")
            continue
        given = p.default
        value = s.to_field(list(given) if isinstance(given, tuple) and s.repeated_item is not None else given)
        for path in s.paths:
            expected = _instance_default(binding.groups[path[0]], path[1:])
            if expected is not dataclasses.MISSING and value != expected:
                problems.append(
                    f"{command.name}: {p.opts[0]} defaults to {given!r}, but {'.'.join(path)} defaults to {expected!r}"
                )
    return problems


def _bindings() -> dict[str, tuple[object, object]]:
    group = get_command(app)
    out = {}
    for info in app.registered_commands:
        binding = getattr(info.callback, "__oiv4_settings__", None)
        if binding is not None:
            out[info.name] = (binding, group.commands[info.name])  # type: ignore[attr-defined]
    return out


def test_every_stage_command_is_generated_from_its_settings() -> None:
    assert set(_bindings()) == set(GENERATED)


@pytest.mark.parametrize("name", GENERATED)
def test_every_settings_field_has_an_option_with_the_dataclass_default(name: str) -> None:
    binding, command = _bindings()[name]
    assert check_command(binding, command) == []  # type: ignore[arg-type]


def test_the_checker_sees_a_missing_option_and_a_wrong_default() -> None:
    # A check that cannot fail proves nothing: plant a field left off the command and a default that drifted.
    @dataclasses.dataclass(frozen=True)
    class Planted:
        size: int = setting(64 << 20, help="Size, MiB.", flag="--size-mb", scale=1 << 20)
        forgotten: int = setting(3, help="Left off.", flag="--forgotten")

    probe = typer.Typer()

    @probe.command("probe")
    @settings_command({"settings": Planted})
    def run(settings: Planted) -> None:
        pass

    @probe.command("other")
    def other() -> None:
        pass

    binding = run.__oiv4_settings__  # type: ignore[attr-defined]
    command = get_command(probe).commands["probe"]  # type: ignore[attr-defined]
    assert check_command(binding, command) == []
    leaky = dataclasses.replace(binding, specs=[s for s in binding.specs if s.dotted != "settings.forgotten"])
    assert check_command(leaky, command) == ["probe: settings.forgotten has no option (nor cli=False with a why)"]
    size = next(p for p in command.params if p.opts == ["--size-mb"])
    size.default = 32  # what a hand-written `typer.Option(32, ...)` next to a 64 MiB dataclass default would be
    assert check_command(binding, command) == [
        "probe: --size-mb defaults to 32, but settings.size defaults to 67108864"
    ]


def test_build_offers_every_stage_option_once() -> None:
    opts = {o for p in get_command(app).commands["build"].params for o in p.opts + p.secondary_opts}  # type: ignore[attr-defined]
    for flag in (
        "--quality", "--no-rotate", "--concurrency", "--shard-rows", "--stream", "--fallback-thumbnail",
        "--metadata-url", "--archives-source", "--layout", "--keep-tar", "--executor", "--scheduler", "--workers",
        "--deep", "--report-samples", "--set", "--metadata-attempts", "--fetch-attempts", "--archives-attempts",
    ):  # fmt: skip
        assert flag in opts, flag


def test_cli_values_reach_the_settings_with_their_units(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    seen: dict[str, object] = {}
    from oiv4.cli import run_commands

    monkeypatch.setattr(run_commands, "_finish", lambda result, log: None)
    monkeypatch.setattr(
        "oiv4.run.build.run_build", lambda storage, settings, view, report=None: seen.setdefault("s", settings)
    )
    args = ["build", "--root", str(tmp_path / "r"), "--max-megapixels", "1.5", "--max-mb", "2", "--no-rotate", "--set", "train",
            "--fetch-attempts", "7", "--workers", "3", "--decoder", "zlib", "--archives-part-size-mb", "1"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    s = seen["s"]
    assert isinstance(s, BuildSettings)
    assert s.fetch.transform.max_pixels == 1_500_000 and s.fetch.http.max_bytes == 2 << 20
    assert s.fetch.transform.rotate is False and s.fetch.transfer.attempts == 7 and s.executor.workers == 3
    assert s.archives.decoders == ("zlib",) and s.archives.transfer.part_size == 1 << 20
    assert [x.value for x in s.sets] == ["train"] and s.metadata.transfer.attempts == 8
    assert dataclasses.replace(s, sets=BuildSettings().sets).fetch != FetchSettings()


def test_invalid_settings_are_a_usage_error_not_a_traceback() -> None:
    result = CliRunner().invoke(app, ["fetch", "train", "--root", "r", "--quality", "0"])
    assert result.exit_code == 2 and "quality" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["fetch", "--root", "r", "--layout", "tarball"])
    assert result.exit_code == 2


@pytest.mark.parametrize("name", [None, *GENERATED, "status", "mirror"])
def test_piped_help_at_80_columns_cuts_no_option_name(name: str | None) -> None:
    args = ([name] if name else []) + ["-h"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    names = re.findall(r"(--[\w-]*…|-\w…)", result.output)
    assert names == []
    assert "…" not in result.output  # nor a default or a help text


def test_workers_help_says_one_per_core_and_booleans_are_flags() -> None:
    text = " ".join(CliRunner().invoke(app, ["fetch", "--help"], env={"COLUMNS": "80"}).output.split())
    assert "default: one per core]" in text and "oiv4 features" not in text
    assert "--no-rotate" in text and "--fallback-thumbnail" in text


def test_features_help_gives_its_own_workers_default_of_one_shard_process() -> None:
    # One features shard keeps every core busy, so its local pool defaults to 1, and its help says so
    # (not another command's "one per core").
    text = " ".join(CliRunner().invoke(app, ["features", "--help"], env={"COLUMNS": "80"}).output.split())
    assert "[default: 1 with --executor local (one shard keeps every core busy), else the cluster's]" in text
    assert "one per core" not in text


def test_version_is_printed() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("oiv4 ")


def test_two_fields_that_want_one_flag_are_an_error_when_the_command_is_defined() -> None:
    # Adding a field to one settings class must not quietly rename another class's flag.
    @dataclasses.dataclass(frozen=True)
    class One:
        quality: int = setting(90, help="Quality.", flag="--quality")

    @dataclasses.dataclass(frozen=True)
    class Two:
        quality: int = setting(50, help="Another quality.", flag="--quality")

    with pytest.raises(TypeError, match=r"--quality is claimed by both one.quality and two.quality"):
        settings_command({"one": One, "two": Two})(lambda one, two: None)
    # The command resolves it explicitly, in its own registration.
    settings_command({"one": One, "two": Two}, rename={"two.quality": "--two-quality"})(lambda one, two: None)


def test_a_field_without_its_flag_is_refused() -> None:
    with pytest.raises(TypeError, match="spells its command-line flag where it is declared"):
        setting(3, help="Size.")
    with pytest.raises(TypeError, match="has no `flag`"):
        setting(3, help="Size.", flag="--size", cli=False, why="planted")

    @dataclasses.dataclass(frozen=True)
    class Unspelled:  # a hand-made field, past `setting()`
        size: int = dataclasses.field(default=3, metadata={"help": "Size."})

    with pytest.raises(TypeError, match="size declares no flag"):
        settings_command({"settings": Unspelled})(lambda settings: None)


def test_every_flag_is_spelled_where_its_field_is_declared() -> None:
    """`grep -- --max-side src/` finds the field: each generated option's name (less the command's stage prefix
    or rename) is a literal in the source of the module declaring its field."""
    import inspect

    from oiv4.cli.run_commands import BUILD_PREFIXES, BUILD_RENAMES

    for binding, _command in _bindings().values():
        for spec in binding.specs:  # type: ignore[attr-defined]
            flag = spec.flag
            if spec.dotted in BUILD_RENAMES:
                assert BUILD_RENAMES[spec.dotted] == flag
                continue
            for scope, stage in BUILD_PREFIXES.items():
                if spec.dotted.startswith(scope + "."):
                    flag = flag.replace(stage, "--").replace("--no-" + stage[2:], "--no-")
            owner = _owner(binding.groups[spec.path[0]], spec.path[1:])  # type: ignore[attr-defined]
            assert f'flag="{flag}"' in inspect.getsource(inspect.getmodule(owner)), (spec.dotted, flag)


def _owner(cls: type, path: tuple[str, ...]) -> type:
    import typing

    for name in path[:-1]:
        cls = typing.get_type_hints(cls)[name]
    # The class that declares the field, which may be a base of the group's class (NeighborsExecutor).
    return next(c for c in cls.__mro__ if path[-1] in vars(c).get("__annotations__", {}))


def test_one_shared_option_sets_every_stage_and_stage_transfers_keep_their_defaults(monkeypatch, tmp_path) -> None:
    seen: dict[str, BuildSettings] = {}
    from oiv4.cli import run_commands

    monkeypatch.setattr(run_commands, "_finish", lambda result, log: None)
    monkeypatch.setattr(
        "oiv4.run.build.run_build", lambda storage, settings, view, report=None: seen.setdefault("s", settings)
    )
    args = ["build", "--root", str(tmp_path / "r"), "--allow-private-networks", "--archives-read-timeout", "7"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    s = seen["s"]
    stages = (s.metadata.transfer, s.archives.transfer, s.fetch.transfer)
    assert all(t.allow_private_networks for t in stages)
    assert s.archives.transfer.read_timeout_s == 7 and s.metadata.transfer.read_timeout_s == 120
    assert (s.metadata.transfer.attempts, s.archives.transfer.attempts, s.fetch.transfer.attempts) == (8, 5, 4)
    assert s.fetch.transfer == dataclasses.replace(FetchSettings().transfer, allow_private_networks=True)


def test_a_range_error_names_the_option_as_the_command_spells_it() -> None:
    result = CliRunner().invoke(app, ["build", "--root", "r", "--fetch-attempts", "0"])
    assert result.exit_code == 2 and "--fetch-attempts must be >= 1, got 0" in result.output, result.output
    result = CliRunner().invoke(app, ["build", "--root", "r", "--verify-workers", "0"])
    assert result.exit_code == 2 and "--verify-workers must be >= 1, got 0" in result.output, result.output
    result = CliRunner().invoke(app, ["dedup", "--root", "r", "--threshold", "33"])
    assert result.exit_code == 2 and "--threshold must be within 0..32, got 33" in result.output, result.output


def test_a_stage_keeps_unused_transfer_fields_off_its_command_line() -> None:
    @dataclasses.dataclass(frozen=True)
    class Whole:
        transfer: TransferSettings = group(TransferSettings(attempts=2), unused={"part_size": "whole files"})

    binding = settings_command({"settings": Whole})(lambda settings: None).__oiv4_settings__  # type: ignore[attr-defined]
    flags = {s.flag for s in binding.specs}
    assert "--attempts" in flags and "--part-size-mb" not in flags
    assert next(s for s in binding.specs if s.flag == "--attempts").default == 2


def test_the_generator_evaluates_no_annotation_by_hand() -> None:
    import ast
    import inspect

    from oiv4.cli import options

    calls = [n for n in ast.walk(ast.parse(inspect.getsource(options))) if isinstance(n, ast.Call)]
    assert not [c for c in calls if isinstance(c.func, ast.Name) and c.func.id in ("eval", "exec")]
