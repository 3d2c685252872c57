"""Benchmark: can the local mirror feed a fetcher faster than the fetcher can work? One run, two servers.

Renders a universe of photo-sized originals (default 200 images of 2-12 MP), serves it from
`MirrorProcess` (its own process, like the fetch benchmarks use it), and downloads every original with
32 concurrent aiohttp connections, three passes. Baseline: aiohttp's own static file handler
(`web.static`, sendfile) serving the very same cached files from another process. The ratio says how
much of a plain static server's speed the mirror's Range/ETag/misbehaviour logic keeps.

    .venv/bin/python benchmarks/mirror_capacity.py [--images 200] [--megapixels 2 12] [--cache bench-data/mirror]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from oiv4_mirror import MirrorProcess, UniverseSpec

STATIC_SERVER = """
import json, sys
from aiohttp import web
app = web.Application()
app.router.add_static("/o", sys.argv[1])
async def main():
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    print(json.dumps({"port": runner.addresses[0][1]}), flush=True)
    await __import__("asyncio").Event().wait()
__import__("asyncio").run(main())
"""


async def download_all(urls: list[str], concurrency: int, passes: int) -> tuple[float, int]:
    """Best pass: (seconds, bytes)."""
    best = (float("inf"), 0)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def one(url: str) -> int:
            async with session.get(url) as resp:
                resp.raise_for_status()
                return len(await resp.read())

        for _ in range(passes):
            began = time.perf_counter()
            total = sum(await asyncio.gather(*(one(u) for u in urls)))
            best = min(best, (time.perf_counter() - began, total))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--megapixels", type=float, nargs=2, default=(2.0, 12.0))
    parser.add_argument("--cache", default="bench-data/mirror")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()

    spec = UniverseSpec(n_images=args.images, megapixels=tuple(args.megapixels), misbehaviour_fraction=0.0)
    began = time.perf_counter()
    with MirrorProcess(spec, cache_dir=args.cache) as mirror:
        ready_s = time.perf_counter() - began
        universe = mirror.universe
        megapixels = sum(i.width * i.height for i in universe.images) / 1e6
        ids = universe.image_ids
        mirror_s, nbytes = asyncio.run(
            download_all([mirror.base_url + universe.info(i).original_path for i in ids], args.concurrency, args.passes)
        )
    static = subprocess.Popen(
        [sys.executable, "-c", STATIC_SERVER, str(Path(args.cache) / "originals")], stdout=subprocess.PIPE, text=True
    )
    try:
        port = json.loads(static.stdout.readline())["port"]  # type: ignore[union-attr]
        static_s, static_bytes = asyncio.run(
            download_all([f"http://127.0.0.1:{port}/o/{i}" for i in ids], args.concurrency, args.passes)
        )
    finally:
        static.terminate()
        static.wait()
    assert static_bytes == nbytes
    print(f"universe: {len(ids):,} originals, {megapixels:,.0f} MP, {nbytes / 1e6:,.0f} MB; ready in {ready_s:.1f} s")
    print(f"mirror (MirrorProcess):  {nbytes / 1e6 / mirror_s:7.0f} MB/s  {len(ids) / mirror_s:6.0f} req/s")
    print(f"baseline (web.static):   {nbytes / 1e6 / static_s:7.0f} MB/s  {len(ids) / static_s:6.0f} req/s")
    print(f"ratio mirror/baseline: {static_s / mirror_s:.2f}")


if __name__ == "__main__":
    main()
