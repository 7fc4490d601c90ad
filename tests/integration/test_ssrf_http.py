"""The SSRF guard inside a real aiohttp client, against real receivers on loopback.

Only 127.0.0.0/8 is ever contacted: public addresses appear only in fake DNS answers for
requests that are refused before they connect. 127.0.0.2 stands in for "an address the
policy allows" and 127.0.0.1 for "an internal address", so the allow list ``127.0.0.2/32``
makes the one reachable and the other forbidden. Every connector is wrapped in a test fence
that refuses any socket outside loopback before the guard is even asked, so a broken guard
fails the test instead of sending traffic off this machine.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import ResolveResult

from forecourt.webhooks.ssrf import (
    AllowPolicy,
    GuardedResolver,
    GuardedSocketFactory,
    UnsafeConnection,
    UnsafeTarget,
    check_url,
    guarded_connector,
    is_unsafe_target_error,
)

ALLOWED_HOST = "127.0.0.2"
INTERNAL_HOST = "127.0.0.1"
ALLOW_ONE = AllowPolicy.from_setting(f"{ALLOWED_HOST}/32")
DEFAULT = AllowPolicy()
SAME_PORT_ATTEMPTS = 20
BODY = b'{"type":"ping"}'

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
StartReceiver = Callable[..., Awaitable["Receiver"]]


@dataclass
class Receiver:
    """An aiohttp server on one or more loopback addresses sharing one port."""

    port: int
    runner: web.AppRunner
    seen: list[tuple[str, str]] = field(default_factory=list)  # (local address, path)

    def url(self, host: str, path: str = "/hook") -> str:
        return f"http://{host}:{self.port}{path}"

    def addresses_seen(self) -> list[str]:
        return [address for address, _ in self.seen]


class SequenceResolver:
    """Fake DNS whose answer changes from one lookup to the next (the last one repeats)."""

    def __init__(self, answers: dict[str, Sequence[Sequence[str]]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        sequence = self.answers[host]
        return list(sequence[min(self.calls.count(host), len(sequence)) - 1])


class SpyResolver(GuardedResolver):
    """The guarded resolver, remembering every address it handed to aiohttp."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handed_out: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await super().resolve(host, port, family)
        self.handed_out.extend(result["host"] for result in results)
        return results


class Fence:
    """A socket factory around a connector's own: records every address a socket is made
    for, and refuses anything that is not loopback before passing the rest on."""

    def __init__(self, inner: Callable[[tuple[Any, ...]], socket.socket] | None) -> None:
        self.inner = inner
        self.attempted: list[str] = []
        self.off_machine: list[str] = []

    def __call__(self, addr_info: tuple[Any, ...]) -> socket.socket:
        address = str(addr_info[4][0])
        self.attempted.append(address)
        ip = ipaddress.ip_address(address)
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        if not (ip.is_loopback or (mapped is not None and mapped.is_loopback)):
            self.off_machine.append(address)
            raise OSError(errno.ENETUNREACH, f"test fence: {address} is not on loopback")
        if self.inner is not None:
            return self.inner(addr_info)
        family, type_, proto, _, _ = addr_info
        return socket.socket(family, type_, proto)


class Fences:
    """Puts a :class:`Fence` into connectors; the test fails if one saw an off-machine address."""

    def __init__(self) -> None:
        self.fences: list[Fence] = []

    def __call__(self, connector: aiohttp.TCPConnector) -> aiohttp.TCPConnector:
        fence = Fence(connector._socket_factory)
        connector._socket_factory = fence
        self.fences.append(fence)
        return connector

    def attempted(self) -> list[str]:
        return [address for fence in self.fences for address in fence.attempted]

    def off_machine(self) -> list[str]:
        return [address for fence in self.fences for address in fence.off_machine]


@pytest.fixture
def fence() -> Iterator[Fences]:
    fences = Fences()
    yield fences
    assert fences.off_machine() == [], "a connection was attempted off this machine"


@pytest.fixture
async def start_receiver() -> AsyncIterator[StartReceiver]:
    runners: list[web.AppRunner] = []

    async def start(
        hosts: Sequence[str] = (INTERNAL_HOST,), handler: Handler | None = None
    ) -> Receiver:
        for _ in range(SAME_PORT_ATTEMPTS):
            receiver = await _try_start(hosts, handler)
            if receiver is not None:
                runners.append(receiver.runner)
                return receiver
        pytest.fail(f"could not find a port free on all of {hosts}")

    yield start
    for runner in runners:
        await runner.cleanup()


async def _try_start(hosts: Sequence[str], handler: Handler | None) -> Receiver | None:
    seen: list[tuple[str, str]] = []

    async def record(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        seen.append((request.transport.get_extra_info("sockname")[0], request.path))
        if handler is not None:
            return await handler(request)
        await request.read()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = 0
    try:
        for host in hosts:
            site = web.TCPSite(runner, host, port)
            await site.start()
            if port == 0:
                port = runner.addresses[0][1]
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            return None
        raise
    receiver = Receiver(port=port, runner=runner)
    receiver.seen = seen
    return receiver


async def post(connector: aiohttp.BaseConnector, url: str, **kwargs: Any) -> int:
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(url, data=BODY, **kwargs) as response,
    ):
        await response.read()
        return response.status


# --- the default policy refuses loopback, whatever the spelling ---


@pytest.mark.parametrize(
    "host",
    [INTERNAL_HOST, "[::ffff:127.0.0.1]", "[::1]", "0x7f000001", "localhost"],
)
async def test_the_default_policy_refuses_a_loopback_receiver(
    start_receiver: StartReceiver, fence: Fences, host: str
) -> None:
    receiver = await start_receiver()
    with pytest.raises(aiohttp.ClientConnectorError) as info:
        await post(fence(guarded_connector(DEFAULT)), receiver.url(host))
    assert is_unsafe_target_error(info.value)
    assert isinstance(info.value.os_error, UnsafeConnection)
    # A literal is named for what it is; a name never says what it resolves to.
    if host == "localhost":
        assert "localhost resolves to an address that is not allowed" in str(info.value)
        assert "127.0.0.1" not in str(info.value) and "::1" not in str(info.value)
    else:
        assert "loopback" in str(info.value)
    assert receiver.seen == []


@pytest.mark.parametrize("host", ["2130706433", "017700000001", "127.1"])
async def test_aiohttp_itself_rejects_non_canonical_ipv4_literals(
    start_receiver: StartReceiver, fence: Fences, host: str
) -> None:
    receiver = await start_receiver()
    with pytest.raises(aiohttp.InvalidUrlClientError):
        await post(fence(guarded_connector(AllowPolicy.from_setting("true"))), receiver.url(host))
    assert receiver.seen == []
    assert fence.attempted() == []


async def test_a_name_resolving_to_loopback_is_refused_by_the_resolver(
    start_receiver: StartReceiver, fence: Fences
) -> None:
    receiver = await start_receiver()
    dns = SequenceResolver({"rebind.example": [[INTERNAL_HOST]]})
    connector = fence(aiohttp.TCPConnector(resolver=GuardedResolver(DEFAULT, dns)))
    with pytest.raises(aiohttp.ClientConnectorDNSError) as info:
        await post(connector, receiver.url("rebind.example"))
    assert is_unsafe_target_error(info.value)
    assert "rebind.example resolves to an address that is not allowed" in str(info.value)
    assert "127.0.0.1" not in str(info.value)  # what an internal name resolves to stays inside
    assert receiver.seen == []
    assert fence.attempted() == []


async def test_a_name_with_one_public_and_one_private_address_is_refused(
    start_receiver: StartReceiver, fence: Fences
) -> None:
    receiver = await start_receiver()
    dns = SequenceResolver({"mixed.example": [["93.184.216.34", INTERNAL_HOST]]})
    with pytest.raises(aiohttp.ClientConnectorError) as info:
        await post(fence(guarded_connector(DEFAULT, dns)), receiver.url("mixed.example"))
    assert is_unsafe_target_error(info.value)
    assert receiver.seen == []
    # Refused as a whole at resolution: not even the public address got a socket.
    assert fence.attempted() == []


async def test_a_receiver_that_is_down_is_not_an_unsafe_target(
    start_receiver: StartReceiver, fence: Fences
) -> None:
    receiver = await start_receiver()
    url = receiver.url(INTERNAL_HOST)
    await receiver.runner.cleanup()
    connector = fence(guarded_connector(AllowPolicy.from_setting("127.0.0.0/8")))
    with pytest.raises(aiohttp.ClientConnectorError) as info:
        await post(connector, url)
    assert not is_unsafe_target_error(info.value)


# --- the allow list lets local development through ---


async def test_an_allowlisted_receiver_is_reached(
    start_receiver: StartReceiver, fence: Fences
) -> None:
    receiver = await start_receiver()
    policy = AllowPolicy.from_setting("127.0.0.0/8")
    dns = SequenceResolver({"hooks.test": [[INTERNAL_HOST]]})
    assert await post(fence(guarded_connector(policy)), receiver.url(INTERNAL_HOST)) == 200
    assert (
        await post(fence(guarded_connector(policy, dns)), receiver.url("hooks.test", "/x")) == 200
    )
    assert receiver.seen == [(INTERNAL_HOST, "/hook"), (INTERNAL_HOST, "/x")]


async def test_the_allowlist_admits_only_its_networks(
    start_receiver: StartReceiver, fence: Fences
) -> None:
    receiver = await start_receiver([ALLOWED_HOST, INTERNAL_HOST])
    assert await post(fence(guarded_connector(ALLOW_ONE)), receiver.url(ALLOWED_HOST)) == 200
    with pytest.raises(aiohttp.ClientConnectorError) as info:
        await post(fence(guarded_connector(ALLOW_ONE)), receiver.url(INTERNAL_HOST))
    assert is_unsafe_target_error(info.value)
    assert receiver.addresses_seen() == [ALLOWED_HOST]


# --- redirects ---


async def test_redirects_are_not_followed_and_would_be_refused(
    start_receiver: StartReceiver, fence: Fences
) -> None:
    target = await start_receiver([INTERNAL_HOST])

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(target.url(INTERNAL_HOST, "/internal"))

    origin = await start_receiver([ALLOWED_HOST], handler=redirect)

    async with (
        aiohttp.ClientSession(connector=fence(guarded_connector(ALLOW_ONE))) as session,
        session.post(origin.url(ALLOWED_HOST), data=BODY, allow_redirects=False) as response,
    ):
        assert response.status == 302
        assert response.headers["Location"] == target.url(INTERNAL_HOST, "/internal")
    assert target.seen == []

    # Even a client that follows redirects cannot be steered to an internal IP literal:
    # aiohttp skips the resolver for it, but the socket factory checks it.
    with pytest.raises(aiohttp.ClientConnectorError) as info:
        await post(
            fence(guarded_connector(ALLOW_ONE)), origin.url(ALLOWED_HOST), allow_redirects=True
        )
    assert is_unsafe_target_error(info.value)
    assert origin.addresses_seen() == [ALLOWED_HOST, ALLOWED_HOST]
    assert target.seen == []


async def test_the_resolver_alone_never_sees_ip_literals(
    start_receiver: StartReceiver, fence: Fences
) -> None:
    """Why guarded_connector adds a socket factory: aiohttp bypasses the resolver for IPs.

    If this starts failing, aiohttp has begun resolving literals through the resolver; the
    socket factory is still correct, only this explanation is out of date.
    """
    receiver = await start_receiver()
    resolver_only = aiohttp.TCPConnector(resolver=GuardedResolver(DEFAULT, SequenceResolver({})))
    assert await post(fence(resolver_only), receiver.url(INTERNAL_HOST)) == 200
    assert receiver.addresses_seen() == [INTERNAL_HOST]


# --- DNS rebinding: a connection only ever uses the answer that was checked ---


async def test_a_rebinding_name_is_checked_on_every_lookup(
    start_receiver: StartReceiver, fence: Fences
) -> None:
    receiver = await start_receiver([ALLOWED_HOST, INTERNAL_HOST])
    dns = SequenceResolver({"rebind.example": [[ALLOWED_HOST], [INTERNAL_HOST]]})
    resolver = SpyResolver(ALLOW_ONE, dns)
    connector = aiohttp.TCPConnector(
        resolver=resolver,
        socket_factory=GuardedSocketFactory(ALLOW_ONE),
        use_dns_cache=False,
        force_close=True,
    )
    url = receiver.url("rebind.example")
    async with aiohttp.ClientSession(connector=fence(connector)) as session:
        async with session.post(url, data=BODY) as first:
            assert first.status == 200
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            async with session.post(url, data=BODY):
                pass
    assert is_unsafe_target_error(info.value)
    assert "rebind.example resolves to an address that is not allowed" in str(info.value)
    assert "127.0.0.1" not in str(info.value)
    # One lookup per connection: nothing resolved the name again between check and connect.
    assert dns.calls == ["rebind.example", "rebind.example"]
    # Every socket went to an address the guard had handed out, and only there.
    assert resolver.handed_out == [ALLOWED_HOST]
    assert fence.attempted() == [ALLOWED_HOST]
    assert receiver.addresses_seen() == [ALLOWED_HOST]


async def test_the_dns_cache_holds_only_checked_answers(
    start_receiver: StartReceiver, fence: Fences
) -> None:
    receiver = await start_receiver([ALLOWED_HOST, INTERNAL_HOST])
    dns = SequenceResolver({"rebind.example": [[ALLOWED_HOST], [INTERNAL_HOST]]})
    connector = fence(guarded_connector(ALLOW_ONE, dns, force_close=True))
    try:
        statuses = [await post_with(connector, receiver.url("rebind.example")) for _ in range(3)]
    finally:
        await connector.close()
    assert statuses == [200, 200, 200]
    assert dns.calls == ["rebind.example"]
    assert fence.attempted() == [ALLOWED_HOST] * 3
    assert receiver.addresses_seen() == [ALLOWED_HOST] * 3


async def test_a_check_before_connecting_is_not_enough_but_the_connector_is(
    start_receiver: StartReceiver, fence: Fences
) -> None:
    """The classic rebinding race: a pre-check sees a good answer, the connection a bad one."""
    receiver = await start_receiver([ALLOWED_HOST, INTERNAL_HOST])
    dns = SequenceResolver({"rebind.example": [[ALLOWED_HOST], [INTERNAL_HOST]]})
    url = receiver.url("rebind.example")
    assert await check_url(url, ALLOW_ONE, dns) == [ALLOWED_HOST]
    with pytest.raises(aiohttp.ClientConnectorError) as info:
        await post(fence(guarded_connector(ALLOW_ONE, dns)), url)
    assert is_unsafe_target_error(info.value)
    assert receiver.seen == []
    assert fence.attempted() == []


async def post_with(connector: aiohttp.BaseConnector, url: str) -> int:
    async with (
        aiohttp.ClientSession(connector=connector, connector_owner=False) as session,
        session.post(url, data=BODY) as response,
    ):
        return response.status


# --- link-local addresses and the cloud metadata services ---

DEV_ALLOW = AllowPolicy.from_setting("127.0.0.0/8")  # what local development allows
POLICIES = pytest.mark.parametrize("policy", [DEFAULT, DEV_ALLOW], ids=["default", "dev"])
# AWS, GCP, Azure, OpenStack (169.254.169.254), AWS over IPv6 (fd00:ec2::254), Alibaba
# (100.100.100.200), any other link-local address, IPv4 and IPv6, and spellings of them.
METADATA_LITERALS = [
    "169.254.169.254",
    "169.254.170.2",  # ECS task credentials
    "169.254.0.1",
    "169.254.255.254",
    "100.100.100.200",
    "[fd00:ec2::254]",
    "[fe80::1]",
    "[fe80::a9fe:a9fe]",
    "[febf:ffff::1]",
    "[::ffff:169.254.169.254]",
    "[64:ff9b::a9fe:a9fe]",  # NAT64 form of 169.254.169.254
    "[2002:a9fe:a9fe::1]",  # 6to4 form of it
]
METADATA_ANSWERS = {
    "metadata.google.internal": ["169.254.169.254"],
    "metadata.goog": ["169.254.169.254"],
    "instance-data.ec2.internal": ["169.254.169.254", "93.184.216.34"],
    "metadata.aws.example": ["fd00:ec2::254"],
    "metadata.alibaba.example": ["100.100.100.200"],
    "router.example": ["fe80::1"],
}


class GuardFirst:
    """Around the guard's socket factory: the guard decides first; a socket it would let
    through to an address off this machine is closed at once and noted, never connected."""

    def __init__(self, guard: Callable[[tuple[Any, ...]], socket.socket]) -> None:
        self.guard = guard
        self.let_through: list[str] = []

    def __call__(self, addr_info: tuple[Any, ...]) -> socket.socket:
        made = self.guard(addr_info)
        address = str(addr_info[4][0])
        if not ipaddress.ip_address(address).is_loopback:
            made.close()
            self.let_through.append(address)
            raise OSError(errno.ENETUNREACH, f"test fence: {address} is not on loopback")
        return made


@POLICIES
@pytest.mark.parametrize("host", METADATA_LITERALS)
async def test_link_local_and_metadata_literals_are_refused(policy: AllowPolicy, host: str) -> None:
    connector = guarded_connector(policy)
    fence = GuardFirst(connector._socket_factory)
    connector._socket_factory = fence
    with pytest.raises(aiohttp.ClientConnectorError) as info:
        await post(connector, f"http://{host}/latest/meta-data/iam/security-credentials/")
    assert is_unsafe_target_error(info.value), info.value
    assert isinstance(info.value.os_error, UnsafeConnection)
    assert fence.let_through == []


@POLICIES
@pytest.mark.parametrize("name", sorted(METADATA_ANSWERS))
async def test_names_resolving_to_metadata_or_link_local_addresses_are_refused(
    fence: Fences, policy: AllowPolicy, name: str
) -> None:
    dns = SequenceResolver({name: [METADATA_ANSWERS[name]]})
    with pytest.raises(aiohttp.ClientConnectorError) as info:
        await post(fence(guarded_connector(policy, dns)), f"http://{name}/computeMetadata/v1/")
    assert is_unsafe_target_error(info.value), info.value
    assert dns.calls == [name]
    assert fence.attempted() == []  # refused at resolution: no socket for any answer


@POLICIES
@pytest.mark.parametrize("host", METADATA_LITERALS)
async def test_the_pre_check_refuses_them_too(policy: AllowPolicy, host: str) -> None:
    dns = SequenceResolver({})  # literals need no lookup
    with pytest.raises(UnsafeTarget):
        await check_url(f"http://{host}/", policy, dns)
    assert dns.calls == []
