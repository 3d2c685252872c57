"""Peak RSS of one worker transforming N giant PNGs at once, with and without the decode budget.

    PYTHONPATH=src .venv/bin/python benchmarks/decode_budget.py [--mp 100 --n 4 --budget-mb 1024]
Each measurement runs in a fresh process (ru_maxrss is a high-water mark).
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor


def child(mp: float, n: int, budget_mb: int) -> None:
    from PIL import Image

    from oiv4.io.memory_budget import MemoryBudget
    from oiv4.stages.fetch.settings import TransformSettings
    from oiv4.stages.fetch.transform import transform_image

    side = int((mp * 1e6) ** 0.5)
    buf = io.BytesIO()
    Image.new("RGBA", (side, side), (10, 200, 30, 128)).save(buf, "PNG", compress_level=1)
    data = buf.getvalue()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    budget = MemoryBudget(budget_mb << 20) if budget_mb else None
    with ThreadPoolExecutor(n) as pool:
        list(pool.map(lambda _: transform_image(data, 0.0, TransformSettings(), budget=budget), range(n)))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {"base_mb": base / 1024, "peak_mb": peak / 1024, "budget_peak_mb": (budget.peak >> 20) if budget else None}
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mp", type=float, default=100)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--budget-mb", type=int, default=1024)
    ap.add_argument("--child", type=int, default=None)
    args = ap.parse_args()
    if args.child is not None:
        child(args.mp, args.n, args.child)
        return
    for budget in (0, args.budget_mb):
        out = subprocess.run(
            [sys.executable, __file__, "--mp", str(args.mp), "--n", str(args.n), "--child", str(budget)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        r = json.loads(out.stdout)
        name = f"budget {budget} MiB" if budget else "no budget"
        print(f"{args.n} x {args.mp:.0f} MP RGBA PNG at once, {name}: peak RSS {r['peak_mb']:.0f} MB "
              f"(before decoding {r['base_mb']:.0f} MB; budget peak {r['budget_peak_mb']})")  # fmt: skip


if __name__ == "__main__":
    main()
