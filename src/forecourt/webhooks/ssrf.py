"""SSRF guard: webhook requests reach only globally routable addresses.

An endpoint URL is chosen by a tenant, so without a guard a webhook could be aimed at the
loopback interface, the cloud metadata service (169.254.169.254) or the private network
around the server. Three checks, from early to last:

- :func:`validate_url_syntax` when an endpoint is created: http(s), a host, no userinfo.
- :func:`check_url` resolves the host and refuses it unless *every* address is allowed.
- :func:`guarded_connector` builds the aiohttp connector deliveries use. Its
  :class:`GuardedResolver` checks every resolution and hands aiohttp exactly the addresses it
  checked, so nothing resolves the name a second time between check and connect (DNS
  rebinding has no window). aiohttp does not consult the resolver for hosts that are IP
  literals (``http://127.0.0.1/``, including redirect targets), so the connector's
  :class:`GuardedSocketFactory` checks the address of every socket just before it connects.

Inside aiohttp a refusal is raised as :class:`UnsafeConnection`, an ``OSError`` as well as an
:class:`UnsafeTarget`, so aiohttp treats it like any connection that could not be made: the
caller gets ``aiohttp.ClientConnectorError`` (``ClientConnectorDNSError`` when the resolver
refused) with the refusal as its ``os_error`` and ``__cause__``. :func:`is_unsafe_target_error`
tells such an error apart from a receiver that is merely down.

Proxies defeat the guard (the proxy, not this process, connects to the target), so a guarded
session must not use one: leave ``trust_env`` off and pass no ``proxy``.

``FORECOURT_WEBHOOK_ALLOW_PRIVATE`` becomes an :class:`AllowPolicy`: ``false`` (nothing more
is allowed), ``true`` (everything is), or a comma-separated list of CIDRs.

A refusal's message (``reason``, and ``str()``) goes back to the tenant, in a 422 or in a
delivery attempt's error, so it never says what a name resolves to: that would map the
network around the server. Only an address the caller wrote itself is named, with its kind.
The full story (``detail``) is for the server's own logs.

Host names must be valid internationalized domain names (IDNA 2008, checked with the
``idna`` package): a non-ASCII label must encode, an ``xn--`` label must decode, and no label
is empty or longer than 63 characters.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import idna
from aiohttp.abc import AbstractResolver, ResolveResult

from forecourt.http.client_ip import parse_networks

URL_CACHE_SIZE = 4096  # URLs whose parsed host and port are remembered
MAX_URL_LENGTH = 2048  # characters
MAX_LABEL_LENGTH = 63  # characters of one DNS label
MAX_HOST_LENGTH = 253  # characters of a host name, without a trailing dot
ALLOWED_SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS = {"http": 80, "https": 443}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no", ""})

# ipaddress calls both NAT64 prefixes global. An address in the well-known one is a way to
# reach the IPv4 address in its last 32 bits, so that address is what gets checked; the
# local-use prefix only ever leads to translators inside the operator's own network.
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")
_SHARED_ADDRESS_SPACE = ipaddress.IPv4Network("100.64.0.0/10")
_DOCUMENTATION = (
    ipaddress.IPv4Network("192.0.2.0/24"),
    ipaddress.IPv4Network("198.51.100.0/24"),
    ipaddress.IPv4Network("203.0.113.0/24"),
    ipaddress.IPv6Network("2001:db8::/32"),
    ipaddress.IPv6Network("3fff::/20"),
)
# The legacy IPv4 spellings inet_aton accepts (2130706433, 0x7f000001, 017700000001, 127.1):
# getaddrinfo treats them as addresses, so they are checked as literals, not looked up.
_LEGACY_IPV4 = re.compile(r"[0-9a-fA-FxX.]+")
_FORBIDDEN_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_NUMERIC_FLAGS = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV


class UnsafeTarget(ValueError):
    """The webhook target is not allowed: it is not a public http(s) address.

    ``reason`` is safe to show the caller; ``detail`` may name internal addresses (logs only).
    """

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail or reason


class UnsafeConnection(UnsafeTarget, OSError):
    """A connection aiohttp was about to make was refused by the guard.

    Being an ``OSError`` makes aiohttp treat it like any other failed connection: it closes
    what it opened and raises ``ClientConnectorError`` with this as ``os_error``.
    """

    def __init__(self, reason: str, detail: str | None = None) -> None:
        OSError.__init__(self, errno.EACCES, reason)
        self.reason = reason
        self.detail = detail or reason

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True)
class AllowPolicy:
    """Addresses that may be used despite the guard (``FORECOURT_WEBHOOK_ALLOW_PRIVATE``)."""

    allow_all_private: bool = False
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_setting(cls, value: str) -> AllowPolicy:
        """Parse the setting: ``false``/empty, ``true``, or comma-separated CIDRs.

        Raises ``ValueError`` naming the entry that is not a network.
        """
        text = value.strip()
        if text.lower() in _TRUE:
            return cls(allow_all_private=True)
        if text.lower() in _FALSE:
            return cls()
        return cls(networks=parse_networks(text))

    def permits(self, address: IPAddress) -> bool:
        """Whether ``address`` is allowed by this policy (the guard is not consulted)."""
        if self.allow_all_private:
            return True
        # An IPv4-mapped address is the IPv4 host itself, so IPv4 networks cover it too
        # (6to4 and NAT64 addresses go through a relay, so they are not covered).
        mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        candidates = [address] if mapped is None else [address, mapped]
        return any(ip in network for ip in candidates for network in self.networks)


class Resolver(Protocol):
    """Turns a host name into the IP addresses a connection to it would use."""

    async def resolve(self, host: str, port: int) -> list[str]:
        """All addresses of ``host``, as strings; ``OSError`` if it does not resolve."""
        ...


class SystemResolver:
    """The operating system's resolver (``getaddrinfo``), as every socket would use it."""

    async def resolve(self, host: str, port: int) -> list[str]:
        """All addresses of ``host`` for a TCP connection to ``port``, without duplicates."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses: list[str] = []
        for family, _, _, _, sockaddr in infos:
            address = str(sockaddr[0])
            # A link-local IPv6 address needs its interface to be connectable.
            scope_id = sockaddr[3] if len(sockaddr) == 4 else 0
            if family == socket.AF_INET6 and scope_id and "%" not in address:
                address = f"{address}%{scope_id}"
            if address not in addresses:
                addresses.append(address)
        return addresses


def check_address(address: str, policy: AllowPolicy) -> None:
    """Refuse ``address`` with :class:`UnsafeTarget` unless it is global or the policy allows it.

    IPv4 addresses embedded in IPv6 ones (IPv4-mapped, 6to4, NAT64) must be global as well.
    """
    kind = _refusal_of(address, policy)
    if kind is not None:
        raise UnsafeTarget(f"{address} is {kind}")


def validate_url_syntax(url: str) -> None:
    """Check an endpoint URL's shape without resolving it (for the API at create time).

    It must be at most 2048 characters, http or https, with a host and without userinfo.
    Raises :class:`UnsafeTarget` saying what is wrong.
    """
    _split_url(url)


async def check_url(url: str, policy: AllowPolicy, resolver: Resolver) -> list[str]:
    """The addresses ``url`` would connect to, once every one of them has passed the guard.

    Hosts that are IP literals are checked without a lookup. Raises :class:`UnsafeTarget`
    when the URL or any address is refused, ``OSError`` when the host does not resolve.
    """
    host, port = _split_url(url)
    return await _resolve_checked(host, port, policy, resolver)


def is_unsafe_target_error(exc: BaseException) -> bool:
    """Whether ``exc`` is, or was caused by, a refusal of the guard.

    Follows ``__cause__``, ``__context__``, aiohttp's ``os_error`` and exception groups, so
    it recognises the ``ClientConnectorError`` aiohttp raises around an :class:`UnsafeConnection`.
    """
    return any(isinstance(item, UnsafeTarget) for item in _exception_chain(exc))


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that returns only addresses that have passed the guard.

    Every address of a name must pass, or the whole resolution is refused with
    :class:`UnsafeConnection`. aiohttp connects to exactly the addresses returned here.
    """

    def __init__(self, policy: AllowPolicy, resolver: Resolver | None = None) -> None:
        self._policy = policy
        self._resolver: Resolver = resolver if resolver is not None else SystemResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve ``host`` and check every address; aiohttp's result shape."""
        try:
            addresses = await _resolve_checked(host, port, self._policy, self._resolver)
        except UnsafeTarget as exc:
            raise UnsafeConnection(exc.reason, exc.detail) from exc
        results: list[ResolveResult] = []
        for address in addresses:
            address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
            if family not in (socket.AF_UNSPEC, address_family):
                continue
            results.append(
                ResolveResult(
                    hostname=host,
                    host=address,
                    port=port,
                    family=address_family,
                    proto=socket.IPPROTO_TCP,
                    flags=_NUMERIC_FLAGS,
                )
            )
        if not results:
            # aiohttp cannot handle an empty answer; report it as a failed lookup.
            raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address of {family!r}")
        return results

    async def close(self) -> None:
        """Nothing to release."""


class GuardedSocketFactory:
    """An aiohttp ``socket_factory`` that refuses to create a socket for an unsafe address.

    This is the last check before ``connect()`` and the only one that sees IP-literal hosts,
    which aiohttp never passes to the resolver.
    """

    def __init__(self, policy: AllowPolicy) -> None:
        self._policy = policy

    def __call__(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """A new unconnected socket for ``addr_info`` once its address has passed the guard."""
        family, type_, proto, _, sockaddr = addr_info
        address = str(sockaddr[0])
        kind = _refusal_of(address, self._policy)
        if kind is not None:
            # In a guarded connector a name's addresses have passed the resolver already, so
            # what is refused here is an address the caller wrote: naming it reveals nothing.
            raise UnsafeConnection(f"{address} is {kind}")
        return socket.socket(family=family, type=type_, proto=proto)


def guarded_connector(
    policy: AllowPolicy, resolver: Resolver | None = None, **kwargs: Any
) -> aiohttp.TCPConnector:
    """An aiohttp connector whose every connection goes through the guard.

    ``kwargs`` are passed to ``aiohttp.TCPConnector`` (limits, timeouts, TLS); ``resolver``
    and ``socket_factory`` are set here and cannot be overridden.
    """
    return aiohttp.TCPConnector(
        resolver=GuardedResolver(policy, resolver),
        socket_factory=GuardedSocketFactory(policy),
        **kwargs,
    )


@functools.lru_cache(maxsize=URL_CACHE_SIZE)
def _split_url(url: str) -> tuple[str, int]:
    """The host and port of a URL that has the shape of a webhook target (remembered: every
    delivery attempt checks its endpoint's URL again)."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeTarget(f"the URL is longer than {MAX_URL_LENGTH} characters")
    # urlsplit silently drops some of these, and parsers disagree on backslashes; a URL
    # that different parsers could read differently is refused rather than interpreted.
    if _FORBIDDEN_URL_CHARS.search(url):
        raise UnsafeTarget("the URL contains whitespace, control characters or a backslash")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeTarget(f"the URL is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise UnsafeTarget("the URL scheme must be http or https")
    if "@" in parts.netloc:
        raise UnsafeTarget("the URL must not contain a user name or password")
    host = parts.hostname
    if not host:
        raise UnsafeTarget("the URL has no host")
    _check_host_name(host)
    if port == 0:
        raise UnsafeTarget("the URL's port must be between 1 and 65535")
    return host, port if port is not None else DEFAULT_PORTS[scheme]


async def _resolve_checked(
    host: str, port: int, policy: AllowPolicy, resolver: Resolver
) -> list[str]:
    literal = _literal_address(host)
    if literal is not None:
        kind = _refusal_of(literal, policy)
        if kind is not None:
            subject = host if literal == host else f"{host} ({literal})"
            raise UnsafeTarget(f"{subject} is {kind}")
        return [literal]
    addresses = await resolver.resolve(host, port)
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} did not resolve to any address")
    # One refused address refuses the name: a connection may use any of them.
    for address in addresses:
        kind = _refusal_of(address, policy)
        if kind is not None:
            raise UnsafeTarget(
                f"{host} resolves to an address that is not allowed",
                f"{host} resolves to {address}, which is {kind}",
            )
    return addresses


def _check_host_name(host: str) -> None:
    """Refuse a host name that is not a valid (internationalized) domain name; IP literals
    and plain ASCII labels (which DNS allows to hold underscores) pass."""
    if ":" in host or host.startswith("["):
        return  # an IPv6 literal
    name = host[:-1] if host.endswith(".") else host
    if len(name) > MAX_HOST_LENGTH:
        raise UnsafeTarget(f"the host name is longer than {MAX_HOST_LENGTH} characters")
    for label in name.split("."):
        if not label:
            raise UnsafeTarget("the host name has an empty label")
        try:
            if not label.isascii():
                idna.encode(label, uts46=True)  # refuses an encoded label over 63 characters
            elif len(label) > MAX_LABEL_LENGTH:
                raise UnsafeTarget(
                    f"the host name has a label longer than {MAX_LABEL_LENGTH} characters"
                )
            elif label[:4].lower() == "xn--":
                idna.decode(label.lower())
        except (idna.IDNAError, UnicodeError):
            raise UnsafeTarget(
                f"the host name label {label!r} is not a valid internationalized domain name"
            ) from None


def _literal_address(host: str) -> str | None:
    """``host`` as an IP address string when it is one, in any spelling the OS accepts."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if _LEGACY_IPV4.fullmatch(host):
        try:
            return socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _refusal_of(address: str, policy: AllowPolicy) -> str | None:
    """Why ``address`` is refused under ``policy``, or ``None`` if it may be contacted."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "not an IP address"
    if policy.permits(ip):
        return None
    return _refusal(ip)


def _refusal(ip: IPAddress) -> str | None:
    """Why ``ip`` may not be contacted, or ``None`` if it is globally routable."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL_USE:
            return "a local-use NAT64 address"
        for embedded in _embedded_ipv4(ip):
            reason = _refusal(embedded)
            if reason is not None:
                return f"an IPv6 form of {embedded}, which is {reason}"
        if ip.ipv4_mapped is not None:
            # Only a representation of the IPv4 address, which has just passed.
            return None
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED_ADDRESS_SPACE:
        return "a shared address space (carrier-grade NAT) address"
    if any(ip.version == net.version and ip in net for net in _DOCUMENTATION):
        return "a documentation address"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "not a globally routable address"
    return None


def _embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to: IPv4-mapped, 6to4, NAT64."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    embedded: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        embedded.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        embedded.append(ip.sixtofour)
    if ip in _NAT64_WELL_KNOWN:
        embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return embedded


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__, getattr(current, "os_error", None)]
        if isinstance(current, BaseExceptionGroup):
            linked.extend(current.exceptions)
        pending.extend(item for item in linked if isinstance(item, BaseException))
