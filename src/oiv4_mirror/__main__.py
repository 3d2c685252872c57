"""`python -m oiv4_mirror`: serve a universe from its own process (used by `MirrorProcess`).

Prefer `oiv4 mirror` interactively; this entry point exists so that `MirrorProcess` can pass an exact
`UniverseSpec` as JSON and read the base URL back as one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading

from oiv4_mirror.server import serve_forever, stderr_progress
from oiv4_mirror.universe import Universe, UniverseSpec


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m oiv4_mirror", description=__doc__)
    parser.add_argument("--spec-json", help="a UniverseSpec as JSON (overrides --seed/--images/--megapixels)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--megapixels", type=float, nargs=2, default=(0.5, 2.0))
    parser.add_argument("--cache-dir")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--ready-json", action="store_true", help="print {'base_url': ...} once serving")
    parser.add_argument("--exit-with-parent", action="store_true", help="exit when stdin reaches end of file")
    args = parser.parse_args(argv)
    if args.spec_json:
        spec = UniverseSpec.from_json(args.spec_json)
    else:
        spec = UniverseSpec(seed=args.seed, n_images=args.images, megapixels=tuple(args.megapixels))

    def ready(base_url: str) -> None:
        if args.ready_json:
            print(json.dumps({"base_url": base_url}), flush=True)
        else:
            print(f"serving {base_url}", file=sys.stderr, flush=True)

    if args.exit_with_parent:
        threading.Thread(target=_exit_on_stdin_eof, daemon=True).start()
    serve_forever(
        Universe(spec, args.cache_dir),
        host=args.host,
        port=args.port,
        workers=args.workers,
        on_ready=ready,
        progress=stderr_progress(),
    )


def _exit_on_stdin_eof() -> None:
    sys.stdin.buffer.read()  # returns only when the parent closed the pipe or died
    os._exit(0)


if __name__ == "__main__":
    main()
