"""io.net_guard: requests and redirects never reach loopback/private/reserved addresses, and leak nothing."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from oiv4.contracts.errors import BlockedAddress
from oiv4.contracts.transfer import TransferSettings
from oiv4.io.net_guard import address_class, check_peer, guarded_connector


class FakePublicDns(AbstractResolver):
    """A real resolver for the test: maps one 'public' name to 127.0.0.1, as a hostile DNS answer would."""

    def __init__(self, name: str, address: str = "127.0.0.1") -> None:
        self.name, self.address = name, address

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        if host != self.name:
            raise OSError(f"no such host {host}")
        return [
            {"hostname": host, "host": self.address, "port": port, "family": socket.AF_INET, "proto": 0, "flags": 0}
        ]

    async def close(self) -> None:
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _server(handler, hits: list[str]) -> tuple[web.AppRunner, int]:
    async def counted(request: web.Request) -> web.StreamResponse:
        hits.append(request.path_qs)
        return await handler(request)

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", counted)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


async def _get(url: str, guard: TransferSettings, **connector_kwargs) -> str:
    timeout = aiohttp.ClientTimeout(total=5)
    connector = guarded_connector(guard, **connector_kwargs)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as s, s.get(url) as resp:
        return f"{resp.status} {await resp.text()}"


async def _ok(_: web.Request) -> web.Response:
    return web.Response(text="secret")


def test_a_direct_request_to_loopback_is_refused_with_the_same_reason_whether_the_port_is_open_or_closed():
    async def scenario() -> tuple[str, str, list[str]]:
        hits: list[str] = []
        runner, port = await _server(_ok, hits)
        try:
            reasons = []
            for p in (port, _free_port()):
                with pytest.raises(BlockedAddress) as err:
                    await _get(f"http://127.0.0.1:{p}/admin", TransferSettings())
                reasons.append(str(err.value))
            return reasons[0], reasons[1], hits
        finally:
            await runner.cleanup()

    open_reason, closed_reason, hits = asyncio.run(scenario())
    assert open_reason == closed_reason
    assert "loopback" in open_reason and hits == []


def test_redirects_from_an_allowed_server_to_internal_addresses_are_refused_and_never_reach_them():
    async def scenario() -> tuple[dict[str, str], list[str]]:
        inner_hits: list[str] = []
        inner, inner_port = await _server(_ok, inner_hits)
        closed = _free_port()
        targets = {
            "loopback open": f"http://127.0.0.1:{inner_port}/",
            "loopback closed": f"http://127.0.0.1:{closed}/",
            "ipv6 loopback": f"http://[::1]:{inner_port}/",
            "ipv4-mapped loopback": f"http://[::ffff:127.0.0.1]:{inner_port}/",
            "cloud metadata": "http://169.254.169.254/latest/meta-data/",
            "private": "http://10.1.2.3/",
        }

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPFound(targets[request.query["to"]])

        outer, outer_port = await _server(redirect, [])
        guard = TransferSettings(allowed_endpoints=frozenset({("127.0.0.1", outer_port)}))
        reasons = {}
        try:
            for name in targets:
                with pytest.raises(BlockedAddress) as err:
                    await _get(f"http://127.0.0.1:{outer_port}/photo.jpg?to={name}", guard)
                reasons[name] = str(err.value)
        finally:
            await outer.cleanup()
            await inner.cleanup()
        return reasons, inner_hits

    reasons, inner_hits = asyncio.run(scenario())
    assert inner_hits == []
    assert reasons["loopback open"] == reasons["loopback closed"]
    assert "link-local" in reasons["cloud metadata"] and "private" in reasons["private"]
    assert "loopback" in reasons["ipv6 loopback"] and "loopback" in reasons["ipv4-mapped loopback"]


def test_a_public_hostname_that_resolves_to_loopback_is_refused_before_connecting():
    async def scenario() -> tuple[list[str], list[str]]:
        hits: list[str] = []
        runner, port = await _server(_ok, hits)
        reasons = []
        try:
            for p in (port, _free_port()):
                with pytest.raises(BlockedAddress) as err:
                    await _get(
                        f"http://farm1.staticflickr.example:{p}/x.jpg",
                        TransferSettings(),
                        resolver=FakePublicDns("farm1.staticflickr.example"),
                    )
                reasons.append(str(err.value))
        finally:
            await runner.cleanup()
        return reasons, hits

    reasons, hits = asyncio.run(scenario())
    assert reasons[0] == reasons[1] and "farm1.staticflickr.example" in reasons[0] and "127.0.0.1" in reasons[0]
    assert hits == []


def test_allow_private_networks_lets_a_private_mirror_through():
    async def scenario() -> str:
        runner, port = await _server(_ok, [])
        try:
            return await _get(f"http://127.0.0.1:{port}/", TransferSettings(allow_private_networks=True))
        finally:
            await runner.cleanup()

    assert asyncio.run(scenario()) == "200 secret"


def test_an_allowed_endpoint_admits_exactly_that_port():
    async def scenario() -> tuple[str, str]:
        runner, port = await _server(_ok, [])
        try:
            guard = TransferSettings(allowed_endpoints=frozenset({("127.0.0.1", port)}))
            ok = await _get(f"http://127.0.0.1:{port}/", guard)
            with pytest.raises(BlockedAddress) as err:
                await _get(f"http://127.0.0.1:{_free_port()}/", guard)
            return ok, str(err.value)
        finally:
            await runner.cleanup()

    ok, refused = asyncio.run(scenario())
    assert ok == "200 secret" and "loopback" in refused


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:10.0.0.1",
        "64:ff9b::7f00:1",
        "2002:7f00:1::",
    ],
)
def test_internal_and_reserved_addresses_are_blocked(address):
    assert address_class(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address):
    assert address_class(ipaddress.ip_address(address)) is None


def test_the_after_connect_check_refuses_a_socket_whose_real_peer_is_loopback():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            peer = client.getpeername()
            with pytest.raises(BlockedAddress, match=r"loopback address 127\.0\.0\.1"):
                check_peer("photos.example.com", peer, TransferSettings())
            check_peer("mirror", peer, TransferSettings(allowed_endpoints=frozenset({("127.0.0.1", port)})))
            check_peer("mirror", peer, TransferSettings(allow_private_networks=True))
    with pytest.raises(BlockedAddress, match="unverifiable"):
        check_peer("photos.example.com", None, TransferSettings())
