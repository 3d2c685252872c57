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
check would only ever see the proxy. The guard judges the *target* instead, before asking the proxy, by the
same rules as without one (`target_refusal`): an IP literal in any spelling the OS resolver accepts (decimal
`2130706433`, short `127.1`, octal `0177.0.0.1`, hex, `0`; read with `inet_aton`, as the proxy would) by its
class; `localhost` and `*.localhost` (trailing dot or not) as loopback; any other name by resolving it here --
refused if any of its addresses is blocked (we cannot choose which one the proxy will use), and refused if it
does not resolve here (the guard cannot prove where the proxy would send it). Residual risk, documented: the
proxy resolves the name again itself, so a DNS answer that changes between our lookup and the proxy's
(rebinding) can still reach what the proxy can reach. Restrict internal destinations on the proxy itself.

Blocked: anything that is not globally routable by `ipaddress` (loopback, RFC 1918 private, link-local,
unique-local, shared 100.64/10, documentation, reserved, unspecified), multicast, and IPv4-mapped / NAT64 /
6to4 IPv6 forms of those. `allow_private_networks=True` lets private mirrors through (everything but the
unspecified address); `allowed_endpoints` admits exact (ip, port) pairs, e.g. a mirror on 127.0.0.1 in tests.
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
from aiohttp.abc import ResolveResult

from oiv4.contracts.errors import UNRESOLVED, BlockedAddress
from oiv4.contracts.transfer import TransferSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
#: Set while the connector connects to a configured proxy: that one hop is trusted (see the module docstring).
_TO_PROXY: contextvars.ContextVar[bool] = contextvars.ContextVar("oiv4_net_guard_to_proxy", default=False)


class _Refused(BlockedAddress, aiohttp.ClientError):
    """The `BlockedAddress` the guard raises: also an `aiohttp.ClientError`, so aiohttp's connector passes it on.

    Private because callers catch `BlockedAddress` (contracts does not import aiohttp).
    """


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


def refusal(ip_text: str, port: int, settings: TransferSettings) -> str | None:
    """None when the guard allows connecting to (ip, port); otherwise why not."""
    ip = ipaddress.ip_address(ip_text.split("%", 1)[0])  # drop an IPv6 zone id ("fe80::1%eth0")
    if (str(ip), port) in settings.allowed_endpoints:
        return None
    why = address_class(ip)
    if why is None or (settings.allow_private_networks and why != "an unspecified"):
        return None
    return why


_NUMERIC_V4 = re.compile(r"[0-9a-fA-FxX.]+")


def literal_address(host: str) -> IPAddress | None:
    """The address an IP literal stands for, read as the OS resolver reads it (`inet_aton`: `2130706433`,
    `127.1`, `0177.0.0.1`, `0x7f.1`, `0` are all IPv4 literals), or None for a name."""
    text = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if _NUMERIC_V4.fullmatch(text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


Resolve = Callable[[str, int], Awaitable[list[str]]]


async def _os_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def target_refusal(
    host: str, port: int, guard: TransferSettings, resolve: Resolve | None = None
) -> tuple[str, str] | None:
    """None when a target may be fetched through a proxy; else (the address, why it is refused).

    Anything the guard cannot prove public is refused: a name that does not resolve here is
    (UNRESOLVED, "an unresolvable"). `resolve` (default: the OS resolver) maps a name to its addresses.
    """
    name = host.strip().rstrip(".").lower()
    ip = literal_address(name)
    if ip is None and (name == "localhost" or name.endswith(".localhost")):
        ip = ipaddress.IPv4Address("127.0.0.1")  # RFC 6761: always loopback, whatever a resolver says
    if ip is not None:
        addresses = [str(ip)]
    else:
        try:
            addresses = await (resolve or _os_resolve)(host, port)
        except (OSError, aiohttp.ClientError, UnicodeError):
            addresses = []
        if not addresses:
            return UNRESOLVED, "an unresolvable"
    for address in addresses:
        why = refusal(address, port, guard)
        if why is not None:
            return str(literal_address(address) or address), why
    return None


class GuardedConnector(aiohttp.TCPConnector):
    """A TCPConnector that never connects to a blocked address (see the module docstring for how)."""

    def __init__(self, *args: Any, guard: TransferSettings | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard or TransferSettings()

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
                first_refusal = _Refused(host, entry["host"], why)
        if not allowed:
            raise first_refusal or _Refused(host, "(none)", "no")
        return allowed

    async def _create_proxy_connection(self, req: aiohttp.ClientRequest, traces: list[Any], timeout: Any) -> Any:
        await self._check_target(req.url.host or "", req.url.port or 0)
        token = _TO_PROXY.set(True)
        try:
            return await super()._create_proxy_connection(req, traces, timeout)
        finally:
            _TO_PROXY.reset(token)

    async def _check_target(self, host: str, port: int) -> None:
        """Through a proxy: refuse a target the guard cannot prove public (`target_refusal`)."""

        async def resolve(name: str, at: int) -> list[str]:
            return [entry["host"] for entry in await super(GuardedConnector, self)._resolve_host(name, at)]

        refused = await target_refusal(host, port, self.guard, resolve)
        if refused is not None:
            raise _Refused(host, *refused)

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


def check_peer(host: str, peername: Any, guard: TransferSettings) -> None:
    """Raise BlockedAddress unless `peername` (a socket's `getpeername()`) is an address the guard allows."""
    if not peername:
        raise _Refused(host, "(unknown)", "an unverifiable")
    why = refusal(peername[0], peername[1], guard)
    if why is not None:
        raise _Refused(host, peername[0], why)


def guarded_connector(guard: TransferSettings | None = None, **kwargs: Any) -> GuardedConnector:
    """A `GuardedConnector`; kwargs go to `aiohttp.TCPConnector` (limit, limit_per_host, resolver, ...)."""
    kwargs.setdefault("family", socket.AF_UNSPEC)
    return GuardedConnector(guard=guard, **kwargs)
