"""A network guard for aiohttp: no request and no redirect may reach loopback, private or reserved addresses.

Why: OriginalURL comes from a CSV anyone can craft. Unguarded, redirects were followed to 127.0.0.1, [::1] and
169.254.169.254 (cloud metadata), and connection errors to 127.0.0.1:22 landed in the ledger -- a port scanner
driven by a CSV. The guard decides on the *address*, never the hostname, so DNS tricks (a public name that
resolves to 127.0.0.1, DNS rebinding between lookups) are caught too.

How (aiohttp 3.14, `GuardedConnector`, a `TCPConnector` subclass):
1. `_resolve_host` is the one place every connection attempt passes through after DNS: IP literals (including
   every hop of a redirect chain), hostnames through any resolver, and aiohttp's DNS cache. Blocked addresses are
   dropped there, *before* any connect, and if none is left the request fails with `BlockedAddress`. Because no
   connection is ever attempted, an open and a closed port give the same reason: the guard leaks nothing.
2. After connecting, the socket's actual peer address is checked again (defence in depth: a resolver that
   changed its answer, a future aiohttp code path that bypasses `_resolve_host`).
Through a proxy (HTTP(S)_PROXY, honoured by every oiv4 session): the proxy is a hop the user configured, so
the connection *to the proxy* is trusted, whatever its address (a proxy on 127.0.0.1 is common); the peer
check would only ever see the proxy. The guard checks the *target* instead, before asking the proxy: an IP
literal by its class, a hostname by resolving it here -- refused if any of its addresses is blocked (we
cannot choose which one the proxy will use). Residual risk, documented: the proxy resolves the name again
itself, so a DNS answer that changes between our lookup and the proxy's (rebinding), or a name only the
proxy can resolve (split-horizon DNS: then we let it through, or proxy-only networks could fetch nothing),
can still reach what the proxy can reach. Restrict internal destinations on the proxy itself.

Blocked: anything that is not globally routable by `ipaddress` (loopback, RFC 1918 private, link-local,
unique-local, shared 100.64/10, documentation, reserved, unspecified), multicast, and IPv4-mapped / NAT64 /
6to4 IPv6 forms of those. `allow_private_networks=True` lets private mirrors through (everything but the
unspecified address); `allowed_endpoints` admits exact (ip, port) pairs, e.g. a mirror on 127.0.0.1 in tests.
"""

from __future__ import annotations

import contextvars
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.abc import ResolveResult

from oiv4.contracts.errors import SourceError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
#: Set while the connector connects to a configured proxy: that one hop is trusted (see the module docstring).
_TO_PROXY: contextvars.ContextVar[bool] = contextvars.ContextVar("oiv4_net_guard_to_proxy", default=False)


class BlockedAddress(aiohttp.ClientError, SourceError):
    """A URL (or a redirect) leads to an address the guard refuses; ledger outcome `blocked_address`.

    The reason names the host and the address class only: it is the same whether anything listens there or not.
    """

    def __init__(self, host: str, address: str, why: str) -> None:
        self.host, self.address, self.why = host, address, why
        super().__init__(
            f"refused {host}: it resolves to {why} address {address} "
            "(only public addresses are fetched; --allow-private-networks admits a private mirror)"
        )


@dataclass(frozen=True)
class GuardSettings:
    """What the guard lets through besides public addresses."""

    allow_private_networks: bool = False
    #: Exact (ip, port) pairs always allowed, e.g. {("127.0.0.1", 8080)} for a local mirror in tests.
    allowed_endpoints: frozenset[tuple[str, int]] = field(default_factory=frozenset)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def address_class(ip: IPAddress) -> str | None:
    """None for a public unicast address; otherwise the word for why it is blocked ("loopback", ...)."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return address_class(embedded)
    for attr, word in (
        ("is_unspecified", "an unspecified"),
        ("is_loopback", "a loopback"),
        ("is_link_local", "a link-local"),
        ("is_multicast", "a multicast"),
        ("is_private", "a private"),
        ("is_reserved", "a reserved"),
    ):
        if getattr(ip, attr):
            return word
    return None if ip.is_global else "a non-global"


def refusal(ip_text: str, port: int, settings: GuardSettings) -> str | None:
    """None when the guard allows connecting to (ip, port); otherwise why not."""
    ip = ipaddress.ip_address(ip_text.split("%", 1)[0])  # drop an IPv6 zone id ("fe80::1%eth0")
    if (str(ip), port) in settings.allowed_endpoints:
        return None
    why = address_class(ip)
    if why is None or (settings.allow_private_networks and why != "an unspecified"):
        return None
    return why


class GuardedConnector(aiohttp.TCPConnector):
    """A TCPConnector that never connects to a blocked address (see the module docstring for how)."""

    def __init__(self, *args: Any, guard: GuardSettings | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard or GuardSettings()

    async def _resolve_host(self, host: str, port: int, traces: Sequence[Any] | None = None) -> list[ResolveResult]:
        resolved = await super()._resolve_host(host, port, traces=traces)
        if _TO_PROXY.get():
            return resolved
        allowed, first_refusal = [], None
        for entry in resolved:
            why = refusal(entry["host"], entry["port"] or port, self.guard)
            if why is None:
                allowed.append(entry)
            elif first_refusal is None:
                first_refusal = BlockedAddress(host, entry["host"], why)
        if not allowed:
            raise first_refusal or BlockedAddress(host, "(none)", "no")
        return allowed

    async def _create_proxy_connection(self, req: aiohttp.ClientRequest, traces: list[Any], timeout: Any) -> Any:
        await self._check_target(req.url.host or "", req.url.port or 0)
        token = _TO_PROXY.set(True)
        try:
            return await super()._create_proxy_connection(req, traces, timeout)
        finally:
            _TO_PROXY.reset(token)

    async def _check_target(self, host: str, port: int) -> None:
        """Through a proxy: refuse a target whose address (literal, or any it resolves to here) is blocked."""
        try:
            ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
            addresses = [host.strip("[]")]
        except ValueError:
            try:
                resolved = await super()._resolve_host(host, port)
            except (OSError, aiohttp.ClientError):
                return  # only the proxy can resolve it: the documented residual risk
            addresses = [entry["host"] for entry in resolved]
        for address in addresses:
            why = refusal(address, port, self.guard)
            if why is not None:
                raise BlockedAddress(host, address, why)

    async def _create_connection(self, req: aiohttp.ClientRequest, traces: list[Any], timeout: Any) -> Any:
        proto = await super()._create_connection(req, traces, timeout)
        if req.proxy is not None:  # the peer is the proxy, trusted; the target was checked before connecting
            return proto
        transport = proto.transport
        try:
            check_peer(req.url.host or "?", transport.get_extra_info("peername") if transport else None, self.guard)
        except BlockedAddress:
            proto.close()
            raise
        return proto


def check_peer(host: str, peername: Any, guard: GuardSettings) -> None:
    """Raise BlockedAddress unless `peername` (a socket's `getpeername()`) is an address the guard allows."""
    if not peername:
        raise BlockedAddress(host, "(unknown)", "an unverifiable")
    why = refusal(peername[0], peername[1], guard)
    if why is not None:
        raise BlockedAddress(host, peername[0], why)


def guarded_connector(guard: GuardSettings | None = None, **kwargs: Any) -> GuardedConnector:
    """A `GuardedConnector`; kwargs go to `aiohttp.TCPConnector` (limit, limit_per_host, resolver, ...)."""
    kwargs.setdefault("family", socket.AF_UNSPEC)
    return GuardedConnector(guard=guard, **kwargs)
