"""The worst case of one fetch worker, in one run: giant images and endless bodies at once, through the real shard.

A fresh process runs a shard of 12 rows on threads of itself (the same shard code a pool worker runs), so its
VmHWM is the worker's peak: four giant PNG originals (25 MP RGBA, MD5-correct, so they are decoded) and eight
endless responses, all in flight together (concurrency 16, 4 decode threads). The peak must stay within the bound
README states: the worker's RSS before the shard + the most the decode budget lets be charged at once (the budget,
or one image alone when bigger) + `--spool-mb` per download in flight + the encoded originals + 128 MiB of
allocator slack. Buffering bodies or decoding without the budget goes far over it (README, benchmarks/RESULTS.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

CHILD = textwrap.dedent(
    """
    import asyncio, base64, hashlib, io, json, os, sys, threading
    from aiohttp import web
    from PIL import Image
    from support.fetch_env import write_manifest
    from oiv4.io.memory_budget import decoded_bytes
    from oiv4.io.storage import Storage
    from oiv4.io.ledger import read_set
    from oiv4.run.executor import ExecutorSettings
    from oiv4.run.fetch import fetch_set
    from oiv4.stages.fetch import FetchSettings, HttpSettings

    SIDE, GIANTS, ENDLESS = 5000, 4, 8
    BUDGET, SPOOL, CONCURRENCY = 256 << 20, 8 << 20, 16
    root = sys.argv[1]

    def vm(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    originals = {}
    for i in range(GIANTS):
        buf = io.BytesIO()
        Image.new("RGBA", (SIDE, SIDE + i), (10, 200, 30 + i, 128)).save(buf, "PNG", compress_level=1)
        originals[f"giant{i}.png"] = buf.getvalue()
    chunk = os.urandom(1 << 20)

    async def serve(request):
        name = request.match_info["name"]
        if name in originals:
            return web.Response(body=originals[name], content_type="image/png")
        resp = web.StreamResponse()
        await resp.prepare(request)
        while True:
            await resp.write(chunk)

    ready = threading.Event()
    port = []

    def server():
        async def start():
            app = web.Application()
            app.router.add_get("/{name}", serve)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port.append(runner.addresses[0][1])
            ready.set()
            await asyncio.Event().wait()
        asyncio.run(start())

    threading.Thread(target=server, daemon=True).start()
    ready.wait()
    base = f"http://127.0.0.1:{port[0]}"
    rows = []
    for name, data in originals.items():
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        rows.append({"ImageID": f"{len(rows):016x}", "OriginalURL": f"{base}/{name}", "OriginalSize": len(data), "OriginalMD5": md5})
    for i in range(ENDLESS):
        rows.append({"ImageID": f"{len(rows):016x}", "OriginalURL": f"{base}/endless{i}.jpg"})
    storage = Storage(root)
    write_manifest(storage, "train", rows, shard_rows=len(rows))
    settings = FetchSettings(
        http=HttpSettings(allow_private_networks=True, attempts=1, deadline=120.0, max_bytes=96 << 20,
                          concurrency=CONCURRENCY, spool_above=SPOOL),
        cpu_threads=GIANTS, decode_budget_bytes=BUDGET,
    )
    before = vm("VmRSS")
    fetch_set(storage, "train", settings, ExecutorSettings(kind="thread", workers=1))
    outcomes = sorted(r["outcome"] for r in read_set(storage, "train").to_pylist())
    charge = max(decoded_bytes(SIDE, SIDE + i, 16) for i in range(GIANTS))
    print(json.dumps({"outcomes": outcomes, "base": before, "peak": vm("VmHWM"), "budget": BUDGET, "charge": charge,
                      "spool": SPOOL * CONCURRENCY, "inputs": sum(map(len, originals.values()))}))
    """
)


def test_giant_images_and_endless_bodies_at_once_stay_within_the_stated_bound(tmp_path: Path) -> None:
    tests = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), *sys.path]), "TMPDIR": str(tmp_path)}
    root = tmp_path / "root"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(root)], capture_output=True, text=True, timeout=600, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert r["outcomes"] == ["ok"] * 4 + ["too_large"] * 8, r["outcomes"]
    bound = r["base"] + max(r["budget"], r["charge"]) + r["spool"] + r["inputs"] + (128 << 20)
    assert r["peak"] <= bound, {k: (v >> 20 if isinstance(v, int) else v) for k, v in {**r, "bound": bound}.items()}
