"""Small HTTP servers on 127.0.0.1 that tests start for behaviour the mirror does not have."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web


@contextmanager
def tiny_server(routes: dict[str, web.StreamResponse | bytes]) -> Iterator[str]:
    """A throwaway aiohttp server on 127.0.0.1 for misbehaviours the mirror does not do on CSVs."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        return await routes[request.path](request)

    async def start() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box["runner"] = runner
        box["port"] = runner.addresses[0][1]
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield f"http://127.0.0.1:{box['port']}/"
    finally:
        asyncio.run_coroutine_threadsafe(box["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
