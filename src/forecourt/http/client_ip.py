"""The client's address: the peer's, or behind a trusted proxy the one the proxy reports.

Only a peer inside ``FORECOURT_TRUSTED_PROXIES`` is believed, and only about the hop it
appended: the chain in ``X-Forwarded-For`` (or, when that header is absent, RFC 7239
``Forwarded``) is read from the right, skipping addresses of trusted proxies, and the first
untrusted address is the client. Whatever a client writes itself sits to the left of that
address and is never reached. A hop that does not parse ends the walk at the last address
a trusted proxy vouched for.

A proxy that writes ``Forwarded`` must remove an incoming ``X-Forwarded-For``, which is read
first because almost every proxy writes it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

STATE_KEY = "client_ip"
MAX_HOPS = 32  # a longer chain is cut to its rightmost hops: no proxy chain is that deep


def parse_networks(value: str | Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (or single addresses) from a comma-separated string or a list; ValueError names
    the entry that is not one."""
    items = value.split(",") if isinstance(value, str) else list(value)
    networks: list[Network] = []
    for item in items:
        text = item.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not an IP network in CIDR notation") from None
    return tuple(networks)


def parse_address(text: str) -> Address | None:
    """An address from one hop: ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]``, ``[::1]:80`` or
    ``::1``; None for anything else (``unknown``, an obfuscated ``_name``, garbage)."""
    text = text.strip().strip('"').strip()
    if not text:
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        rest = text[end + 1 :]
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # IPv4 with a port
        host, _, port = text.partition(":")
        if not port.isdigit():
            return None
        text = host
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _split_quoted(text: str, sep: str) -> list[str]:
    """``text`` split on ``sep`` outside double-quoted strings (with backslash escapes)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            current.append(ch)
            escaped = True
        elif ch == '"':
            current.append(ch)
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def forwarded_for(values: Sequence[str]) -> list[str]:
    """The ``for=`` value of each element of RFC 7239 ``Forwarded`` headers, in order; an
    element without one yields an empty string (an unknown hop)."""
    hops: list[str] = []
    for value in values:
        for element in _split_quoted(value, ","):
            if not element.strip():
                continue
            found = ""
            for pair in _split_quoted(element, ";"):
                name, eq, token = pair.partition("=")
                if eq and name.strip().lower() == "for":
                    found = token.strip()
                    if found.startswith('"') and found.endswith('"') and len(found) >= 2:
                        found = found[1:-1].replace("\\", "")
                    break
            hops.append(found)
    return hops


def x_forwarded_for(values: Sequence[str]) -> list[str]:
    """The hops of ``X-Forwarded-For`` headers, in order (several headers are one list)."""
    return [hop.strip() for value in values for hop in value.split(",")]


class ClientAddress:
    """Resolves the client address of a request given the trusted proxy networks."""

    def __init__(self, trusted: Sequence[Network] = ()) -> None:
        self.trusted = tuple(trusted)

    def is_trusted(self, address: Address) -> bool:
        return any(address in network for network in self.trusted)

    def resolve(self, peer: str | None, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        """The client's address for a connection from ``peer`` with these raw headers."""
        if not self.trusted or peer is None:
            return peer
        peer_address = parse_address(peer)
        if peer_address is None or not self.is_trusted(peer_address):
            return peer
        xff: list[str] = []
        forwarded: list[str] = []
        for name, value in headers:
            if name == b"x-forwarded-for":
                xff.append(value.decode("latin-1"))
            elif name == b"forwarded":
                forwarded.append(value.decode("latin-1"))
        if xff:
            hops = x_forwarded_for(xff)
        elif forwarded:
            hops = forwarded_for(forwarded)
        else:
            return peer
        client = peer_address
        for hop in reversed(hops[-MAX_HOPS:]):
            address = parse_address(hop)
            if address is None:
                break
            client = address
            if not self.is_trusted(address):
                break
        return str(client)


def of_scope(scope: Mapping[str, Any]) -> str | None:
    """The address the access middleware resolved for this request, else the peer's."""
    state = scope.get("state") or {}
    if STATE_KEY in state:
        resolved: str | None = state[STATE_KEY]
        return resolved
    client = scope.get("client")
    return str(client[0]) if client else None
