"""The client address behind trusted proxies: X-Forwarded-For and RFC 7239 Forwarded."""

from __future__ import annotations

import ipaddress

import pytest

from forecourt.http.client_ip import (
    ClientAddress,
    forwarded_for,
    parse_address,
    parse_networks,
    x_forwarded_for,
)

PROXY = "10.0.0.5"


def resolver(*cidrs: str) -> ClientAddress:
    return ClientAddress(parse_networks(",".join(cidrs)))


def headers(**values: str | list[str]) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    for name, value in values.items():
        for item in [value] if isinstance(value, str) else value:
            out.append((name.replace("_", "-").encode(), item.encode("latin-1")))
    return out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", "192.0.2.1"),
        (" 192.0.2.1 ", "192.0.2.1"),
        ("192.0.2.1:8080", "192.0.2.1"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ('"[2001:db8:cafe::17]:4711"', "2001:db8:cafe::17"),
        ("::ffff:192.0.2.9", "192.0.2.9"),
        ("unknown", None),
        ("_hidden", None),
        ("", None),
        ("192.0.2.1:port", None),
        ("[2001:db8::1", None),
        ("[2001:db8::1]x", None),
        ("999.1.1.1", None),
        ("example.com", None),
    ],
)
def test_parse_address(text: str, expected: str | None) -> None:
    parsed = parse_address(text)
    assert (str(parsed) if parsed is not None else None) == expected


def test_parse_networks() -> None:
    assert parse_networks("") == ()
    assert parse_networks(" 10.0.0.0/8 , ::1,192.168.1.7 ") == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("192.168.1.7/32"),
    )
    with pytest.raises(ValueError, match="'nope'"):
        parse_networks("10.0.0.0/8,nope")


def test_forwarded_header_parsing() -> None:
    value = 'for=192.0.2.60;proto=http;by=203.0.113.43, for="[2001:db8::17]:4711"'
    assert forwarded_for([value]) == ["192.0.2.60", "[2001:db8::17]:4711"]
    # Several headers are one list; an element without for= is an unknown hop; names are
    # case-insensitive; a quoted comma does not split.
    assert forwarded_for(['proto=https;by="a,b"', "For=198.51.100.17"]) == ["", "198.51.100.17"]
    assert x_forwarded_for(["1.1.1.1, 2.2.2.2", "3.3.3.3"]) == ["1.1.1.1", "2.2.2.2", "3.3.3.3"]


def test_without_trusted_proxies_the_headers_are_ignored() -> None:
    plain = ClientAddress()
    assert plain.resolve("203.0.113.9", headers(x_forwarded_for="1.2.3.4")) == "203.0.113.9"
    assert plain.resolve("203.0.113.9", headers(forwarded="for=1.2.3.4")) == "203.0.113.9"
    assert plain.resolve(None, headers(x_forwarded_for="1.2.3.4")) is None


def test_an_untrusted_peer_is_the_client_whatever_it_sends() -> None:
    r = resolver("10.0.0.0/8")
    assert r.resolve("203.0.113.9", headers(x_forwarded_for="10.0.0.1, 1.2.3.4")) == "203.0.113.9"


def test_the_rightmost_untrusted_hop_is_the_client() -> None:
    r = resolver("10.0.0.0/8")
    # The client wrote "6.6.6.6" itself; the proxy appended the real address.
    assert r.resolve(PROXY, headers(x_forwarded_for="6.6.6.6, 198.51.100.7")) == "198.51.100.7"
    # A chain of trusted proxies is skipped.
    assert (
        r.resolve(PROXY, headers(x_forwarded_for="6.6.6.6, 198.51.100.7, 10.1.1.1, 10.2.2.2"))
        == "198.51.100.7"
    )
    # Every hop trusted: the leftmost is the client.
    assert r.resolve(PROXY, headers(x_forwarded_for="10.9.9.9, 10.1.1.1")) == "10.9.9.9"
    # No header: the proxy itself.
    assert r.resolve(PROXY, []) == PROXY


def test_forwarded_is_read_when_x_forwarded_for_is_absent() -> None:
    r = resolver("10.0.0.0/8")
    value = 'for=6.6.6.6, for="[2001:db8::9]:1234";proto=https, for=10.3.3.3'
    assert r.resolve(PROXY, headers(forwarded=value)) == "2001:db8::9"
    # X-Forwarded-For wins when both are present.
    both = headers(forwarded="for=6.6.6.6", x_forwarded_for="198.51.100.8")
    assert r.resolve(PROXY, both) == "198.51.100.8"


def test_an_unparseable_hop_stops_at_the_last_trusted_address() -> None:
    r = resolver("10.0.0.0/8")
    assert r.resolve(PROXY, headers(x_forwarded_for="1.2.3.4, garbage, 10.1.1.1")) == "10.1.1.1"
    assert r.resolve(PROXY, headers(x_forwarded_for="1.2.3.4, garbage")) == PROXY
    assert r.resolve(PROXY, headers(forwarded="for=unknown")) == PROXY
    assert r.resolve(PROXY, headers(x_forwarded_for="")) == PROXY


def test_ipv6_proxies_and_mapped_addresses() -> None:
    r = resolver("::1", "fd00::/8")
    assert r.resolve("::1", headers(x_forwarded_for="2001:db8::5, fd00::2")) == "2001:db8::5"
    r4 = resolver("10.0.0.0/8")
    assert r4.resolve("::ffff:10.0.0.5", headers(x_forwarded_for="198.51.100.1")) == (
        "198.51.100.1"
    )
