"""Datagrams through the egress proxy: to a declared host:port only, past the SSRF guard,
within the bounds; a refused call sends nothing."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator

import pytest
from sandbox_support import sandbox

from forecourt.plugins.sandbox.egress import (
    MAX_DATAGRAM_BYTES,
    MAX_DATAGRAMS_PER_CALL,
    Egress,
    Refused,
    check_declared_datagram,
    parse_hosts,
)

WAIT_S = 30.0  # only catches a hang


class Listener:
    """A UDP socket on 127.0.0.1 that keeps what it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]

    def receive(self, count: int) -> list[bytes]:
        self.sock.settimeout(WAIT_S)
        return [self.sock.recv(65536) for _ in range(count)]

    def pending(self) -> list[bytes]:
        """What has arrived and not been read (a refused call must leave this empty; the
        proof it would have arrived is the marker sent after it)."""
        self.sock.setblocking(False)
        seen = []
        try:
            while True:
                seen.append(self.sock.recv(65536))
        except BlockingIOError:
            return seen
        finally:
            self.sock.setblocking(True)


@pytest.fixture
def listener() -> Iterator[Listener]:
    udp = Listener()
    try:
        yield udp
    finally:
        udp.sock.close()


async def test_datagrams_reach_a_declared_loopback_listener(listener: Listener) -> None:
    target = f"127.0.0.1:{listener.port}"
    lines = ["a:1|c", "b:2.5|g|#env:test", "c:3|g"]
    async with sandbox(allow_private="127.0.0.0/8") as box:
        answer = await box.output(
            "datagrams", {"target": target, "datagrams": lines}, network_hosts=(target,)
        )
    assert answer == {"sent": 3}
    assert sorted(listener.receive(3)) == sorted(line.encode() for line in lines)


async def test_refused_datagrams_send_nothing(listener: Listener) -> None:
    """Undeclared host or port, a private address without the allow list, an oversized
    datagram, too many: each refused with why, and nothing arrives (a marker sent after
    them is the first thing the listener reads)."""
    target = f"127.0.0.1:{listener.port}"
    other = f"127.0.0.1:{listener.port + 1}"
    line = ["x:1|c"]
    cases = [
        ({"target": target, "datagrams": line}, (other,), "not among"),
        ({"target": "127.0.0.2:8125", "datagrams": line}, (target,), "not among"),
        ({"target": "127.0.0.1", "datagrams": line}, ("127.0.0.1",), "host:port"),
    ]
    async with sandbox(allow_private="false") as strict:
        request = {"target": target, "datagrams": line}
        answer = await strict.output("datagrams", request, network_hosts=(target,))
        assert answer["error"] == "EgressRefused", answer
        assert "SSRF guard" in answer["message"] and "loopback" in answer["message"]
    async with sandbox(allow_private="127.0.0.0/8") as box:
        for request, hosts, message in cases:
            answer = await box.output("datagrams", request, network_hosts=hosts)
            assert answer["error"] == "EgressRefused", (request, answer)
            assert message in answer["message"], answer
        big = "x" * (MAX_DATAGRAM_BYTES + 1)
        answer = await box.output(
            "datagrams", {"target": target, "datagrams": ["ok:1|c", big]}, network_hosts=(target,)
        )
        assert answer["error"] == "ValueError" and "over 8192 bytes" in answer["message"]
        many = ["x:1|c"] * (MAX_DATAGRAMS_PER_CALL + 1)
        answer = await box.output(
            "datagrams", {"target": target, "datagrams": many}, network_hosts=(target,)
        )
        assert answer["error"] == "ValueError" and "at most 1000" in answer["message"]
        marker = await box.output(
            "datagrams", {"target": target, "datagrams": ["marker:1|c"]}, network_hosts=(target,)
        )
        assert marker == {"sent": 1}
    assert listener.receive(1) == [b"marker:1|c"]
    assert listener.pending() == []


async def test_the_proxy_checks_the_bounds_itself(listener: Listener) -> None:
    """A worker that skips the helper's checks meets the same bounds at the proxy."""
    target = f"127.0.0.1:{listener.port}"
    rules = parse_hosts([target])
    egress = Egress("127.0.0.0/8")
    big = base64.b64encode(b"x" * (MAX_DATAGRAM_BYTES + 1)).decode()
    for request, message in (
        ({"op": "datagrams", "target": target, "datagrams": [big]}, "datagram 0 is over"),
        ({"op": "datagrams", "target": target, "datagrams": ["eA=="] * 1001}, "at most 1000"),
        ({"op": "datagrams", "target": target, "datagrams": ["not base64!"]}, "base64"),
        ({"op": "datagrams", "target": target, "datagrams": [""]}, "empty"),
        ({"op": "datagrams", "target": target, "datagrams": "eA=="}, "a list"),
        ({"op": "datagrams", "datagrams": ["eA=="]}, "no target"),
    ):
        answer = await egress.answer(request, rules)
        assert answer["ok"] is False and answer["refused"] is True, (request, answer)
        assert message in answer["message"], answer
    sent = await egress.answer({"op": "datagrams", "target": target, "datagrams": ["eA=="]}, rules)
    assert sent == {"ok": True, "sent": 1}
    assert listener.receive(1) == [b"x"]
    assert listener.pending() == []


@pytest.mark.parametrize(
    ("target", "allowed"),
    [
        ("127.0.0.1:8125", True),
        ("stats.example.com:8125", True),
        ("a.stats.example.com:8125", False),  # an exact name covers no subdomain
        ("x.metrics.test:9125", True),
        ("127.0.0.1:8126", False),
        ("stats.example.com:80", False),  # a port-less rule is for HTTP only
        ("metrics.test:9125", False),
    ],
)
def test_a_datagram_target_needs_its_exact_port_declared(target: str, allowed: bool) -> None:
    rules = parse_hosts(
        ["127.0.0.1:8125", "stats.example.com:8125", "*.metrics.test:9125", "stats.example.com"]
    )
    if allowed:
        assert check_declared_datagram(target, rules)[1] == int(target.rsplit(":", 1)[1])
    else:
        with pytest.raises(Refused, match="not among"):
            check_declared_datagram(target, rules)
