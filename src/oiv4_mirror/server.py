"""Running the mirror: in a background thread of this process (`start_mirror`), in its own process
(`MirrorProcess`, for benchmarks) or in the foreground until Ctrl-C (`serve_forever`). What it serves is in
`oiv4_mirror.routes`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable

from aiohttp import web

from oiv4.contracts.errors import ExecutionError
from oiv4_mirror.routes import make_app
from oiv4_mirror.universe import (
    ARCHIVE_PREFIX,
    METADATA_PREFIX,
    ProgressFn,
    Universe,
    UniverseSpec,
)


class MirrorHandle:
    """A running mirror: URLs to give the code under test, the universe to check it against, `stop()`."""

    base_url: str
    universe: Universe

    @property
    def metadata_base_url(self) -> str:
        """Where the two CSVs live, like `https://storage.googleapis.com/openimages/2018_04/`."""
        return f"{self.base_url}{METADATA_PREFIX}/"

    @property
    def archives_base_url(self) -> str:
        """The `tar/` folder, like `https://open-images-dataset.s3.amazonaws.com/tar/`."""
        return f"{self.base_url}{ARCHIVE_PREFIX}/"

    def stop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> MirrorHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ThreadMirror(MirrorHandle):
    """The server on its own event loop in a daemon thread of this process (tests, demo)."""

    def __init__(
        self, universe: Universe, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.universe = universe
        self._host = host
        self._ssl = ssl_context  # HTTPS when set (oiv4_mirror.tls.TestCA().server_context())
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._port = 0
        self._thread = threading.Thread(target=self._run, args=(port,), name="oiv4-mirror", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        scheme = "https" if ssl_context is not None else "http"
        self.base_url = f"{scheme}://{_url_host(host)}:{self._port}"

    def _run(self, port: int) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(make_app(self.universe), access_log=None, handle_signals=False)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self._host, port, backlog=1024, ssl_context=self._ssl)
            loop.run_until_complete(site.start())
            self._port = runner.addresses[0][1]
        except BaseException as exc:  # e.g. port in use: re-raised in the caller's thread
            self._error = exc
            self._ready.set()
            loop.run_until_complete(runner.cleanup())
            loop.close()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    def stop(self) -> None:
        """Stop serving and join the thread. Idempotent."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def start_mirror(
    spec: UniverseSpec | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    prepare: bool = True,
    ssl_context: ssl.SSLContext | None = None,
) -> MirrorHandle:
    """Serve the universe of `spec` from a background thread; use as a context manager or call `.stop()`.

    With `prepare` (default) every original is rendered first, so the CSVs are ready; archives, thumbnails
    and CVDF images are made on first request and cached. `ssl_context` serves HTTPS (`oiv4_mirror.tls`).

    >>> with start_mirror(UniverseSpec(seed=1, n_images=50)) as mirror:
    ...     csv_url = mirror.metadata_base_url + "image_ids_and_rotation.csv"
    """
    universe = Universe(spec or UniverseSpec(), cache_dir)
    if prepare:
        universe.ensure_originals()
    return ThreadMirror(universe, host, port, ssl_context)


class MirrorProcess(MirrorHandle):
    """The server in a separate Python process (`python -m oiv4_mirror`), so it does not share the
    client's GIL: for benchmarks. Everything (originals, archives) is generated before it serves.

    The process and this object share the disk cache, so `.universe` here answers from the same bytes.
    """

    def __init__(
        self,
        spec: UniverseSpec | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cache_dir: str | os.PathLike[str] | None = None,
        workers: int | None = None,
    ) -> None:
        spec = spec or UniverseSpec()
        universe = Universe(spec, cache_dir)
        cmd = [
            sys.executable, "-m", "oiv4_mirror",
            "--spec-json", spec.to_json(), "--cache-dir", str(universe.cache_dir),
            "--host", host, "--port", str(port), "--ready-json", "--exit-with-parent",
        ]  # fmt: skip
        if workers:
            cmd += ["--workers", str(workers)]
        # stdin is a pipe only the child reads: when this process dies, the pipe closes and the child exits,
        # so a crashed benchmark never leaves a server behind.
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            code = self._proc.wait()
            raise ExecutionError(f"mirror process exited with code {code} before serving (see its stderr)")
        self.base_url = json.loads(line)["base_url"]
        self.pid = self._proc.pid
        # Constructed after the child finished generating, so it picks up the child's index.json.
        self.universe = Universe(spec, universe.cache_dir)

    def stop(self) -> None:
        """Terminate the server process (SIGTERM, then SIGKILL after 10 s). Idempotent."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                pipe.close()


def stderr_progress(every_percent: int = 10) -> ProgressFn:
    """A progress callback printing one line to stderr each `every_percent` of a stage (thread-safe)."""
    lock = threading.Lock()
    shown: dict[str, int] = {}

    def report(stage: str, done: int, total: int) -> None:
        step = done * 100 // max(1, total) // every_percent
        with lock:
            if shown.get(stage, -1) >= step:
                return
            shown[stage] = step
        print(f"mirror: {stage} {done:,}/{total:,}", file=sys.stderr, flush=True)

    return report


def serve_forever(
    universe: Universe,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    workers: int | None = None,
    on_ready: Callable[[str], None] | None = None,
    progress: ProgressFn | None = None,
) -> None:
    """Generate everything, then serve on this thread until interrupted (Ctrl-C / SIGTERM)."""
    universe.prepare(archives=True, workers=workers, progress=progress)

    async def main() -> None:
        runner = web.AppRunner(make_app(universe), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
        if on_ready is not None:
            on_ready(f"http://{_url_host(host)}:{runner.addresses[0][1]}")
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
