"""Through a proxy the network guard judges the target by the same rules as without one.

A real forwarding proxy on 127.0.0.1 (tests/io/test_tls_proxy.py) would happily forward any target to an internal
service; every spelling of a loopback address that the OS resolver accepts (decimal, short, octal, "0", a
trailing dot) must be refused as `blocked_address` before the proxy is asked, and the service must see nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from test_net_guard_fetch import _internal_service_in_a_thread
from test_tls_proxy import _PROXY_VARS, ForwardProxy

from oiv4.contracts.transfer import TransferSettings
from oiv4.io.net_guard import target_refusal
from oiv4.stages.fetch import FETCH_TRANSFER
from oiv4.stages.fetch.http import HttpClient

#: Spellings of 127.0.0.1 (or "this host") that aiohttp calls "not a canonical IPv4 address" but the OS accepts.
SPELLINGS = ["2130706433", "127.1", "0177.0.0.1", "0", "0x7f.0.0.1", "localhost.", "localhost", "LOCALHOST."]


@pytest.fixture
def proxied(monkeypatch: pytest.MonkeyPatch):
    """(proxy, port of an internal service on 127.0.0.1, the paths the service was asked for)."""
    for var in _PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    port, stop, thread = _internal_service_in_a_thread()
    proxy = ForwardProxy()
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    try:
        yield proxy, port
    finally:
        proxy.stop()
        stop.set()
        thread.join(10)


def _fetch(urls: list[str], **transfer: object) -> list[tuple[str, str]]:
    async def run() -> list[tuple[str, str]]:
        settings = replace(FETCH_TRANSFER, attempts=1, deadline_s=5.0, **transfer)  # type: ignore[arg-type]
        async with HttpClient(settings) as client:
            return [((got := await client.fetch(u)).outcome, got.reason) for u in urls]

    return asyncio.run(run())


@pytest.mark.parametrize("host", SPELLINGS)
def test_a_loopback_spelling_through_a_proxy_is_blocked_and_never_forwarded(proxied, host: str) -> None:
    proxy, port = proxied
    for scheme in ("http", "https"):
        [(outcome, reason)] = _fetch([f"{scheme}://{host}:{port}/secret"])
        assert outcome == "blocked_address", (scheme, host, outcome, reason)
        assert "internal" not in reason and "200" not in reason, reason
    assert proxy.seen == [], proxy.seen  # refused before the proxy was asked


def test_a_public_looking_name_nobody_can_resolve_is_refused_through_a_proxy(proxied) -> None:
    """The guard cannot prove where an unresolvable name leads (the proxy may resolve it internally): refused."""
    proxy, port = proxied
    [(outcome, reason)] = _fetch([f"http://no-such-host.invalid:{port}/x"])
    assert outcome == "blocked_address" and "unresolvable" in reason, reason
    assert proxy.seen == []


def test_the_proxy_still_carries_an_allowed_target(proxied) -> None:
    """The check is not a blanket refusal: with --allow-private-networks the same spelling goes through the proxy."""
    proxy, port = proxied
    [(outcome, reason)] = _fetch([f"http://127.1:{port}/ok"], allow_private_networks=True)
    assert outcome == "ok", reason
    assert proxy.seen == [f"GET http://127.1:{port}/ok"]


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("0x7f.1", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("localhost.", "127.0.0.1"),
        ("a.localhost", "127.0.0.1"),
    ],
)
def test_numeric_and_local_spellings_are_read_as_the_os_resolver_reads_them(host: str, address: str) -> None:
    why = asyncio.run(target_refusal(host, 80, TransferSettings()))
    assert why is not None and address in why[0], (host, why)


def test_a_public_address_spelled_numerically_is_allowed() -> None:
    assert asyncio.run(target_refusal("134744072", 80, TransferSettings())) is None  # 8.8.8.8
