"""The worst case of one fetch worker, in one run: giant images and endless bodies at once, through the real shard.

A fresh process runs a shard on threads of itself (the same shard code a pool worker runs), so its VmHWM is the
worker's peak. The originals are made by another process beforehand (encoding a giant progressive JPEG alone
peaks near 2 GB, which would hide the worker's own peak). The peak must stay within the bound README states:
the worker's RSS before the shard + the most the decode budget lets be charged at once (the budget, or one image
alone when bigger, charged by the production rule `decode_charge`) + `--spool-mb` per download in flight + the
encoded originals + 128 MiB of allocator slack. Buffering bodies, decoding without the budget, or charging a
progressive JPEG less than its coefficient buffer goes over it (README, benchmarks/RESULTS.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

MAKE_ORIGINALS = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from PIL import Image

    kind, out = sys.argv[1], Path(sys.argv[2])
    if kind == "png":  # four 25 MP RGBA PNGs: 16 B/pixel charged, decoded at full size
        for i in range(4):
            Image.new("RGBA", (5000, 5000 + i), (10, 200, 30 + i, 128)).save(out / f"giant{i}.png", compress_level=1)
    else:  # 196 MP, 4:4:4, progressive (10 scans, under the scan limit): libjpeg holds every coefficient
        Image.new("RGB", (14000, 14000), (120, 30, 200)).save(
            out / "giant.jpg", quality=90, progressive=True, subsampling=0
        )
    """
)

CHILD = textwrap.dedent(
    """
    import asyncio, base64, hashlib, json, sys, threading
    from pathlib import Path
    from aiohttp import web
    from support.fetch_env import write_manifest
    from oiv4.io.strict_decode import decode_charge, open_header
    from oiv4.io.storage import Storage
    from oiv4.io.ledger import read_set
    from oiv4.run.executor import ExecutorSettings
    from oiv4.run.fetch import fetch_set
    from dataclasses import replace
    from oiv4.stages.fetch import FETCH_TRANSFER, FetchSettings, HttpSettings

    root, originals_dir, case = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    originals = {p.name: p.read_bytes() for p in sorted(originals_dir.iterdir())}

    def vm(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    chunk = bytes(range(256)) * 4096

    async def serve(request):
        name = request.match_info["name"]
        if name in originals:
            return web.Response(body=originals[name], content_type="image/jpeg")
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
    for i in range(case["endless"]):
        rows.append({"ImageID": f"{len(rows):016x}", "OriginalURL": f"{base}/endless{i}.jpg"})
    storage = Storage(root)
    write_manifest(storage, "train", rows, shard_rows=len(rows))
    settings = FetchSettings(
        http=HttpSettings(max_bytes=96 << 20, concurrency=case["concurrency"], spool_above=case["spool"]),
        transfer=replace(FETCH_TRANSFER, allow_private_networks=True, attempts=1, deadline_s=300.0),
        cpu_threads=case["threads"], decode_budget_bytes=case["budget"],
    )
    max_pixels = settings.transform.max_pixels
    charge = max(decode_charge(data, open_header(data, max_pixels)) for data in originals.values())
    before = vm("VmRSS")
    fetch_set(storage, "train", settings, ExecutorSettings(kind="thread", workers=1))
    outcomes = sorted(r["outcome"] for r in read_set(storage, "train").to_pylist())
    in_flight = min(case["concurrency"], len(rows))
    print(json.dumps({"outcomes": outcomes, "base": before, "peak": vm("VmHWM"), "budget": case["budget"],
                      "charge": charge, "spool": case["spool"] * in_flight, "inputs": sum(map(len, originals.values()))}))
    """
)

#: (originals, endless bodies, concurrency, decode threads, budget, spool), and the outcomes expected.
CASES = {
    # Four 25 MP PNGs and eight endless bodies in flight together through a 256 MiB budget and an 8 MiB spool.
    "png_giants_and_endless_bodies": (
        {"kind": "png", "endless": 8, "concurrency": 16, "threads": 4, "budget": 256 << 20, "spool": 8 << 20},
        ["ok"] * 4 + ["too_large"] * 8,
    ),
    # A 3.4 MB progressive JPEG declaring 196 MP: the decoder keeps 2 B per coefficient for all three
    # full-size components whatever the output scale, so it is charged 10 B/pixel and runs alone.
    "progressive_196_megapixels": (
        {"kind": "jpeg", "endless": 0, "concurrency": 16, "threads": 4, "budget": 256 << 20, "spool": 8 << 20},
        ["ok"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_worker_stays_within_the_stated_bound(tmp_path: Path, case: str) -> None:
    spec, expected = CASES[case]
    tests = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), *sys.path]), "TMPDIR": str(tmp_path)}
    originals = tmp_path / "originals"
    originals.mkdir()
    made = subprocess.run(
        [sys.executable, "-c", MAKE_ORIGINALS, spec["kind"], str(originals)], capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr[-3000:]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "root"), str(originals), json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert r["outcomes"] == expected, r["outcomes"]
    bound = r["base"] + max(r["budget"], r["charge"]) + r["spool"] + r["inputs"] + (128 << 20)
    print(json.dumps({k: (v >> 20 if isinstance(v, int) else v) for k, v in {**r, "bound": bound}.items()}))
    assert r["peak"] <= bound, {k: (v >> 20 if isinstance(v, int) else v) for k, v in {**r, "bound": bound}.items()}
