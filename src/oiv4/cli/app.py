"""The `oiv4` typer app: the command group, `--version`, `-h` (laid out by `help_view`) and the one error handler.

Commands live in `stage_commands`, `inspect_commands` and `run_commands`; what they print lives in
`render` and `fetch_view`. Errors are handled once, here, by category (`oiv4.contracts.errors`): an
`Oiv4Error` prints `oiv4 <command>: <message>` and exits with its category's code; Ctrl-C exits 130; a
library's read error that a damaged file under the root explains is that file's `DamagedFileError` (6);
anything else is a bug: one line naming the file that holds its traceback, exit 70 (`crash`). A reader
that closed the pipe (`oiv4 sql ... | head`) ends the command quietly with 0.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import types
from collections.abc import Iterator
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from oiv4.cli import crash
from oiv4.cli.version import installed_version
from oiv4.contracts.errors import Oiv4Error, exit_code, exit_code_summary

#: `--help` lists commands in pipeline order, whatever order the modules register them in.
COMMAND_ORDER = (
    "build",
    "demo",
    "metadata",
    "plan",
    "archives",
    "fetch",
    "status",
    "verify",
    "hash",
    "dedup",
    "features",
    "neighbors",
    "report",
    "sql",
    "mirror",
)


def make_console(**options: object) -> Console:
    """A rich console that prints ids, paths and messages as given: emoji codes off (`validation:x:` or a path
    with `:smile:` in it must not turn into a picture); markup stays, and callers escape what they did not write."""
    return Console(emoji=False, **options)  # type: ignore[arg-type]


console = make_console(stderr=True)


def _click_usage_errors() -> tuple[type[Exception], ...]:
    # The click typer parses with (its own copy from typer 0.26 on, the click package before): its UsageError
    # is the base of typer's public BadParameter. Importing `click` itself would need a dependency that typer
    # >= 0.26 does not bring, and its errors would not be the ones typer raises.
    return tuple(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


CLICK_USAGE_ERRORS = _click_usage_errors()


class Oiv4Group(TyperGroup):
    """Orders commands as the pipeline runs and turns deliberate errors into one line and an exit code."""

    def list_commands(self, ctx: typer.Context) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: COMMAND_ORDER.index(n) if n in COMMAND_ORDER else len(COMMAND_ORDER))

    def get_command(self, ctx: typer.Context, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:  # every command's help fits the terminal too (see oiv4.cli.help_view)
            cmd.format_help = types.MethodType(_format_help, cmd)  # type: ignore[method-assign]
        return cmd

    def invoke(self, ctx: typer.Context) -> Any:
        with stop_on_sigterm():
            return self._invoke(ctx)

    def _invoke(self, ctx: typer.Context) -> Any:
        argv = [*_protected(ctx), *ctx.args]  # before invoking consumes them: the crash report needs --root
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            crash.quiet_stdout()  # the reader has all it wanted (`| head`): not an error
            raise typer.Exit(0) from None
        except CLICK_USAGE_ERRORS as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # `oiv4 fetch` alone: its help was the answer
                raise
            # click's own parse errors (unknown option, not a number, bad choice) as one line, like ours.
            sub = exc.ctx.command_path if exc.ctx is not None and exc.ctx.command is not self else "oiv4"
            message = " ".join(exc.format_message().split())
            console.print(
                f"[red]{escape(sub)}:[/red] {escape(message)} (see {escape(sub)} -h)", soft_wrap=True, highlight=False
            )
            raise typer.Exit(exc.exit_code) from None
        except (Oiv4Error, KeyboardInterrupt) as exc:
            name = ctx.invoked_subcommand or next(iter(_protected(ctx)), "")
            code = exit_code(exc)
            if isinstance(exc, KeyboardInterrupt):
                message = "interrupted; finished work is kept: run the same command again to resume"
            else:
                message = str(exc) or type(exc).__name__
            console.print(f"[red]oiv4 {name}:[/red] {escape(message)}", soft_wrap=True, highlight=False)
            raise typer.Exit(code or 1) from None
        except Exception as exc:
            if crash.passes_through(exc):
                raise
            name = ctx.invoked_subcommand or next(iter(_protected(ctx)), "")
            code, message = crash.explain(exc, argv)
            console.print(f"[red]oiv4 {name}:[/red] {escape(message)}", soft_wrap=True, highlight=False)
            raise typer.Exit(code) from None

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        _format_help(self, ctx, formatter)


def _format_help(cmd: Any, ctx: typer.Context, formatter: Any) -> None:
    # Printed here, as typer's rich help does, not returned through `formatter`: typer shows nothing
    # itself for `oiv4` without arguments (NoArgsIsHelpError), it relies on this side effect.
    from oiv4.cli.help_view import render_help

    try:
        sys.stdout.write(render_help(cmd, ctx))
        sys.stdout.flush()
    except BrokenPipeError:  # `oiv4 --help | head`: the reader has what it wanted; help is still a success
        crash.quiet_stdout()


def _protected(ctx: typer.Context) -> list[str]:
    # click 8.2 deprecated `protected_args` (the subcommand name and what follows) and later removed it.
    return list(getattr(ctx, "protected_args", None) or getattr(ctx, "_protected_args", None) or [])


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM stops a command like Ctrl-C: rows in flight are abandoned safely, the resume hint is printed,
    exit 130. (Without it, `kill` would end the process silently and leave its workers running.)"""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread (e.g. a command run from a test thread)
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"oiv4 {installed_version()}")
        raise typer.Exit()


app = typer.Typer(
    cls=Oiv4Group,
    name="oiv4",
    help=(
        "Build the OpenImages V4 image sets reliably, resumably and fast.\n\n"
        "Stages, in order: metadata -> plan -> archives (targets, validation) / fetch (train, extended_targets) "
        "-> status / verify / report. `oiv4 build --root R` runs them all; every stage can be re-run safely "
        "and only does what is left.\n\n" + exit_code_summary()
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    show_version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Options of `oiv4` itself (typer needs a group callback to hang --version on)."""


def main() -> None:
    """Entry point of the `oiv4` script."""
    try:
        app()
        code: int | str | None = 0
    except SystemExit as exc:
        code = exc.code
    crash.finish(code)
