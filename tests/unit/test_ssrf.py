"""The SSRF guard's decisions, with fake resolvers: no network is used."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver
from aiohttp.client_reqrep import ConnectionKey
from hypothesis import given
from hypothesis import strategies as st

from forecourt.settings import Settings
from forecourt.webhooks.ssrf import (
    MAX_URL_LENGTH,
    AllowPolicy,
    GuardedResolver,
    GuardedSocketFactory,
    SystemResolver,
    UnsafeConnection,
    UnsafeTarget,
    check_address,
    check_url,
    guarded_connector,
    is_unsafe_target_error,
    validate_url_syntax,
)

DEFAULT = AllowPolicy()
PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"


class FakeResolver:
    """Answers from a table; each name may have a sequence of answers, one per call."""

    def __init__(self, answers: dict[str, list[list[str]]] | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[tuple[str, int]] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} is not in the fake DNS")
        sequence = self.answers[host]
        return list(sequence[min(len(self.calls_for(host)), len(sequence)) - 1])

    def calls_for(self, host: str) -> list[tuple[str, int]]:
        return [call for call in self.calls if call[0] == host]


class NoDns:
    """A resolver that must not be asked: literal addresses need no lookup."""

    async def resolve(self, host: str, port: int) -> list[str]:
        raise AssertionError(f"unexpected DNS lookup of {host}")


def fake(**names: Sequence[str]) -> FakeResolver:
    return FakeResolver({name.replace("_", "."): [list(addrs)] for name, addrs in names.items()})


# --- the corpus: everything here is refused under the default policy ---

REFUSED_LITERALS = [
    ("http://127.0.0.1/", "loopback"),
    ("https://127.0.0.1:8443/hook", "loopback"),
    ("http://127.255.255.254/", "loopback"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://[::1]/", "loopback"),
    ("http://[::]/", "unspecified"),
    ("http://[::ffff:127.0.0.1]/", "IPv6 form of 127.0.0.1, which is a loopback"),
    ("http://[::ffff:10.0.0.1]/", "private"),
    ("http://2130706433/", "(127.0.0.1) is a loopback"),
    ("http://0x7f000001/", "(127.0.0.1) is a loopback"),
    ("http://017700000001/", "(127.0.0.1) is a loopback"),
    ("http://0177.0.0.1/", "(127.0.0.1) is a loopback"),
    ("http://127.1/", "(127.0.0.1) is a loopback"),
    ("http://10.0.0.1/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://172.31.255.255/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://100.64.0.1/", "shared address space"),
    ("http://100.127.255.254/", "shared address space"),
    ("http://224.0.0.1/", "multicast"),
    ("http://239.255.255.250/", "multicast"),
    ("http://255.255.255.255/", "reserved"),
    ("http://240.0.0.1/", "reserved"),
    ("http://192.0.2.1/", "documentation"),
    ("http://198.51.100.7/", "documentation"),
    ("http://203.0.113.9/", "documentation"),
    ("http://198.18.0.1/", "private"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fe80::1%25eth0]/", "link-local"),
    ("http://[fc00::1]/", "private"),
    ("http://[fd12:3456::1]/", "private"),
    ("http://[ff02::1]/", "multicast"),
    ("http://[2001:db8::1]/", "documentation"),
    ("http://[64:ff9b::7f00:1]/", "IPv6 form of 127.0.0.1"),
    ("http://[64:ff9b::a9fe:a9fe]/", "IPv6 form of 169.254.169.254"),
    ("http://[64:ff9b:1::1]/", "local-use NAT64"),
    ("http://[2002:7f00:1::]/", "IPv6 form of 127.0.0.1"),
    ("http://[2002:c0a8:101::]/", "IPv6 form of 192.168.1.1"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED_LITERALS)
async def test_literal_addresses_are_refused_without_dns(url: str, reason: str) -> None:
    with pytest.raises(UnsafeTarget, match=re.escape(reason)):
        await check_url(url, DEFAULT, NoDns())


def assert_hides_the_resolution(exc: UnsafeTarget, host: str, address: str, kind: str) -> None:
    """The caller learns that the name is refused, never what it resolves to; the detail
    (for the server's logs) says everything."""
    assert exc.reason == f"{host} resolves to an address that is not allowed"
    assert str(exc) == exc.reason
    assert address not in str(exc) and kind not in str(exc)
    assert exc.detail == f"{host} resolves to {address}, which is {kind}"


async def test_names_resolving_to_loopback_are_refused() -> None:
    resolver = fake(rebind_example=["127.0.0.1"])
    with pytest.raises(UnsafeTarget) as info:
        await check_url("http://rebind.example/hook", DEFAULT, resolver)
    assert_hides_the_resolution(info.value, "rebind.example", "127.0.0.1", "a loopback address")
    assert resolver.calls == [("rebind.example", 80)]


async def test_localhost_is_refused_through_the_system_resolver() -> None:
    with pytest.raises(UnsafeTarget, match=r"^localhost resolves to an address") as info:
        await check_url("http://localhost:8000/", DEFAULT, SystemResolver())
    assert "loopback" in info.value.detail
    assert "127.0.0.1" not in str(info.value) and "::1" not in str(info.value)


@pytest.mark.parametrize("host", ["0x7f000001", "017700000001", "2130706433", "127.1"])
async def test_our_reading_of_legacy_ipv4_forms_matches_the_os(host: str) -> None:
    assert await SystemResolver().resolve(host, 80) == ["127.0.0.1"]


async def test_one_private_address_among_public_ones_refuses_the_name() -> None:
    resolver = fake(mixed_example=[PUBLIC_V4, "10.0.0.5", PUBLIC_V6])
    with pytest.raises(UnsafeTarget) as info:
        await check_url("https://mixed.example/", DEFAULT, resolver)
    assert_hides_the_resolution(info.value, "mixed.example", "10.0.0.5", "a private address")


@pytest.mark.parametrize(
    "url",
    ["http://93.184.216.34/", "https://93.184.216.34:8443/x", "http://[::ffff:93.184.216.34]/"],
)
async def test_public_literals_are_accepted(url: str) -> None:
    addresses = await check_url(url, DEFAULT, NoDns())
    assert [ipaddress.ip_address(a) for a in addresses] in (
        [ipaddress.ip_address(PUBLIC_V4)],
        [ipaddress.ip_address("::ffff:93.184.216.34")],
    )


async def test_public_names_are_accepted_with_every_address() -> None:
    resolver = fake(hooks_example_com=[PUBLIC_V4, PUBLIC_V6])
    assert await check_url("https://hooks.example.com/in", DEFAULT, resolver) == [
        PUBLIC_V4,
        PUBLIC_V6,
    ]
    assert resolver.calls == [("hooks.example.com", 443)]


async def test_a_name_that_does_not_resolve_is_a_lookup_error_not_a_refusal() -> None:
    with pytest.raises(OSError) as info:
        await check_url("https://nowhere.example/", DEFAULT, fake(empty_example=[]))
    assert not is_unsafe_target_error(info.value)
    with pytest.raises(socket.gaierror):
        await check_url("https://empty.example/", DEFAULT, fake(empty_example=[]))


async def test_a_bad_answer_from_the_resolver_is_refused() -> None:
    with pytest.raises(UnsafeTarget, match="not allowed") as info:
        await check_url("https://odd.example/", DEFAULT, fake(odd_example=["not-an-ip"]))
    assert "not an IP address" in info.value.detail


# --- the allow policy ---


async def test_an_allowlist_permits_only_its_networks() -> None:
    policy = AllowPolicy.from_setting("127.0.0.0/8")
    assert await check_url("http://127.0.0.1:8000/", policy, NoDns()) == ["127.0.0.1"]
    resolver = fake(rebind_example=["127.0.0.9"])
    assert await check_url("http://rebind.example/", policy, resolver) == ["127.0.0.9"]
    with pytest.raises(UnsafeTarget, match=r"10\.0\.0\.1 is a private"):
        await check_url("http://10.0.0.1/", policy, NoDns())
    with pytest.raises(UnsafeTarget, match="::1 is a loopback"):
        await check_url("http://[::1]/", policy, NoDns())
    # The IPv4-mapped form reaches the same host, so the IPv4 network covers it; the 6to4
    # and NAT64 forms go through a relay and are not covered.
    await check_url("http://[::ffff:127.0.0.1]/", policy, NoDns())
    for relayed in ["http://[2002:7f00:1::]/", "http://[64:ff9b::7f00:1]/"]:
        with pytest.raises(UnsafeTarget, match=r"IPv6 form of 127\.0\.0\.1"):
            await check_url(relayed, policy, NoDns())


@pytest.mark.parametrize("url", ["http://127.0.0.1/", "http://169.254.169.254/", "http://[::1]/"])
async def test_true_permits_everything(url: str) -> None:
    await check_url(url, AllowPolicy.from_setting("true"), NoDns())


@pytest.mark.parametrize("value", ["false", "", "  ", "0", "no", "FALSE"])
def test_false_like_settings_permit_nothing(value: str) -> None:
    policy = AllowPolicy.from_setting(value)
    assert policy == AllowPolicy()
    assert not policy.permits(ipaddress.ip_address("127.0.0.1"))


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes", " true "])
def test_true_like_settings_permit_all(value: str) -> None:
    assert AllowPolicy.from_setting(value).allow_all_private


def test_a_cidr_list_is_parsed() -> None:
    policy = AllowPolicy.from_setting(" 10.0.0.0/8 , 192.168.1.7/16,fd00::/8,")
    assert policy.networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.0.0/16"),
        ipaddress.ip_network("fd00::/8"),
    )
    assert policy.permits(ipaddress.ip_address("192.168.200.1"))
    assert policy.permits(ipaddress.ip_address("fd00::1"))
    assert not policy.permits(ipaddress.ip_address("172.16.0.1"))


def test_a_bad_cidr_is_rejected_by_name() -> None:
    with pytest.raises(ValueError, match=re.escape("'10.0.0.0/33' is not an IP network")):
        AllowPolicy.from_setting("127.0.0.0/8,10.0.0.0/33")


def test_the_policy_reads_the_setting_as_settings_stores_it() -> None:
    settings = Settings(webhook_allow_private=" 127.0.0.0/8,::1/128 ")
    policy = AllowPolicy.from_setting(settings.webhook_allow_private)
    assert policy.permits(ipaddress.ip_address("127.0.0.1"))
    assert policy.permits(ipaddress.ip_address("::1"))
    everything = Settings(webhook_allow_private="True").webhook_allow_private
    assert AllowPolicy.from_setting(everything).allow_all_private
    assert AllowPolicy.from_setting(Settings().webhook_allow_private) == AllowPolicy()


# --- check_address ---


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("127.0.0.1", "127.0.0.1 is a loopback address"),
        ("169.254.169.254", "169.254.169.254 is a link-local address"),
        ("100.64.0.1", "100.64.0.1 is a shared address space"),
        ("0.0.0.0", "0.0.0.0 is an unspecified address"),
        ("example.com", "example.com is not an IP address"),
    ],
)
def test_check_address_says_why(address: str, message: str) -> None:
    with pytest.raises(UnsafeTarget) as info:
        check_address(address, DEFAULT)
    assert str(info.value).startswith(message)
    assert info.value.reason == str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("address", [PUBLIC_V4, PUBLIC_V6, "1.1.1.1", "2606:4700:4700::1111"])
def test_check_address_accepts_global_addresses(address: str) -> None:
    check_address(address, DEFAULT)


def passes(address: str, policy: AllowPolicy = DEFAULT) -> bool:
    try:
        check_address(address, policy)
    except UnsafeTarget:
        return False
    return True


@given(st.ip_addresses())
def test_only_global_addresses_pass(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    if passes(str(ip)):
        assert ip.is_global or (ip.ipv4_mapped is not None if ip.version == 6 else False)
    assert passes(str(ip), AllowPolicy(allow_all_private=True))


@given(st.ip_addresses(v=4))
def test_ipv6_wrappings_of_an_ipv4_address_decide_like_it(ip: ipaddress.IPv4Address) -> None:
    packed = int(ip)
    mapped = ipaddress.IPv6Address((0xFFFF << 32) | packed)
    nat64 = ipaddress.IPv6Address((0x0064FF9B << 96) | packed)
    sixtofour = ipaddress.IPv6Address((0x2002 << 112) | (packed << 80))
    expected = passes(str(ip))
    assert passes(str(mapped)) == expected
    if not expected:
        assert not passes(str(nat64))
        assert not passes(str(sixtofour))


# --- validate_url_syntax ---


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/in?x=1#frag",
        "http://hooks.example.com:8080/",
        "HTTPS://Hooks.Example.com/",
        "http://[2606:4700::1111]:8443/",
        "https://bücher.example/",
        "https://e.example/" + "a" * (MAX_URL_LENGTH - len("https://e.example/")),
    ],
)
def test_well_formed_urls_pass_the_syntax_check(url: str) -> None:
    validate_url_syntax(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://127.0.0.1:6379/_INFO", "scheme"),
        ("javascript:alert(1)", "scheme"),
        ("//example.com/", "scheme"),
        ("example.com", "scheme"),
        ("http://", "no host"),
        ("http:///path", "no host"),
        ("https://user:pass@example.com/", "user name or password"),
        ("https://user@example.com/", "user name or password"),
        ("https://@example.com/", "user name or password"),
        ("http://example.com@127.0.0.1/", "user name or password"),
        ("http://example.com:0/", "port"),
        ("http://example.com:99999/", "malformed"),
        ("http://example.com:80a/", "malformed"),
        ("http://[::1/", "malformed"),
        ("http://exa mple.com/", "whitespace"),
        ("http://example.com/\n", "whitespace"),
        ("http://example.com\\@127.0.0.1/", "backslash"),
        ("https://e.example/" + "a" * MAX_URL_LENGTH, "longer than 2048"),
    ],
)
def test_malformed_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(UnsafeTarget, match=message):
        validate_url_syntax(url)


async def test_check_url_applies_the_syntax_check_first() -> None:
    with pytest.raises(UnsafeTarget, match="user name"):
        await check_url("https://u:p@hooks.example.com/", DEFAULT, NoDns())


# --- the aiohttp resolver ---


async def test_guarded_resolver_returns_aiohttp_results_for_checked_addresses() -> None:
    resolver = fake(hooks_example_com=[PUBLIC_V4, PUBLIC_V6])
    guarded = GuardedResolver(DEFAULT, resolver)
    assert isinstance(guarded, AbstractResolver)
    results = await guarded.resolve("hooks.example.com", 443, family=socket.AF_UNSPEC)
    flags = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
    assert results == [
        {
            "hostname": "hooks.example.com",
            "host": PUBLIC_V4,
            "port": 443,
            "family": socket.AF_INET,
            "proto": socket.IPPROTO_TCP,
            "flags": flags,
        },
        {
            "hostname": "hooks.example.com",
            "host": PUBLIC_V6,
            "port": 443,
            "family": socket.AF_INET6,
            "proto": socket.IPPROTO_TCP,
            "flags": flags,
        },
    ]
    assert len(resolver.calls) == 1
    v4_only = await guarded.resolve("hooks.example.com", 443, family=socket.AF_INET)
    assert [result["host"] for result in v4_only] == [PUBLIC_V4]
    await guarded.close()


async def test_guarded_resolver_refuses_a_name_with_any_unsafe_address() -> None:
    guarded = GuardedResolver(DEFAULT, fake(mixed_example=[PUBLIC_V4, "169.254.169.254"]))
    with pytest.raises(UnsafeConnection) as info:
        await guarded.resolve("mixed.example", 80, family=socket.AF_UNSPEC)
    assert_hides_the_resolution(
        info.value, "mixed.example", "169.254.169.254", "a link-local address"
    )
    # An OSError, so aiohttp wraps it like a failed lookup, and still an UnsafeTarget.
    assert isinstance(info.value, OSError)
    assert isinstance(info.value, UnsafeTarget)
    assert is_unsafe_target_error(info.value)


async def test_guarded_resolver_checks_literals_without_dns() -> None:
    guarded = GuardedResolver(DEFAULT, NoDns())
    with pytest.raises(UnsafeConnection, match="loopback"):
        await guarded.resolve("127.0.0.1", 80)
    results = await guarded.resolve(PUBLIC_V4, 80)
    assert [result["host"] for result in results] == [PUBLIC_V4]


async def test_guarded_resolver_reports_an_empty_family_as_a_lookup_error() -> None:
    guarded = GuardedResolver(DEFAULT, fake(v6only_example=[PUBLIC_V6]))
    with pytest.raises(socket.gaierror) as info:
        await guarded.resolve("v6only.example", 80, family=socket.AF_INET)
    assert not is_unsafe_target_error(info.value)


async def test_guarded_resolver_honours_the_policy() -> None:
    guarded = GuardedResolver(
        AllowPolicy.from_setting("10.0.0.0/8"), fake(internal_test=["10.1.2.3"])
    )
    results = await guarded.resolve("internal.test", 8080)
    assert [(r["host"], r["port"]) for r in results] == [("10.1.2.3", 8080)]


# --- the socket factory ---


def test_the_socket_factory_refuses_unsafe_addresses() -> None:
    factory = GuardedSocketFactory(DEFAULT)
    for sockaddr in [("127.0.0.1", 80), ("10.0.0.1", 80)]:
        with pytest.raises(UnsafeConnection):
            factory((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
    with pytest.raises(UnsafeConnection, match="loopback"):
        factory((socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("::1", 80, 0, 0)))


def test_the_socket_factory_makes_unconnected_sockets_for_safe_addresses() -> None:
    factory = GuardedSocketFactory(AllowPolicy.from_setting("127.0.0.0/8"))
    for address in [PUBLIC_V4, "127.0.0.1"]:
        sock = factory((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, 80)))
        with sock:
            assert sock.family == socket.AF_INET
            assert sock.type == socket.SOCK_STREAM
            with pytest.raises(OSError):
                sock.getpeername()  # never connected


async def test_guarded_connector_plugs_in_both_guards() -> None:
    connector = guarded_connector(DEFAULT, NoDns(), limit=5)
    try:
        assert connector.limit == 5
        assert isinstance(connector._resolver, GuardedResolver)
        assert isinstance(connector._socket_factory, GuardedSocketFactory)
    finally:
        await connector.close()


# --- recognising a refusal behind aiohttp's wrapping ---


def connector_error(os_error: OSError) -> aiohttp.ClientConnectorError:
    key = ConnectionKey(
        host="h.example",
        port=80,
        is_ssl=False,
        ssl=True,
        proxy=None,
        proxy_auth=None,
        proxy_headers_hash=None,
    )
    try:
        raise aiohttp.ClientConnectorDNSError(key, os_error) from os_error
    except aiohttp.ClientConnectorError as exc:
        return exc


def test_is_unsafe_target_error_sees_through_aiohttp_wrapping() -> None:
    assert is_unsafe_target_error(UnsafeTarget("x"))
    assert is_unsafe_target_error(connector_error(UnsafeConnection("127.0.0.1 is loopback")))
    assert not is_unsafe_target_error(connector_error(ConnectionRefusedError(111, "refused")))
    assert not is_unsafe_target_error(ValueError("x"))


def test_is_unsafe_target_error_follows_context_and_groups() -> None:
    try:
        try:
            raise UnsafeTarget("inner")
        except UnsafeTarget:
            raise RuntimeError("outer") from None
    except RuntimeError as exc:
        # ``from None`` hides the context from tracebacks but keeps it on the exception.
        assert is_unsafe_target_error(exc)
    group = ExceptionGroup("many", [ValueError("a"), ExceptionGroup("inner", [UnsafeTarget("b")])])
    assert is_unsafe_target_error(group)


def test_is_unsafe_target_error_survives_cycles() -> None:
    first = RuntimeError("a")
    second = RuntimeError("b")
    first.__context__ = second
    second.__context__ = first
    assert not is_unsafe_target_error(first)


# --- host names: IDNA ---

INVALID_IDNA_URLS = [
    "http://xn--a.example/",
    "http://xn--.example/",
    "http://XN--A.example/",
    "http://xn--zz-.example/",
    "http://hooks.xn--n3h.example/",  # a snowman: not allowed in IDNA 2008
    "http://\u2603.example/",
    "http://a..example/",
    "http://" + "a" * 64 + ".example/",
    "http://" + "\u00fc" * 60 + ".example/",
    "http://" + "a." * 127 + "example/",
]


@pytest.mark.parametrize("url", INVALID_IDNA_URLS)
def test_invalid_idna_host_names_are_refused(url: str) -> None:
    with pytest.raises(UnsafeTarget, match="host name"):
        validate_url_syntax(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://xn--bcher-kva.example/",
        "https://b\u00fccher.example/",
        "https://B\u00fcCHER.example./in",
        "https://under_score.example/",
        "https://" + "a" * 63 + ".example/",
    ],
)
def test_valid_host_names_are_accepted(url: str) -> None:
    validate_url_syntax(url)
