"""Transfers, once: one retry policy, one resumable download state, one temp sweep, one retry loop."""

from __future__ import annotations

import ast
import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

from oiv4.contracts.errors import DownloadError, TransferError
from oiv4.contracts.transfer import TransferSettings
from oiv4.io.download import download_file
from oiv4.io.http import HttpRanges, make_session
from oiv4.io.ranged import read_state
from oiv4.io.retry import retry_async
from oiv4.io.storage import TMP_MARK, Storage
from oiv4.io.temps import remove_dead_temps
from oiv4.run.archives import build_archive_set
from oiv4.stages.archives import ArchiveSettings
from oiv4.stages.archives.download import download_to_storage, stat_object
from oiv4.stages.archives.sources import make_source
from oiv4.stages.metadata import MetadataSettings, fetch_metadata
from support.archives import RangeServer, free_port, image_ids, images_archive, write_plan
from support.paths import SRC
from support.servers import tiny_server

#: A backoff no test could sit out: a test that finishes proves no such sleep happened.
NEVER = 3600.0


def _throttled(hits: dict[str, int], failures: int, retry_after: str) -> web.StreamResponse:
    async def handler(request: web.Request) -> web.StreamResponse:
        hits[request.method] = hits.get(request.method, 0) + 1
        if hits[request.method] <= failures:
            return web.Response(status=503, headers={"Retry-After": retry_after})
        return web.Response(body=b"x" * 10)

    return handler


def _stat_with_policy(url: str, policy: TransferSettings, waits: list[float]) -> object:
    async def go() -> object:
        async with make_session(TransferSettings(allow_private_networks=True)) as session:
            http = HttpRanges(session)
            return await retry_async(lambda _n: http.stat(url), policy, on_retry=lambda _a, w, _why: waits.append(w))

    return asyncio.run(go())


def test_retry_after_from_the_server_replaces_the_policys_own_backoff() -> None:
    hits: dict[str, int] = {}
    waits: list[float] = []
    with tiny_server({"/f": _throttled(hits, failures=2, retry_after="0")}) as base:
        obj = _stat_with_policy(base + "f", TransferSettings(attempts=5, backoff_s=NEVER), waits)
    assert obj.size == 10  # type: ignore[attr-defined]
    assert hits["HEAD"] == 3 and waits == [0.0, 0.0]


def test_a_retry_after_beyond_the_deadline_gives_up_at_once_without_sleeping() -> None:
    hits: dict[str, int] = {}
    waits: list[float] = []
    policy = TransferSettings(attempts=10, backoff_s=0.01, retry_deadline_s=60, retry_after_max_s=NEVER)
    with (
        tiny_server({"/f": _throttled(hits, failures=100, retry_after=str(int(NEVER)))}) as base,
        pytest.raises(TransferError, match="deadline") as err,
    ):
        _stat_with_policy(base + "f", policy, waits)
    assert hits["HEAD"] == 1 and waits == [] and err.value.attempts == 1
    assert f"{base}f: HTTP 503" in str(err.value)


def test_the_attempt_limit_counts_attempts_and_says_so() -> None:
    hits: dict[str, int] = {}
    waits: list[float] = []
    with (
        tiny_server({"/f": _throttled(hits, failures=100, retry_after="0")}) as base,
        pytest.raises(TransferError, match=r"gave up after 3 attempt\(s\)") as err,
    ):
        _stat_with_policy(base + "f", TransferSettings(attempts=3), waits)
    assert hits["HEAD"] == 3 and len(waits) == 2 and err.value.attempts == 3


def test_connection_refused_on_a_metadata_source_fails_on_the_first_attempt_naming_the_url(tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{free_port()}/openimages/"  # nothing listens there
    settings = MetadataSettings(
        base, transfer=TransferSettings(allow_private_networks=True, attempts=8, backoff_s=NEVER)
    )
    with pytest.raises(DownloadError) as err:
        fetch_metadata(Storage(str(tmp_path)), settings)
    assert err.value.attempts == 1
    assert base in str(err.value) and "cannot connect" in str(err.value) and "connection refused" in str(err.value)


def test_connection_refused_on_an_archive_source_fails_that_archive_at_once(tmp_path: Path) -> None:
    ids = image_ids(2, seed=40)
    storage = Storage(str(tmp_path / "root"))
    write_plan(storage, "validation", ids)
    source = f"http://127.0.0.1:{free_port()}/tar/"
    summary = build_archive_set(
        storage,
        "validation",
        ArchiveSettings(
            source=source, transfer=TransferSettings(allow_private_networks=True, backoff_s=NEVER, attempts=8)
        ),
    )
    report = summary.archives[0]
    assert report.status == "failed"
    assert f"cannot reach {source}" in report.error and "cannot connect" in report.error


class Interrupt(Exception):
    """Raised from a progress callback: the transfer stops there, as a Ctrl-C would stop it."""


def _interrupt_after(limit: int) -> object:
    seen = [0]

    def progress(*args: int | None) -> None:
        seen[0] += args[0] if len(args) == 1 else 0  # archives report increments
        if (args[0] if len(args) == 2 else seen[0]) > limit:  # metadata reports (done, total)
            raise Interrupt

    return progress


def test_an_interrupted_metadata_download_and_archive_download_leave_the_same_state(tmp_path: Path) -> None:
    csv = os.urandom(20_000)
    archive = images_archive("validation", image_ids(3, seed=41), noisy=True)
    part = 4096
    with RangeServer({"meta.csv": csv, archive.name: archive.data}) as server:
        meta_dest = tmp_path / "metadata" / "meta.csv"
        meta_settings = TransferSettings(allow_private_networks=True, part_size=part, connections=1, checkpoint_s=0)
        with pytest.raises(Interrupt):
            download_file(server.base_url + "meta.csv", meta_dest, meta_settings, _interrupt_after(2 * part))

        storage = Storage(str(tmp_path / "root"))
        transfer = TransferSettings(allow_private_networks=True, part_size=part, connections=1, checkpoint_s=0)
        source = make_source(server.base_url, transfer=transfer)
        obj = stat_object(source, archive.name, transfer)
        rel = "validation/images/validation.tar.gz"
        with pytest.raises(Interrupt):
            download_to_storage(source, obj, storage, rel, transfer, _interrupt_after(2 * part))

        meta_state, archive_state = read_state(meta_dest), read_state(storage.local_path(rel))
        assert meta_state is not None and archive_state is not None
        assert set(meta_state) == set(archive_state) == {"url", "size", "etag", "last_modified", "part_size", "done"}
        assert meta_state["done"] == archive_state["done"] == [0, 1]
        assert meta_state["url"] == server.base_url + "meta.csv" and archive_state["size"] == len(archive.data)

        # Both resume from that state: only the missing parts travel.
        before = server.bytes_served
        assert download_file(server.base_url + "meta.csv", meta_dest, meta_settings) == len(csv)
        assert server.bytes_served - before == len(csv) - 2 * part
        result = download_to_storage(source, obj, storage, rel, transfer)
        assert result.parts_resumed == 2 and result.bytes_fetched == len(archive.data) - 2 * part
    assert meta_dest.read_bytes() == csv and storage.local_path(rel).read_bytes() == archive.data


def test_the_temp_sweep_keeps_a_live_writers_temp_and_removes_a_dead_ones(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    live = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        (tmp_path / "a").mkdir()
        dead_tmp = tmp_path / f"a/x.zip{TMP_MARK}{int(dead.stdout)}-ab12"
        live_tmp = tmp_path / f"a/x.zip{TMP_MARK}{live.pid}-cd34"
        foreign = tmp_path / f"a/x.zip{TMP_MARK}nopid"
        for p in (dead_tmp, live_tmp, foreign):
            p.write_bytes(b"partial")
        assert remove_dead_temps(storage, [f"a/x.zip{TMP_MARK}*"]) == 1
        assert not dead_tmp.exists() and live_tmp.exists() and foreign.exists()
    finally:
        live.stdin.close()  # type: ignore[union-attr]
        live.wait(10)
    assert remove_dead_temps(storage, [f"a/x.zip{TMP_MARK}*"]) == 1  # now its writer is gone too
    assert not live_tmp.exists()


# ---- one retry loop ------------------------------------------------------------------------------

#: The only module allowed to sleep between attempts.
RETRY_MODULE = "oiv4/io/retry.py"


def _is_wait(node: ast.AST) -> bool:
    """A pause: `sleep(...)` in any spelling, or `<event>.wait(...)` (not `wait(futures)` / `asyncio.wait`)."""
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    if isinstance(f, ast.Name):
        return f.id == "sleep"
    if isinstance(f, ast.Attribute):
        owner = f.value.id if isinstance(f.value, ast.Name) else ""
        return f.attr == "sleep" or (f.attr == "wait" and owner not in ("asyncio", "concurrent"))
    return False


def _retry_words(node: ast.AST) -> bool:
    for sub in ast.walk(node):
        text = sub.id if isinstance(sub, ast.Name) else sub.attr if isinstance(sub, ast.Attribute) else ""
        if any(w in text.lower() for w in ("attempt", "retry", "retries", "backoff")):
            return True
    return False


def retry_loops(src: Path) -> list[str]:
    """Loops that wait between tries: a sleep/wait inside a loop that also catches errors or counts attempts."""
    found = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src).as_posix()
        if rel == RETRY_MODULE:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.For | ast.AsyncFor | ast.While):
                continue
            waits = any(_is_wait(n) for n in ast.walk(node))
            tries = any(isinstance(n, ast.Try) for n in ast.walk(node)) or _retry_words(node)
            if waits and tries:
                found.append(f"{rel}:{node.lineno}")
    return found


def test_there_is_exactly_one_retry_loop_in_the_source_tree() -> None:
    assert retry_loops(SRC) == [], "retry through oiv4.io.retry.retry_async instead"
    retry = (SRC / RETRY_MODULE).read_text()
    assert "async def retry_async(" in retry and "await asyncio.sleep(wait)" in retry


def test_the_retry_loop_checker_sees_a_second_loop(tmp_path: Path) -> None:
    (tmp_path / "oiv4" / "stages").mkdir(parents=True)
    (tmp_path / "oiv4" / "stages" / "x.py").write_text(
        "import time\n"
        "def get(fn, attempts):\n"
        "    for attempt in range(attempts):\n"
        "        try:\n"
        "            return fn()\n"
        "        except OSError:\n"
        "            time.sleep(2 ** attempt)\n"
    )
    assert retry_loops(tmp_path) == ["oiv4/stages/x.py:3"]


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_oiv4_talks_http_through_aiohttp_and_s3_through_s3fs_only() -> None:
    # One client library per protocol: a second HTTP stack would bring its own proxies, timeouts and retries.
    banned = ("boto3", "urllib.request", "urllib3", "requests", "httpx", "http.client")
    found = sorted(
        f"{p.relative_to(SRC)} imports {m}"
        for p in (SRC / "oiv4").rglob("*.py")
        for m in _imported_modules(p)
        if m.startswith(banned)
    )
    assert found == []
