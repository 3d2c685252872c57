"""Settings, once: every settings field is an option of the commands that use it, with the same default."""

from __future__ import annotations

import dataclasses
import re

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from oiv4.cli import app
from oiv4.cli.options import settings_command
from oiv4.cli.options_check import check_command
from oiv4.contracts.setting import setting
from oiv4.run.build import BuildSettings
from oiv4.stages.fetch import FetchSettings

GENERATED = ("metadata", "plan", "archives", "fetch", "verify", "report", "build", "demo", "hash", "estimate", "features")


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
        forgotten: int = setting(3, help="Left off.")

    probe = typer.Typer()

    @probe.command("probe")
    @settings_command({"settings": Planted}, exclude={"settings.forgotten": "planted"})
    def run(settings: Planted) -> None:
        pass

    @probe.command("other")
    def other() -> None:
        pass

    binding = run.__oiv4_settings__  # type: ignore[attr-defined]
    command = get_command(probe).commands["probe"]  # type: ignore[attr-defined]
    assert check_command(binding, command) == []
    leaky = dataclasses.replace(binding, exclude={})
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
    monkeypatch.setattr("oiv4.run.build.run_build", lambda storage, settings, view, report=None: seen.setdefault("s", settings))
    args = ["build", "--root", str(tmp_path / "r"), "--max-megapixels", "1.5", "--max-mb", "2", "--no-rotate", "--set", "train",
            "--fetch-attempts", "7", "--workers", "3", "--decoder", "zlib", "--archives-part-size-mb", "1"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    s = seen["s"]
    assert isinstance(s, BuildSettings)
    assert s.fetch.transform.max_pixels == 1_500_000 and s.fetch.http.max_bytes == 2 << 20
    assert s.fetch.transform.rotate is False and s.fetch.http.attempts == 7 and s.executor.workers == 3
    assert s.archives.decoders == ("zlib",) and s.archives.part_size == 1 << 20
    assert [x.value for x in s.sets] == ["train"] and s.metadata.download.retry.attempts == 8
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
    assert "default: one per core" in text
    assert "--no-rotate" in text and "--fallback-thumbnail" in text


def test_version_is_printed() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("oiv4 ")
