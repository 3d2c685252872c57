"""moto's standalone S3 server on 127.0.0.1: the one place a test starts it (conftest's fixtures use it too)."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def moto_s3() -> Iterator[str]:
    """A fresh moto S3 server (a real HTTP server, state of its own) on a free port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer  # moto is a dev dependency: imported only by tests that need S3

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    # moto keeps its buckets in module-level state that every server of this process shares: without a
    # reset, an earlier test's upload (say train_1.tar.gz) shows through in the next test's "fresh" server.
    urllib.request.urlopen(urllib.request.Request(f"http://{host}:{port}/moto-api/reset", method="POST")).close()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
