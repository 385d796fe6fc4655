"""SSRF guard for URLs that users configure (webhook targets, callback URLs).

A user who can make Cauce call a URL of their choosing must not be able to reach what
only Cauce can reach: the loopback interface, the private network, link-local and
cloud-metadata endpoints. The guard works in three steps:

1. **Syntax** (:meth:`SsrfGuard.check_target`): only ``http``/``https``; an IP literal is
   classified at once; ``localhost`` and well-known metadata host names are refused
   by name.
2. **Resolution** (:meth:`SsrfGuard.resolve`): the name is resolved (``getaddrinfo`` on
   the event loop, or an injected resolver) and *every* address must be public: a name
   that answers one public and one private address is refused as a whole.
3. **Pinning**: ``core.http`` connects only to the addresses :meth:`SsrfGuard.resolve`
   returned, from inside the connection itself (an aiohttp resolver), so a DNS answer
   that changes between a check and the connection (rebinding) cannot slip through:
   there is no second lookup. Redirects are followed by ``core.http`` hop by hop, and
   every hop goes through steps 1-3 again.

Addresses are classified by explicit tables (:func:`classify_address`) rather than
``ipaddress``'s ``is_global``, whose answers change between Python releases and which
calls multicast and IPv4-mapped addresses "global". IPv6 is allowed only inside global
unicast ``2000::/3``; forms that embed an IPv4 address (6to4, NAT64) are judged by the
embedded address, and IPv4-mapped/-compatible/-translated forms are refused outright.

An explicit allowlist (host names or CIDRs) lets a local sandbox through; cloud
metadata addresses stay refused even then, because no webhook ever needs them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Final, Literal
from urllib.parse import urlsplit

from cauce.core.errors import BadRequest

__all__ = [
    "ALLOWED_SCHEMES",
    "BlockReason",
    "IPAddress",
    "Resolver",
    "SsrfGuard",
    "UnsafeUrlError",
    "classify_address",
    "system_resolver",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: Resolves ``(host, port)`` to IP address strings (what ``getaddrinfo`` answers).
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

BlockReason = Literal[
    "scheme",
    "no_host",
    "hostname",
    "unspecified",
    "loopback",
    "private",
    "shared_address_space",
    "link_local",
    "cloud_metadata",
    "multicast",
    "documentation",
    "benchmarking",
    "reserved",
    "ipv4_mapped",
    "embedded_ipv4",
]

ALLOWED_SCHEMES: Final = frozenset({"http", "https"})


class UnsafeUrlError(BadRequest):
    """The URL points somewhere Cauce must not call on a user's behalf.

    ``reason`` says which rule refused it; ``host`` and ``address`` (when an address was
    involved) say what was refused. Never retried: the same URL is refused again.
    """

    code = "unsafe_url"
    title = "URL not allowed"

    def __init__(self, reason: BlockReason, host: str, address: IPAddress | None = None) -> None:
        target = host if address is None or str(address) == host else f"{host} ({address})"
        super().__init__(f"refusing to call {target}: {reason.replace('_', ' ')}")
        self.reason: BlockReason = reason
        self.host = host
        self.address = address


def _v4(*cidrs: str) -> tuple[ipaddress.IPv4Network, ...]:
    return tuple(ipaddress.IPv4Network(c) for c in cidrs)


def _v6(*cidrs: str) -> tuple[ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.IPv6Network(c) for c in cidrs)


# First match wins; the order puts the most specific reason first.
_V4_TABLE: Final[tuple[tuple[BlockReason, tuple[ipaddress.IPv4Network, ...]], ...]] = (
    ("unspecified", _v4("0.0.0.0/8")),
    ("loopback", _v4("127.0.0.0/8")),
    ("private", _v4("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")),
    ("shared_address_space", _v4("100.64.0.0/10")),  # CGNAT, RFC 6598
    ("link_local", _v4("169.254.0.0/16")),
    ("documentation", _v4("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")),
    ("benchmarking", _v4("198.18.0.0/15")),
    # IETF protocol assignments and the retired 6to4 relay anycast prefix.
    ("reserved", _v4("192.0.0.0/24", "192.88.99.0/24")),
    ("multicast", _v4("224.0.0.0/4")),
    ("reserved", _v4("240.0.0.0/4")),  # includes 255.255.255.255
)

_V6_TABLE: Final[tuple[tuple[BlockReason, tuple[ipaddress.IPv6Network, ...]], ...]] = (
    ("unspecified", _v6("::/128")),
    ("loopback", _v6("::1/128")),
    # IPv4-mapped, IPv4-translated (SIIT) and the deprecated IPv4-compatible form:
    # a dual-stack socket turns them into IPv4 connections.
    ("ipv4_mapped", _v6("::ffff:0:0/96", "::ffff:0:0:0/96", "::/96")),
    ("private", _v6("64:ff9b:1::/48", "fc00::/7", "fec0::/10")),
    ("link_local", _v6("fe80::/10")),
    ("multicast", _v6("ff00::/8")),
    ("documentation", _v6("2001:db8::/32", "3fff::/20")),
    # IETF protocol assignments (Teredo, ORCHID, ...) and the discard prefix.
    ("reserved", _v6("2001::/23", "100::/64")),
)
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_GLOBAL_UNICAST: Final = ipaddress.IPv6Network("2000::/3")

# Instance-metadata services of the big clouds (AWS IMDS and ECS, GCP, Azure IMDS and
# WireServer, Alibaba). Refused even when an allowlist entry would cover them.
_METADATA_ADDRESSES: Final[frozenset[IPAddress]] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "168.63.129.16",
        "100.100.100.200",
        "fd00:ec2::254",
    )
)
_METADATA_NAMES: Final = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    }
)


def classify_address(address: IPAddress) -> BlockReason | None:
    """Return why ``address`` must not be called, or None if it is public.

    Pure and total: every IPv4 and IPv6 address gets an answer. A scope id
    (``fe80::1%eth0``) does not change the answer.
    """
    if address in _METADATA_ADDRESSES:
        return "cloud_metadata"
    if isinstance(address, ipaddress.IPv4Address):
        for reason, networks in _V4_TABLE:
            for network in networks:
                if address in network:
                    return reason
        return None
    if address.scope_id is not None:
        address = ipaddress.IPv6Address(address.packed)
        if address in _METADATA_ADDRESSES:
            return "cloud_metadata"
    for reason, networks6 in _V6_TABLE:
        for network6 in networks6:
            if address in network6:
                return reason
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return "embedded_ipv4" if classify_address(embedded) is not None else None
    if address not in _GLOBAL_UNICAST:
        return "reserved"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a 6to4 or well-known-prefix NAT64 address routes to."""
    if address in _NAT64:
        return ipaddress.IPv4Address(address.packed[12:])
    return address.sixtofour


def _parse_literal(host: str) -> IPAddress | None:
    """Return ``host`` as an address if it is a canonical IP literal (brackets allowed)."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


async def system_resolver(host: str, port: int) -> list[str]:
    """Resolve ``host`` with the event loop's ``getaddrinfo`` (a worker thread)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class SsrfGuard:
    """Decides whether a URL, host or address may be called (see the module docstring).

    ``allow`` entries are CIDRs (``127.0.0.1/32``, ``10.8.0.0/16``) or exact host names
    (``sandbox.local``); ``resolver`` replaces ``getaddrinfo`` (tests inject one).
    """

    __slots__ = ("_allow_hosts", "_allow_networks", "_resolver")

    def __init__(self, *, allow: Iterable[str] = (), resolver: Resolver | None = None) -> None:
        hosts: set[str] = set()
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allow:
            entry = entry.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(_normalise_host(entry))
        self._allow_hosts = frozenset(hosts)
        self._allow_networks = tuple(networks)
        self._resolver: Resolver = resolver if resolver is not None else system_resolver

    def check_scheme(self, scheme: str) -> None:
        """Refuse any scheme but http and https."""
        if scheme.lower() not in ALLOWED_SCHEMES:
            raise UnsafeUrlError("scheme", scheme)

    def check_target(self, scheme: str, host: str | None) -> IPAddress | None:
        """Check what can be checked without DNS; return the address if ``host`` is a literal.

        ``core.http`` calls this for every hop because aiohttp connects to an IP literal
        without asking any resolver.
        """
        self.check_scheme(scheme)
        if not host:
            raise UnsafeUrlError("no_host", "")
        literal = _parse_literal(host)
        if literal is not None:
            self.check_address(host, literal)
            return literal
        name = _normalise_host(host)
        if name not in self._allow_hosts and (
            name == "localhost" or name.endswith(".localhost") or name in _METADATA_NAMES
        ):
            reason: BlockReason = "cloud_metadata" if name in _METADATA_NAMES else "loopback"
            raise UnsafeUrlError(reason, host)
        return None

    def check_address(self, host: str, address: IPAddress) -> None:
        """Raise :class:`UnsafeUrlError` unless ``address`` (which ``host`` named) may be called."""
        reason = classify_address(address)
        if reason is None:
            return
        if reason != "cloud_metadata" and self._allowed(host, address):
            return
        raise UnsafeUrlError(reason, host, address)

    def _allowed(self, host: str, address: IPAddress) -> bool:
        if _normalise_host(host) in self._allow_hosts:
            return True
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
            address = ipaddress.IPv6Address(address.packed)
        return any(address in network for network in self._allow_networks)

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Resolve ``host`` and return its addresses if every one of them may be called.

        Raises :class:`UnsafeUrlError` when any address is refused, and the resolver's
        own ``OSError`` (``socket.gaierror``) when the name does not resolve.
        """
        literal = self.check_target("http", host)
        if literal is not None:
            return [literal]
        answers = await self._resolver(host, port)
        addresses: list[IPAddress] = []
        for answer in answers:
            address = ipaddress.ip_address(answer)
            self.check_address(host, address)
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address")
        return addresses

    async def check_url(self, url: str) -> list[IPAddress]:
        """Check a whole URL now (e.g. when a user saves a webhook target).

        Passing says only that the URL was safe *now*: DNS may change, so ``core.http``
        checks again at every connection.
        """
        parts = urlsplit(url)
        self.check_scheme(parts.scheme)
        try:
            port = parts.port
        except ValueError:
            raise UnsafeUrlError("no_host", parts.netloc) from None
        host = parts.hostname
        if not host:
            raise UnsafeUrlError("no_host", url)
        if port is None:
            port = 443 if parts.scheme.lower() == "https" else 80
        return await self.resolve(host, port)


def _normalise_host(host: str) -> str:
    return host.strip().rstrip(".").lower()
