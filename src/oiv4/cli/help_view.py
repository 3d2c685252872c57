"""`--help` laid out for the width it is shown at: no line wider than the terminal, nothing cut with "…".

typer's rich help draws options as a table, and rich fits a table to the width by cutting cells: at 80
columns option names, defaults and descriptions ended in "…" (and a fixed wide layout overflowed the
terminal instead). Here every piece is wrapped, never cut: an option's name and description sit side by
side while the name fits a third of the width, else the description starts on the next line, indented;
a word longer than its column is folded onto the next line. The content is click's own help records
(`get_help_record`: flags, metavar, `[default: ...]`, ranges), so what the help says is unchanged.

The width: `TERMINAL_WIDTH` or `COLUMNS` when set, else the terminal's, else `PIPED_WIDTH` (piped help).
"""

from __future__ import annotations

import io
import os
import re
import sys
import textwrap
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.text import Text

#: Width of help written to a pipe or a file (no terminal to measure, no COLUMNS).
PIPED_WIDTH = 100
#: Narrower than this, the layout would be mostly indentation: lines are still wrapped, just at this width.
MIN_WIDTH = 30
INDENT = 2
GAP = 2
NBSP = "\xa0"


def help_width() -> int:
    """The columns help is laid out for (see the module docstring)."""
    for var in ("TERMINAL_WIDTH", "COLUMNS"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return max(MIN_WIDTH, int(value))
    try:
        if sys.stdout.isatty():
            return max(MIN_WIDTH, os.get_terminal_size(sys.stdout.fileno()).columns)
    except (OSError, ValueError):
        pass
    return PIPED_WIDTH


def _wrap(text: str, width: int) -> list[str]:
    """Lines of at most `width` characters; words are kept whole unless longer than a line, and
    a short `[default: 64]` stays on one line (its spaces are not break points)."""
    text = re.sub(r"\[(default|required)[^\]]{0,24}\]", lambda m: m.group(0).replace(" ", NBSP), text)
    width = max(1, width)
    # A word longer than a line (a URL) starts on a line of its own and is folded there, not split
    # to fill the end of the line before.
    words = [w[i : i + width] for w in text.split(" ") for i in range(0, max(len(w), 1), width)]
    lines = textwrap.wrap(" ".join(words), width, break_long_words=False, break_on_hyphens=False) or [""]
    return [line.replace(NBSP, " ") for line in lines]


def _paragraphs(text: str, width: int, indent: int) -> Iterable[Text]:
    """A docstring's paragraphs: prose is re-flowed to the width; a paragraph holding command lines or
    indented lines (examples) keeps its line breaks, each line wrapped with a deeper hanging indent."""
    for para in text.strip("\n").split("\n\n"):
        lines = para.split("\n")
        # Prose that names a command mid-sentence ("see oiv4 status") is still prose: only lines that are
        # commands, or indented, mark an example.
        verbatim = any(line[:1].isspace() for line in lines)
        verbatim = verbatim or (len(lines) > 1 and any(line.lstrip().startswith("oiv4 ") for line in lines))
        if verbatim:
            for line in lines:
                lead = len(line) - len(line.lstrip())
                pieces = _wrap(line.strip(), width - indent - lead - 4)
                yield Text(" " * (indent + lead) + pieces[0])
                for piece in pieces[1:]:
                    yield Text(" " * (indent + lead + 4) + piece)
        else:
            for piece in _wrap(" ".join(line.strip() for line in lines), width - indent):
                yield Text(" " * indent + piece)
        yield Text("")


def _definitions(rows: list[tuple[str, str]], width: int) -> Iterable[Text]:
    """(name, description) rows as a definition list that fits `width` (see the module docstring)."""
    cap = max(12, width // 3)
    name_w = min(cap, max((len(n) for n, _ in rows), default=0))
    desc_x = INDENT + name_w + GAP
    for name, desc in rows:
        names = _wrap(name, width - INDENT)
        side_by_side = len(names) == 1 and len(name) <= name_w
        descs = _wrap(" ".join(desc.split()), width - desc_x) if desc else []
        if side_by_side:
            first = Text(" " * INDENT)
            first.append(name.ljust(name_w), style="bold cyan")
            if descs:
                first.append(" " * GAP + descs.pop(0))
            first.rstrip()
            yield first
        else:
            for piece in names:
                yield Text(" " * INDENT + piece, style="bold cyan")
        for piece in descs:
            yield Text(" " * desc_x + piece)


def _panel(title: str, rows: list[tuple[str, str]], width: int) -> list[Text]:
    return [Text(title + ":", style="bold"), *_definitions(rows, width), Text("")]


def _param_panels(cmd: Any, ctx: Any) -> dict[str, list[tuple[str, str]]]:
    panels: dict[str, list[tuple[str, str]]] = {"Arguments": [], "Options": []}
    for param in cmd.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        # Help meant for rich markup escapes its brackets (`\\[default: none]`); shown as plain text here.
        # (Older typers give an argument's record without its help text.)
        desc = record[1] or getattr(param, "help", None) or ""
        record = (record[0].replace("\\[", "["), desc.replace("\\[", "["))
        # typer >= 0.26 has its own copy of click, whose Argument is not click.Argument: ask the param.
        default = "Arguments" if param.param_type_name == "argument" else "Options"
        panels.setdefault(getattr(param, "rich_help_panel", None) or default, []).append(record)
    return {k: v for k, v in panels.items() if v}


def render_help(cmd: Any, ctx: Any, width: int | None = None) -> str:
    """The help of `cmd` (a command or the group) as text that fits `width` columns, styled for a terminal."""
    width = width or help_width()
    lines: list[Text] = []
    usage = " ".join(["Usage:", ctx.command_path, *cmd.collect_usage_pieces(ctx)])
    pieces = _wrap(usage, width - 2 * INDENT)  # continuation lines are indented
    lines += [Text(""), Text(pieces[0], style="bold")]
    lines += [Text(" " * 2 * INDENT + p, style="bold") for p in pieces[1:]]
    lines.append(Text(""))
    if cmd.help:
        lines += _paragraphs(cmd.help, width, INDENT)
    for title, rows in _param_panels(cmd, ctx).items():
        lines += _panel(title, rows, width)
    if hasattr(cmd, "list_commands"):  # the group (typer may vendor click: no isinstance)
        panels: dict[str, list[tuple[str, str]]] = {}
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            first = (sub.short_help or sub.help or "").strip().split("\n\n")[0]
            panel = getattr(sub, "rich_help_panel", None) or "Commands"
            panels.setdefault(panel, []).append((name, " ".join(first.split())))
        for title, rows in panels.items():
            lines += _panel(title, rows, width)
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=sys.stdout.isatty(), highlight=False)
    for line in lines:
        console.print(line, soft_wrap=True)
    return out.getvalue()


__all__ = ["help_width", "render_help"]
