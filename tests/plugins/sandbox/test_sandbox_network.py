"""The network: none at all, unless hosts are declared, and then only through the egress proxy."""

from __future__ import annotations

import errno
import socket
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web
from sandbox_support import sandbox


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[int, list[str]]]:
    """An HTTP server on 127.0.0.1: its port, and the paths it was asked for."""
    seen: list[str] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        seen.append(request.path)
        if request.path == "/redirect":
            raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")
        body = await request.read()
        return web.json_response(
            {"path": request.path, "method": request.method, "body": body.decode()}
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield port, seen
    finally:
        await runner.cleanup()


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on the host's loopback that accepts connections."""
    server = socket.create_server(("127.0.0.1", 0))
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


async def test_loopback_is_unreachable(listener: int) -> None:
    async with sandbox() as box:
        for port in (5432, listener):
            seen = await box.output("connect", ["127.0.0.1", port])
            assert seen["errno"] == errno.EAFNOSUPPORT, seen  # seccomp: no inet sockets


async def test_network_namespace_alone_has_no_route(listener: int) -> None:
    """With the socket filter off, the network namespace still reaches nothing."""
    async with sandbox(disabled=("seccomp", "landlock")) as box:
        for port in (5432, listener):
            seen = await box.output("connect", ["127.0.0.1", port])
            assert seen["errno"] == errno.ENETUNREACH, seen


async def test_fetch_reaches_a_declared_loopback_receiver(receiver: tuple[int, list[str]]) -> None:
    port, seen = receiver
    async with sandbox(allow_private="127.0.0.0/8") as box:
        answer = await box.output(
            "fetch", {"url": f"http://127.0.0.1:{port}/hello"}, network_hosts=(f"127.0.0.1:{port}",)
        )
    assert answer["status"] == 200
    assert '"path": "/hello"' in answer["body"]
    assert seen == ["/hello"]


class LoopbackResolver:
    """DNS for the tests: every name under ``forecourt.test`` is 127.0.0.1, nothing else exists."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host == "forecourt.test" or host.endswith(".forecourt.test"):
            return ["127.0.0.1"]
        raise OSError(f"{host} does not resolve")


async def test_fetch_reaches_a_subdomain_of_a_wildcard_rule(
    receiver: tuple[int, list[str]],
) -> None:
    port, seen = receiver
    resolver = LoopbackResolver()
    hosts = (f"*.forecourt.test:{port}",)
    async with sandbox(resolver=resolver, allow_private="127.0.0.0/8") as box:
        answer = await box.output(
            "fetch", {"url": f"http://api.forecourt.test:{port}/hello"}, network_hosts=hosts
        )
        for url in (f"http://forecourt.test:{port}/", f"http://api.forecourt.test:{port + 1}/"):
            refused = await box.output("fetch", {"url": url}, network_hosts=hosts)
            assert refused["error"] == "EgressRefused", (url, refused)
    assert answer["status"] == 200
    assert '"path": "/hello"' in answer["body"]
    assert seen == ["/hello"]
    assert resolver.asked == ["api.forecourt.test"]  # refused requests are never looked up


async def test_fetch_refuses_undeclared_hosts(receiver: tuple[int, list[str]]) -> None:
    port, seen = receiver
    hosts = (f"127.0.0.1:{port + 1}", "api.example.com")
    async with sandbox() as box:
        for url in (
            f"http://127.0.0.1:{port}/",
            "http://example.com/",
            "https://api.example.com:8443/",
        ):
            answer = await box.output("fetch", {"url": url}, network_hosts=hosts)
            assert answer["error"] == "EgressRefused", (url, answer)
            assert "not among the hosts this plugin declared" in answer["message"]
    assert seen == []


async def test_ssrf_guard_applies_to_declared_hosts(receiver: tuple[int, list[str]]) -> None:
    port, seen = receiver
    async with sandbox(allow_private="false") as box:
        answer = await box.output(
            "fetch", {"url": f"http://127.0.0.1:{port}/"}, network_hosts=(f"127.0.0.1:{port}",)
        )
    assert answer["error"] == "EgressRefused"
    assert "SSRF guard" in answer["message"] and "loopback" in answer["message"]
    assert seen == []


async def test_redirects_are_returned_not_followed(receiver: tuple[int, list[str]]) -> None:
    port, seen = receiver
    async with sandbox() as box:
        answer = await box.output(
            "fetch",
            {"url": f"http://127.0.0.1:{port}/redirect"},
            network_hosts=(f"127.0.0.1:{port}",),
        )
    assert answer["status"] == 302
    assert answer["headers"]["Location"].startswith("http://169.254.169.254/")
    assert seen == ["/redirect"]


async def test_without_declared_hosts_fetch_is_not_available() -> None:
    async with sandbox() as box:
        answer = await box.output("fetch", {"url": "http://example.com/"})
    assert answer["error"] == "NotAvailable"
