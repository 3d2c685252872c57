"""Docs that run: every fenced block of README.md and docs/*.md is executed or checked against a tiny real build.

- ```python blocks run, per document in order (later blocks see earlier names), in a subprocess in a temp
  dir, against a fresh copy of a tiny build made with `oiv4 demo`'s code from a mirror on 127.0.0.1.
- ```bash / ```console blocks: every `oiv4 ...` command line must parse with the real click command
  (unknown flags, bad choices and missing arguments fail); read-only ones (`RUNNABLE`) and `python -c`
  lines also run against the tiny build and must exit 0.
- ```text blocks are not code (layouts, synopses, diagrams); a block without a language fails.
- A block that truly cannot run here (the internet, a cluster, an install) carries
  `<!-- docs-test: skip: <reason> -->` on the line before it; its `oiv4` lines are still parsed.
  Every skip needs a reason, and they are counted and printed, never silent.
- Beyond blocks: every `oiv4 <command> --flag` written anywhere in the docs (prose too) names a flag the
  command has, and every repository path the docs mention exists.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.main import get_command

from oiv4.cli import app
from support.paths import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LANGS = {"python", "bash", "console", "text"}
SKIP_RE = re.compile(r"<!--\s*docs-test:\s*skip(?::\s*(?P<reason>.*?))?\s*-->")
#: Commands that only read a build: run for real against the tiny root.
RUNNABLE = {"status", "verify", "sql", "report", "estimate"}
#: Placeholders the docs use for "your root"; replaced by the tiny build's path.
ROOT_WORDS = ("/data/open_images", "s3://my-bucket/open_images", "demo-data", "ROOT")
#: Skips allowed in all the docs together: keep the unrunnable few.
MAX_SKIPS = 12
#: README's section that is run as a whole: start the mirror, then every command as written.
OFFLINE_SECTION = "### Working offline, or against your own mirror"
#: README's section with the two commands after `make demo`, and docs/similarity.md's section that reads their
#: output back: run together, in order, by test_features_and_ground_truth_run_as_written_then_read_back.
FEATURES_SECTION = "## Features and ground truth"
READING_SECTION = "## Reading features"


@dataclass(frozen=True)
class Block:
    doc: str
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None  # the reason, "" when a marker has none, None when not skipped
    section: str = ""  # the heading the block is under, e.g. "### Working offline, or against your own mirror"


def parse_blocks(text: str, doc: str) -> list[Block]:
    """Fenced blocks (indented ones too, as in numbered lists) with the skip marker right before them."""
    blocks, lines, i, section = [], text.splitlines(), 0, ""
    while i < len(lines):
        m = re.match(r"^(\s*)```(\S*)\s*$", lines[i])
        if not m:
            section = lines[i] if lines[i].startswith("#") else section
            i += 1
            continue
        indent, lang, start = m.group(1), m.group(2), i
        body = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        prev = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        skip = SKIP_RE.search(prev)
        reason = None if not skip else (skip.group("reason") or "")
        blocks.append(Block(doc, start + 1, lang, "\n".join(body) + "\n", reason, section))
        i += 1
    return blocks


def all_blocks() -> list[Block]:
    return [b for d in DOCS for b in parse_blocks(d.read_text(), str(d.relative_to(REPO)))]


def commands(code: str) -> list[str]:
    """Shell command lines of a block: continuations and multi-line quotes joined, comments dropped, `&&` split."""
    out, buffer = [], ""
    for raw in re.sub(r"\\\n\s*", " ", code).splitlines():
        # inside an open quote the line is kept as written (a `python -c` body keeps its indentation)
        buffer = buffer + "\n" + raw.rstrip() if buffer else raw.strip().removeprefix("$ ")
        try:
            words = shlex.split(buffer, comments=True)
        except ValueError:  # a quote still open: the command goes on on the next line
            continue
        buffer = ""
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            if words[:cut]:
                out.append(shlex.join(words[:cut]))
            words = words[cut + 1 :]
    assert not buffer, f"unbalanced quotes in {code!r}"
    return out


def _oiv4_args(command: str) -> list[str] | None:
    words = shlex.split(command)
    if words and words[0] in ("oiv4", ".venv/bin/oiv4"):
        return words[1:]
    return None


def _substitute(words: list[str], root: str) -> list[str]:
    out = []
    for w in words:
        if w == "R":
            w = root
        for p in ROOT_WORDS:
            w = w.replace(p, root)
        out.append(w)
    return out


def check_parses(args: list[str]) -> None:
    """The real click command parses `args` (no callback runs): flags, choices and arguments are checked."""
    group = get_command(app)
    if not args or args[0] in ("--help", "-h", "--version"):
        return
    cmd = group.commands.get(args[0])
    assert cmd is not None, f"no command oiv4 {args[0]}"
    rest = args[1:]
    if "--help" in rest or "-h" in rest:
        rest = [a for a in rest if a not in ("--help", "-h")]
    cmd.make_context(args[0], list(rest), resilient_parsing=False)


@pytest.fixture(scope="module")
def tiny(tiny_demo_root: Path) -> Path:
    return tiny_demo_root


@pytest.fixture
def root(tiny: Path, tmp_path: Path) -> Iterator[Path]:
    """A fresh copy per test, so what a block writes never reaches another document's blocks."""
    dest = tmp_path / "root"
    shutil.copytree(tiny, dest)
    yield dest


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(REPO / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else src
    env["COLUMNS"] = "120"
    return env


DRIVER = """
import json, sys, traceback
# Image.show() would start a desktop viewer; with none registered, an image read from a build is written
# to the temp folder instead, and its path printed (oiv4.read.show).
from PIL import ImageShow
ImageShow._viewers.clear()
ns = {"__name__": "__main__"}
for block in json.load(open(sys.argv[1])):
    try:
        exec(compile(block["code"], block["where"], "exec"), ns)
    except BaseException:
        print("FAILED in " + block["where"], file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
"""


def _generic_python(b: Block) -> bool:
    return b.lang == "python" and b.skip is None and b.section != READING_SECTION


def _python_docs() -> list[str]:
    return sorted({b.doc for b in all_blocks() if _generic_python(b)})


@pytest.mark.parametrize("doc", _python_docs())
def test_python_blocks_of_each_document_run_against_a_tiny_build(doc: str, root: Path, tmp_path: Path) -> None:
    blocks = [b for b in all_blocks() if b.doc == doc and _generic_python(b)]
    code = []
    for b in blocks:
        text = b.code
        for p in ROOT_WORDS:
            text = text.replace(p, str(root))
        code.append({"where": f"{b.doc}:{b.line}", "code": text})
    (tmp_path / "blocks.json").write_text(json.dumps(code))
    (tmp_path / "driver.py").write_text(DRIVER)
    work = tmp_path / "cwd"
    work.mkdir()
    done = subprocess.run(
        [sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "blocks.json")],
        cwd=work,
        env={**_env(), "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    if doc == "README.md":  # the first snippet's .show(), on a machine with no image viewer
        shown = re.search(r"no image viewer found on this machine; wrote the image to (\S+)", done.stderr)
        assert shown is not None, done.stderr[-3000:]
        assert Path(shown.group(1)).parent == tmp_path and Path(shown.group(1)).stat().st_size > 0


def _shell_blocks() -> list[Block]:
    return [b for b in all_blocks() if b.lang in ("bash", "console")]


@pytest.mark.parametrize("block", _shell_blocks(), ids=lambda b: f"{b.doc}:{b.line}")
def test_every_oiv4_command_line_in_a_shell_block_parses_and_read_only_ones_run(block: Block, root: Path) -> None:
    for command in commands(block.code):
        args = _oiv4_args(command)
        if args is not None:
            check_parses(_substitute(args, str(root)))
        if block.skip is not None:
            continue  # parsed above; not run (the marker says why, and the summary counts it)
        if block.section == OFFLINE_SECTION:
            continue  # run as a whole, against a mirror it starts: test_the_offline_section_runs_as_written
        if block.section == FEATURES_SECTION:
            continue  # run as a whole with the reading block: test_features_and_ground_truth_run_as_written_...
        if args is not None and args and args[0] in RUNNABLE | {"--help", "--version"}:
            run = [sys.executable, "-m", "oiv4", *_substitute(args, str(root))]
        elif args is not None:
            pytest.fail(f"{block.doc}:{block.line}: `{command}` changes a build; mark the block skip with a reason")
        else:
            words = _substitute(shlex.split(command), str(root))
            assert re.fullmatch(r"(\.venv/bin/)?python3?(\.11)?", words[0]), (
                f"{block.doc}:{block.line}: `{command}` cannot run offline here; mark the block skip with a reason"
            )
            run = [sys.executable, *words[1:]]
        done = subprocess.run(run, cwd=root, env=_env(), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{block.doc}:{block.line}: {command}\n{done.stdout[-1500:]}{done.stderr[-1500:]}"


def test_every_block_has_a_language_and_every_skip_a_reason(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = all_blocks()
    assert blocks, "no fenced blocks found: the parser is broken"
    unlabelled = [f"{b.doc}:{b.line}" for b in blocks if b.lang not in LANGS]
    assert unlabelled == [], f"label these blocks with one of {sorted(LANGS)}"
    skipped = [b for b in blocks if b.skip is not None]
    assert [f"{b.doc}:{b.line}" for b in skipped if not b.skip.strip()] == [], "a skip needs a reason"
    assert len(skipped) <= MAX_SKIPS, "too many blocks are not run: make them runnable"
    with capsys.disabled():
        print(f"\ndocs: {len(blocks)} blocks, {len(skipped)} not run:")
        for b in skipped:
            print(f"  {b.doc}:{b.line} ({b.lang}): {b.skip}")


def _flags_of(name: str) -> set[str]:
    group = get_command(app)
    cmd = group.commands[name]
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help", "-h"}


def _code_lines(doc: Path) -> Iterator[tuple[int, str]]:
    """(line number, code) for every line of a fenced block and every inline `code span` of the prose."""
    fence = False
    for n, line in enumerate(doc.read_text().splitlines(), 1):
        if line.strip().startswith("```"):
            fence = not fence
            continue
        if fence:
            yield n, line
        else:
            for span in re.findall(r"`([^`]+)`", line):
                yield n, span


def test_every_oiv4_flag_named_anywhere_in_the_docs_exists_on_its_command() -> None:
    group = get_command(app)
    wrong = []
    for doc in DOCS:
        for n, code in _code_lines(doc):
            for m in re.finditer(r"(?<![\w-])oiv4 ([a-z][a-z_]*)(.*?)(?=\boiv4 |$)", code):
                name, rest = m.group(1), m.group(2).split(" #")[0]
                if name not in group.commands:
                    wrong.append(f"{doc.name}:{n}: no command oiv4 {name}")
                    continue
                flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest))
                wrong += [f"{doc.name}:{n}: oiv4 {name} has no {f}" for f in sorted(flags - _flags_of(name))]
    assert wrong == []


def test_the_flag_checker_sees_an_unknown_flag() -> None:
    with pytest.raises(Exception, match="no-such-flag"):  # typer's vendored click: NoSuchOption
        check_parses(["status", "--root", "x", "--no-such-flag"])
    assert "--no-such-flag" not in _flags_of("status")


#: Repository paths the docs may mention: anything under these folders, or a top-level file.
PATH_RE = re.compile(
    r"(?<![\w/.-])((?:src|docs|tests|benchmarks|shared)/[\w./-]*\w|"
    r"(?:README|pyproject|requirements|Makefile)[\w.]*)(?![\w/])"
)


def test_every_repository_path_the_docs_mention_exists() -> None:
    missing = []
    for doc in DOCS:
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            for m in PATH_RE.finditer(line):
                rel = m.group(1).rstrip(".")
                if not (REPO / rel).exists():
                    missing.append(f"{doc.name}:{n}: {rel}")
    assert missing == []


def test_the_archive_table_names_its_source_without_pointing_outside_the_repo() -> None:
    source = json.loads((REPO / "src/oiv4/data/archives.json").read_text())["_source"]
    assert "/work/" not in source and "shared/" not in source


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_offline_section_runs_as_written(tmp_path: Path) -> None:
    """README's offline section, typed into an empty folder: `oiv4 mirror` in the background, then every
    command of the section in order, each with the exit code the README gives (0 unless "exits N").
    The one change: port 8000 becomes a free one (other programs on this machine may hold 8000). The
    commands the mirror prints when ready must be the section's commands, character for character."""
    blocks = [b for b in all_blocks() if b.doc == "README.md" and b.section == OFFLINE_SECTION]
    assert [b.lang for b in blocks] == ["bash", "bash"] and all(b.skip is None for b in blocks)
    port = str(_free_port())
    start, *rest = [line for b in blocks for line in b.code.splitlines() if line.strip()]
    assert commands(start) == ["oiv4 mirror --images 3000 --port 8000"]
    steps = []
    for line in rest:
        command, _, comment = line.partition(" #")
        expected = re.search(r"exits (\d+)", comment)
        steps.append((command.strip().replace("8000", port), int(expected.group(1)) if expected else 0))
    oiv4 = str(Path(sys.executable).with_name("oiv4"))  # the installed script, as a user runs it
    work = tmp_path / "cwd"
    work.mkdir()
    env = _env()
    mirror = subprocess.Popen(
        [oiv4, *shlex.split(start.replace("8000", port))[1:]],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert mirror.stdout is not None
        printed = []
        for line in mirror.stdout:  # generation may take minutes on a cold cache
            printed.append(line.rstrip("\n"))
            if line.startswith("  oiv4 status"):
                break
        assert f"mirror serving at http://127.0.0.1:{port}; Ctrl-C to stop" in printed
        assert [p.strip() for p in printed if p.startswith("  oiv4 ")] == [c for c, _ in steps]
        for command, expected in steps:
            done = subprocess.run(
                [oiv4, *shlex.split(command)[1:]], cwd=work, env=env, capture_output=True, text=True, timeout=900
            )
            assert done.returncode == expected, f"{command}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    finally:
        mirror.send_signal(2)  # Ctrl-C, as the mirror says
        mirror.wait(timeout=60)
    # The build is real: the archive sets converted, train fetched (no row refused by the guard).
    from oiv4.io.sql import connect

    with connect(str(work / "data")) as db:
        got = dict(db.sql("select outcome, count(*) from ledger_train group by 1").fetchall())
    assert got.get("ok", 0) > 0.5 * sum(got.values()) and "blocked_address" not in got
    assert "targets" in done.stdout and "not yet done" not in done.stdout  # the status table, last command


def test_features_and_ground_truth_run_as_written_then_read_back(tiny: Path, tmp_path: Path) -> None:
    """README's two commands after `make demo`, typed in the folder that holds `demo-data` and `.venv` (an
    80-column terminal's COLUMNS), then docs/similarity.md's reading block. The one change is the model:
    vgg16-fc2's weights (528 MB) come from download.pytorch.org, out of reach here, so each command gets
    `--model tiny-cnn` appended (the last --model wins; features also `--weights` with random weights saved as
    published ones are) and the reading block reads tiny-cnn where it says vgg16-fc2."""
    import torch

    from oiv4.stages.features.nets import TinyNet

    (block,) = [b for b in all_blocks() if b.doc == "README.md" and b.section == FEATURES_SECTION]
    (reading,) = [b for b in all_blocks() if b.section == READING_SECTION and b.lang == "python"]
    assert block.lang == "bash" and block.skip is None and reading.skip is None
    work = tmp_path / "cwd"
    shutil.copytree(tiny, work / "demo-data")
    (work / ".venv" / "bin").mkdir(parents=True)
    (work / ".venv" / "bin" / "oiv4").symlink_to(Path(sys.executable).with_name("oiv4"))  # the installed script
    torch.save(TinyNet().state_dict(), tmp_path / "tiny.pth")
    env = {**_env(), "COLUMNS": "80"}
    said = []
    for command in commands(block.code):
        words = shlex.split(command)
        words += ["--model", "tiny-cnn"] + (["--weights", str(tmp_path / "tiny.pth")] if "features" in words else [])
        done = subprocess.run(words, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0 and "Traceback" not in done.stderr, f"{command}\n{done.stderr[-2000:]}"
        said.append(done.stderr)
    summaries = [re.search(r"^features: (\w+) \(tiny-cnn, 16-d\): [1-9]", s, re.MULTILINE) for s in said[:2]]
    assert [s is not None for s in summaries] == [True, True]
    assert "wrote neighbors/tiny-cnn/validation-targets.parquet" in said[2]
    assert (work / "demo-data/neighbors/tiny-cnn/validation-targets.parquet").exists()  # the path README names
    code = [{"where": f"{reading.doc}:{reading.line}", "code": reading.code.replace("vgg16-fc2", "tiny-cnn")}]
    (tmp_path / "blocks.json").write_text(json.dumps(code))
    (tmp_path / "driver.py").write_text(DRIVER)
    done = subprocess.run(
        [sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "blocks.json")],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "0123456789abcdef has no tiny-cnn vector in targets" in done.stdout, done.stdout
    # The report README points to after `make demo` now shows the ground truth: seeded queries, top 5 as images.
    report = subprocess.run(
        [str(work / ".venv/bin/oiv4"), "report", "--root", "demo-data"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert report.returncode == 0, report.stderr
    html = (work / "demo-data/report/index.html").read_text()
    section = html[html.index("<h2>Nearest neighbours</h2>") :].split("</section>", 1)[0]
    assert section.count("query<br>") == 3 and section.count("#5 ·") == 3 and "not readable" not in section
    assert section.count("data:image/jpeg;base64") == 18
