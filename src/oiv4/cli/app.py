"""The `oiv4` typer app: the command group, `--version`, `-h`, readable piped help and the one error handler.

Commands live in `stage_commands`, `inspect_commands` and `run_commands`; what they print lives in
`render` and `fetch_view`. Errors are handled once, here, by category (`oiv4.contracts.errors`): an
`Oiv4Error` prints `oiv4 <command>: <message>` and exits with its category's code; Ctrl-C exits 130;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from oiv4.contracts.errors import Oiv4Error, exit_code

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
    "neighbors",
    "report",
    "sql",
    "mirror",
)
#: Help is laid out at least this wide when piped or in a narrow terminal: option names and defaults are
#: never cut with an ellipsis (rich crops table cells to the width it is given).
HELP_MIN_WIDTH = 200

console = Console(stderr=True)


def _click_usage_errors() -> tuple[type[Exception], ...]:
    # typer >= 0.26 ships its own copy of click: its parse errors are not `click.UsageError`.
    found: list[type[Exception]] = [click.UsageError]
    try:
        from typer._click.exceptions import UsageError as vendored

        found.append(vendored)
    except ImportError:
        pass
    return tuple(found)


CLICK_USAGE_ERRORS = _click_usage_errors()


class Oiv4Group(TyperGroup):
    """Orders commands as the pipeline runs and turns deliberate errors into one line and an exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: COMMAND_ORDER.index(n) if n in COMMAND_ORDER else len(COMMAND_ORDER))

    def invoke(self, ctx: click.Context) -> Any:
        _widen_help()  # a command's --help is handled while invoking it
        with stop_on_sigterm():
            return self._invoke(ctx)

    def _invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
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
            name = ctx.invoked_subcommand or (ctx.protected_args[0] if ctx.protected_args else "")
            code = exit_code(exc)
            if isinstance(exc, KeyboardInterrupt):
                message = "interrupted; finished work is kept: run the same command again to resume"
            else:
                message = str(exc) or type(exc).__name__
            console.print(f"[red]oiv4 {name}:[/red] {escape(message)}", soft_wrap=True, highlight=False)
            raise typer.Exit(code or 1) from None

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        _widen_help()
        super().format_help(ctx, formatter)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM stops a command like Ctrl-C: rows in flight are abandoned safely, the resume hint is printed,
    exit 130. (Before, `kill` ended the process silently and left its workers running.)"""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread (e.g. a command run from a test thread)
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _widen_help() -> None:
    # typer's rich help takes its width from TERMINAL_WIDTH (read at import) or from the console, which
    # follows COLUMNS / the terminal: at 80 columns long option names were cut to "--max-megapix…".
    import typer.rich_utils as ru

    width = os.environ.get("TERMINAL_WIDTH")
    if width is None:
        columns = int(os.environ.get("COLUMNS", "0") or 0) or (
            os.get_terminal_size(1).columns if sys.stdout.isatty() else 0
        )
        ru.MAX_WIDTH = max(columns, HELP_MIN_WIDTH)


def _version() -> str:
    try:
        return version("oiv4")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"oiv4 {_version()}")
        raise typer.Exit()


app = typer.Typer(
    cls=Oiv4Group,
    name="oiv4",
    help=(
        "Build the OpenImages V4 image sets reliably, resumably and fast.\n\n"
        "Stages, in order: metadata -> plan -> archives (targets, validation) / fetch (train, extended_targets) "
        "-> status / verify / report. `oiv4 build --root R` runs them all; every stage can be re-run safely "
        "and only does what is left.\n\n"
        "Exit codes: 0 done, 1 failed (e.g. an archive), 2 usage, 3 bad input data, 4 source unreachable or "
        "misbehaving, 5 storage (unwritable, disk full), 6 integrity (checksum, damage), 7 execution (workers, "
        "cluster), 8 incomplete (rows left without an outcome: run again), 9 busy (another run holds the root), "
        "10 complete with recorded failures (e.g. dead URLs), 130 interrupted (Ctrl-C, SIGTERM)."
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
    app()
