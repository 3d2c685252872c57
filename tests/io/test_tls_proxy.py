"""Real networks: every transfer speaks TLS with verification on, and goes through HTTP(S)_PROXY unless NO_PROXY."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import threading
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from oiv4.contracts.errors import DownloadError
from oiv4.contracts.transfer import TransferSettings
from oiv4.io.storage import Storage
from oiv4.run.archives import build_archive_set
from oiv4.stages.archives import ArchiveSettings
from oiv4.stages.fetch import FETCH_TRANSFER
from oiv4.stages.fetch.http import HttpClient
from oiv4.stages.metadata import MetadataSettings, fetch_metadata
from oiv4.stages.plan import PlanSettings, build_plan
from oiv4_mirror import UniverseSpec, start_mirror
from oiv4_mirror.tls import TestCA

SPEC = UniverseSpec(
    seed=7,
    n_images=40,
    megapixels=(0.05, 0.2),
    misbehaviour_fraction=0.0,
    special_kind_fraction=0.0,
    archive_missing_fraction=0.0,
)
_PROXY_VARS = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
)


class ForwardProxy:
    """A tiny real forward proxy on 127.0.0.1: absolute-URI requests (plain http) and CONNECT tunnels (https).

    One request per client connection (it asks upstream for `Connection: close`); `seen` lists what it was
    asked, e.g. "CONNECT 127.0.0.1:4431" or "GET http://127.0.0.1:8080/x".
    """

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        assert started.wait(10)
        self.url = f"http://127.0.0.1:{self.port}"

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        started.set()
        self._loop.run_forever()
        self._server.close()
        self._loop.run_until_complete(self._server.wait_closed())
        self._loop.close()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method, target, _version = head[0].split(" ", 2)
            self.seen.append(f"{method} {target}")
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
            else:
                url = urlsplit(target)
                up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port or 80)
                path = url.path + (f"?{url.query}" if url.query else "")
                headers = [h for h in head[1:] if h and not h.lower().startswith(("proxy-", "connection:"))]
                up_writer.write(
                    "\r\n".join([f"{method} {path} HTTP/1.1", *headers, "Connection: close", "", ""]).encode("latin-1")
                )
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while chunk := await src.read(1 << 16):
                dst.write(chunk)
                await dst.drain()
        except OSError:
            pass
        finally:
            if dst.can_write_eof():
                with contextlib.suppress(OSError):
                    dst.write_eof()


@pytest.fixture(scope="module")
def tls_mirror(tmp_path_factory):
    """(mirror over https, PEM of its CA, PEM of another CA that did not sign it)."""
    folder = tmp_path_factory.mktemp("tls")
    ca, other = TestCA(), TestCA("someone else's CA")
    with start_mirror(SPEC, cache_dir=folder / "cache", ssl_context=ca.server_context()) as mirror:
        yield mirror, str(ca.write_pem(folder / "ca.pem")), str(other.write_pem(folder / "other.pem"))


@pytest.fixture
def no_proxy_env(monkeypatch):
    for var in _PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    return monkeypatch


def _every_transfer(root: Path, mirror, ca_bundle: str | None) -> tuple[dict, object, str]:
    """metadata -> plan -> validation archives -> one original fetched, all over https with `ca_bundle`."""
    storage = Storage(str(root))
    download = TransferSettings(allow_private_networks=True, ca_bundle=ca_bundle)
    sizes = fetch_metadata(storage, MetadataSettings(base_url=mirror.metadata_base_url, transfer=download))
    build_plan(storage, PlanSettings(train_size=10, shard_rows=16))
    archives = ArchiveSettings(
        source=mirror.archives_base_url,
        transfer=TransferSettings(allow_private_networks=True, ca_bundle=ca_bundle, part_size=64 << 10),
    )
    summary = build_archive_set(storage, "validation", archives)
    with open(next((root / "metadata").glob("*.csv")), newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r.get("OriginalURL"))
    assert row["OriginalURL"].startswith("https://")

    async def fetch() -> str:
        http = replace(FETCH_TRANSFER, allow_private_networks=True, ca_bundle=ca_bundle, attempts=1, deadline_s=10.0)
        async with HttpClient(http) as client:
            got = await client.fetch(row["OriginalURL"], int(row["OriginalSize"]))
            return got.outcome if got.ok else f"{got.outcome}: {got.reason}"

    return sizes, summary, asyncio.run(fetch())


def test_metadata_archives_and_fetch_work_over_tls_with_the_test_ca_as_ca_bundle(tmp_path, tls_mirror, no_proxy_env):
    mirror, ca_pem, _ = tls_mirror
    sizes, summary, fetched = _every_transfer(tmp_path, mirror, ca_pem)
    assert sizes and all(sizes.values())
    assert summary.ok, summary
    assert fetched == "ok"


def test_ssl_cert_file_is_honoured_like_a_ca_bundle(tmp_path, tls_mirror, no_proxy_env):
    mirror, ca_pem, _ = tls_mirror
    no_proxy_env.setenv("SSL_CERT_FILE", ca_pem)
    _sizes, summary, fetched = _every_transfer(tmp_path, mirror, None)
    assert summary.ok and fetched == "ok"


def test_a_certificate_from_another_ca_is_refused_with_a_clear_reason(tmp_path, tls_mirror, no_proxy_env):
    mirror, _, other_pem = tls_mirror
    storage = Storage(str(tmp_path))
    download = TransferSettings(allow_private_networks=True, ca_bundle=other_pem)
    with pytest.raises(DownloadError, match=r"TLS certificate not trusted .*--ca-bundle") as err:
        fetch_metadata(storage, MetadataSettings(base_url=mirror.metadata_base_url, transfer=download))
    assert err.value.attempts == 1  # a wrong certificate is not retried
    assert "\n" not in str(err.value)

    async def fetch() -> tuple[str, str]:
        http = replace(FETCH_TRANSFER, allow_private_networks=True, ca_bundle=other_pem, attempts=3, deadline_s=10.0)
        async with HttpClient(http) as client:
            got = await client.fetch(mirror.archives_base_url + "validation.tar.gz")
            return got.outcome, got.reason

    outcome, reason = asyncio.run(fetch())
    assert outcome == "connection_error" and reason.startswith("TLS certificate not trusted"), reason


def test_every_transfer_goes_through_the_proxy_and_no_proxy_bypasses_it(tmp_path, tls_mirror, no_proxy_env):
    mirror, ca_pem, _ = tls_mirror
    proxy = ForwardProxy()
    try:
        no_proxy_env.setenv("HTTPS_PROXY", proxy.url)
        no_proxy_env.setenv("HTTP_PROXY", proxy.url)
        _sizes, summary, fetched = _every_transfer(tmp_path / "proxied", mirror, ca_pem)
        assert summary.ok and fetched == "ok"
        target = urlsplit(mirror.base_url).netloc
        tunnels = [s for s in proxy.seen if s == f"CONNECT {target}"]
        assert len(tunnels) >= 3, proxy.seen  # metadata, archives and the fetch each opened at least one

        before = len(proxy.seen)
        no_proxy_env.setenv("NO_PROXY", "127.0.0.1")
        _sizes, summary, fetched = _every_transfer(tmp_path / "direct", mirror, ca_pem)
        assert summary.ok and fetched == "ok"
        assert len(proxy.seen) == before  # bypassed
    finally:
        proxy.stop()


def test_through_a_proxy_the_guard_checks_the_target_and_trusts_the_proxy_hop(no_proxy_env):
    """The proxy listens on 127.0.0.1 (allowed: the user configured it); a loopback *target* is still refused,
    before the proxy is asked anything, for plain http (absolute URI) and https (CONNECT) alike."""
    proxy = ForwardProxy()
    try:
        no_proxy_env.setenv("HTTPS_PROXY", proxy.url)
        no_proxy_env.setenv("HTTP_PROXY", proxy.url)

        async def fetch(url: str) -> str:
            async with HttpClient(replace(FETCH_TRANSFER, attempts=1, deadline_s=5.0)) as client:
                return (await client.fetch(url)).outcome

        assert asyncio.run(fetch("http://127.0.0.1:9/a.jpg")) == "blocked_address"
        assert asyncio.run(fetch("https://[::1]:9/a.jpg")) == "blocked_address"
        assert proxy.seen == []
    finally:
        proxy.stop()


def test_a_plain_http_fetch_goes_through_http_proxy_as_an_absolute_uri(tmp_path, no_proxy_env):
    proxy = ForwardProxy()
    try:
        with start_mirror(SPEC, cache_dir=tmp_path / "cache") as mirror:
            no_proxy_env.setenv("HTTP_PROXY", proxy.url)
            url = mirror.archives_base_url + "validation.tar.gz"

            async def fetch() -> str:
                http = replace(FETCH_TRANSFER, allow_private_networks=True, attempts=1, deadline_s=10.0)
                async with HttpClient(http) as client:
                    return (await client.fetch(url)).outcome

            assert asyncio.run(fetch()) == "ok"
        assert proxy.seen == [f"GET {url}"]
    finally:
        proxy.stop()
