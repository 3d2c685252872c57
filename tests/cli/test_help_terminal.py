"""`-h` in a real terminal: every command's help fits 80 and 200 columns, and nothing is cut with "…".

Each help runs `oiv4` in a pseudo-terminal whose window size is set with TIOCSWINSZ before the program
starts, with COLUMNS / TERMINAL_WIDTH removed from its environment, so the width comes from the terminal
as it does for a user. The output is read with its colours and its lines measured in terminal cells.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import sys
import termios
from pathlib import Path

import pytest
from rich.cells import cell_len
from typer.main import get_command

from oiv4.cli import app
from support.paths import REPO

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
COMMANDS = [None, *get_command(app).commands]
#: The script a user runs (installed beside this interpreter by `pip install`).
OIV4 = str(Path(sys.executable).with_name("oiv4"))


def run_in_terminal(args: list[str], columns: int, rows: int = 50) -> tuple[int, str]:
    """(exit code, output) of `oiv4 *args` (the installed script) in a pty of `columns` x `rows`."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TERMINAL_WIDTH")}
    env["TERM"] = "xterm-256color"
    src = str(REPO / "src")
    env["PYTHONPATH"] = src + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else src
    pid, fd = pty.fork()
    if pid == 0:  # the child: size its terminal first, so the program never sees another width
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        os.execve(OIV4, [OIV4, *args], env)
    chunks = []
    while True:
        ready, _, _ = select.select([fd], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(fd, 1 << 16)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode()


@pytest.mark.parametrize("columns", [80, 200])
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c or "oiv4")
def test_help_fits_the_terminal_and_cuts_no_description(command: str | None, columns: int) -> None:
    code, raw = run_in_terminal([*([command] if command else []), "-h"], columns)
    assert code == 0, raw
    text = ANSI.sub("", raw).replace("\r\n", "\n")
    lines = text.split("\n")
    assert "Usage: oiv4" in text and "-h, --help" in text
    too_wide = [(cell_len(line), line) for line in lines if cell_len(line) > columns]
    assert too_wide == []
    assert "…" not in text
    assert "\\[" not in text  # rich markup escapes are not shown
    # Every option's full description is there: the words of each help text, in order, once the
    # output's line breaks and indentation are folded away.
    flat = " ".join(text.split())
    cmd = get_command(app) if command is None else get_command(app).commands[command]
    for param in cmd.params:
        help_text = getattr(param, "help", None)
        if help_text:
            words = " ".join(help_text.replace("\\[", "[").split())  # as rich markup would show it
            assert words in flat, f"{param.name}: description cut or missing"
    # In a wide terminal the width is used: an option and its description share a line.
    if columns == 200 and command == "fetch":
        assert any("--max-megapixels" in line and "Largest image decoded" in line for line in lines)


def test_a_narrow_terminal_puts_a_long_option_above_its_description() -> None:
    code, raw = run_in_terminal(["fetch", "-h"], 80)
    assert code == 0, raw
    lines = ANSI.sub("", raw).replace("\r\n", "\n").split("\n")
    at = next(i for i, line in enumerate(lines) if "--allow-private-networks / --no-allow-private-networks" in line)
    assert lines[at].strip() == "--allow-private-networks / --no-allow-private-networks"
    assert lines[at + 1].lstrip().startswith("Also connect to loopback")
    assert max(cell_len(line) for line in lines) <= 80 < max(cell_len(line) for line in lines) + 10


def test_piped_help_has_no_terminal_codes_and_fits_its_width(tmp_path: Path) -> None:
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TERMINAL_WIDTH")}
    env["PYTHONPATH"] = str(REPO / "src")
    done = subprocess.run([OIV4, "build", "-h"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "\x1b[" not in done.stdout and "…" not in done.stdout
    from oiv4.cli.help_view import PIPED_WIDTH

    assert max(cell_len(line) for line in done.stdout.splitlines()) <= PIPED_WIDTH


def test_oiv4_alone_shows_the_help_fitted_to_the_terminal() -> None:
    code, raw = run_in_terminal([], 80)
    text = ANSI.sub("", raw).replace("\r\n", "\n")
    assert code == 2 and "Usage: oiv4 [OPTIONS] COMMAND" in text and "Stages, in order:" in text
    assert max(cell_len(line) for line in text.split("\n")) <= 80
