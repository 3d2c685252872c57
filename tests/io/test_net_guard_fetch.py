"""The fetch stage behind the network guard: crafted CSV URLs cannot reach or map internal services."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
from dataclasses import replace
from pathlib import Path

from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from oiv4.io.ledger import read_set
from oiv4.io.storage import Storage
from oiv4.run.executor import ExecutorSettings
from oiv4.run.fetch import fetch_set
from oiv4.stages.fetch import FETCH_TRANSFER, FetchSettings
from oiv4.stages.fetch.http import HttpClient
from support.fetch_env import write_manifest

FAST = replace(FETCH_TRANSFER, attempts=3, backoff_s=0.01, deadline_s=5.0)


class HostileDns(AbstractResolver):
    """A real resolver for the test: a public-looking name answered with 127.0.0.1 (DNS rebinding)."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        address = self.names.get(host, host)
        return [{"hostname": host, "host": address, "port": port, "family": socket.AF_INET, "proto": 0, "flags": 0}]

    async def close(self) -> None:
        return None


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _start(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


def test_open_port_rebinding_name_and_redirect_to_loopback_all_end_blocked_with_one_reason():
    async def scenario() -> tuple[list, list[str]]:
        hits: list[str] = []

        async def secret(request: web.Request) -> web.Response:
            hits.append(request.path)
            return web.Response(body=b"internal admin page")

        internal = web.Application()
        internal.router.add_route("GET", "/{tail:.*}", secret)
        internal_runner, port = await _start(internal)

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPFound(f"http://127.0.0.1:{port}/latest/meta-data/")

        hostile = web.Application()
        hostile.router.add_route("GET", "/{tail:.*}", redirect)
        hostile_runner, hostile_port = await _start(hostile)
        try:
            # The redirector stands in for a public host: admitted by exact endpoint, everything else guarded.
            client = HttpClient(
                replace(FAST, allowed_endpoints=frozenset({("127.0.0.1", hostile_port)})),
                resolver=HostileDns({"photos.example.com": "127.0.0.1"}),
            )
            async with client:
                results = [
                    await client.fetch(f"http://127.0.0.1:{port}/admin"),
                    await client.fetch(f"http://127.0.0.1:{_closed_port()}/admin"),
                    await client.fetch(f"http://photos.example.com:{port}/1.jpg"),
                    await client.fetch(f"http://127.0.0.1:{hostile_port}/2.jpg"),
                    await client.fetch(f"http://[::1]:{port}/3.jpg"),
                    await client.fetch(f"http://169.254.169.254:{port}/latest/meta-data/"),
                ]
        finally:
            await internal_runner.cleanup()
            await hostile_runner.cleanup()
        return results, hits

    results, hits = asyncio.run(scenario())
    assert [r.outcome for r in results] == ["blocked_address"] * 6
    assert hits == []  # nothing ever reached the internal service
    assert all(r.attempts == 1 for r in results)  # never retried
    loopback = {r.reason for r in results[:5]}
    assert len(loopback) == 1, loopback  # open port, closed port, rebinding, redirect, ::1: the same words
    reason = loopback.pop()
    assert "loopback" in reason and "127.0.0.1" not in reason and "refused" not in reason.split(":", 1)[1]
    assert "link-local" in results[5].reason
    assert results[3].final_url.startswith("http://127.0.0.1:") and results[3].final_url.endswith("/meta-data/")


def _internal_service_in_a_thread() -> tuple[int, threading.Event, threading.Thread]:
    """An HTTP service on 127.0.0.1 in its own thread and loop (the fetch stage runs its own loops)."""
    started, stop, port = threading.Event(), threading.Event(), []

    async def serve() -> None:
        async def internal(_: web.Request) -> web.Response:
            return web.Response(body=b"internal")

        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", internal)
        runner, p = await _start(app)
        port.append(p)
        started.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await runner.cleanup()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10)
    return port[0], stop, thread


def test_a_crafted_plan_run_by_the_fetch_stage_records_blocked_address_for_open_and_closed_ports(tmp_path: Path):
    open_port, stop, thread = _internal_service_in_a_thread()
    try:
        storage = Storage(str(tmp_path))
        rows = [
            {"ImageID": "00000000000000a1", "OriginalURL": f"http://127.0.0.1:{open_port}/a.jpg"},
            {"ImageID": "00000000000000a2", "OriginalURL": f"http://127.0.0.1:{_closed_port()}/b.jpg"},
        ]
        write_manifest(storage, "train", rows)
        fetch_set(storage, "train", FetchSettings(transfer=FAST), ExecutorSettings(kind="thread", workers=1))
    finally:
        stop.set()
        thread.join(10)
    ledger = read_set(storage, "train").to_pylist()
    assert sorted(r["outcome"] for r in ledger) == ["blocked_address", "blocked_address"], ledger
    assert ledger[0]["reason"] == ledger[1]["reason"]


def test_allow_private_networks_lets_the_same_url_through():
    open_port, stop, thread = _internal_service_in_a_thread()

    async def fetch(allow: bool) -> str:
        async with HttpClient(replace(FETCH_TRANSFER, allow_private_networks=allow, attempts=1)) as client:
            return (await client.fetch(f"http://127.0.0.1:{open_port}/a.jpg")).outcome

    try:
        assert [asyncio.run(fetch(False)), asyncio.run(fetch(True))] == ["blocked_address", "ok"]
    finally:
        stop.set()
        thread.join(10)


def test_many_endless_bodies_at_once_keep_peak_memory_bounded(tmp_path: Path):
    """8 endless responses read together, with a 96 MiB cap each: buffered in RAM that reached ~950 MB of peak
    RSS (measured); spooled (8 MiB in RAM each, the rest in temp files) the process stays far below 400 MB."""
    script = textwrap.dedent(
        """
        import asyncio, json, os
        from aiohttp import web
        from dataclasses import replace
        from oiv4.stages.fetch import FETCH_TRANSFER, HttpSettings
        from oiv4.stages.fetch.http import HttpClient

        CHUNK = os.urandom(1 << 20)

        async def endless(request):
            resp = web.StreamResponse()
            await resp.prepare(request)
            while True:
                await resp.write(CHUNK)

        def vm_hwm():
            with open("/proc/self/status") as fh:
                return next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmHWM:"))

        async def main():
            app = web.Application()
            app.router.add_route("GET", "/{tail:.*}", endless)
            runner = web.AppRunner(app, access_log=None); await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0); await site.start()
            base = f"http://127.0.0.1:{runner.addresses[0][1]}"
            transfer = replace(FETCH_TRANSFER, allow_private_networks=True, attempts=1, deadline_s=120.0)
            before = vm_hwm()
            async with HttpClient(transfer, HttpSettings(max_bytes=96 << 20)) as client:
                got = await asyncio.gather(*(client.fetch(f"{base}/{i}.jpg") for i in range(8)))
            print(json.dumps({"outcomes": [g.outcome for g in got], "before": before, "after": vm_hwm()}))
            await runner.cleanup()

        asyncio.run(main())
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["outcomes"] == ["too_large"] * 8
    assert result["after"] < 400 << 20, result
