"""Which requests the egress proxy lets out: declared hosts, ports and ``*.`` wildcards, and
well-formed timeouts; what it does with a failure of its own."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from forecourt.plugins.sandbox.egress import (
    DEFAULT_TIMEOUT_S,
    MAX_TIMEOUT_S,
    MIN_TIMEOUT_S,
    Egress,
    Refused,
    check_declared,
    parse_hosts,
)
from forecourt.plugins.sandbox.egress import _parse as parse_request
from forecourt.plugins.sandbox.protocol import encode

RULES = parse_hosts(["*.example.com", "*.api.test:8443", "exact.example.org", "10.0.0.5:9000"])


@pytest.mark.parametrize(
    "url",
    [
        "https://api.example.com/v1",
        "http://a.b.example.com/",  # any depth
        "https://API.Example.COM./",  # case and a final dot are normalised
        "https://x.api.test:8443/",
        "https://exact.example.org/",
        "http://10.0.0.5:9000/",
    ],
)
def test_declared_requests_go_out(url: str) -> None:
    check_declared(url, RULES)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/",  # the apex is not a subdomain
        "https://badexample.com/",
        "https://api.example.com.evil.net/",
        "https://api.example.com:8443/",  # a wildcard without a port: the default port only
        "https://x.api.test/",  # a wildcard with a port: that port only
        "https://api.test:8443/",
        "https://sub.exact.example.org/",  # an exact host covers no subdomain
        "http://10.0.0.5/",
        "https://*.example.com/",  # a pattern is not a host
    ],
)
def test_undeclared_requests_are_refused(url: str) -> None:
    with pytest.raises(Refused, match="not among the hosts"):
        check_declared(url, RULES)


def test_a_wildcard_never_covers_an_ip_address() -> None:
    rules = parse_hosts(["*.0.0.1:80", "*.1.1"])
    for url in ("http://127.0.0.1/", "http://[::1]/", "http://1.1.1.1/"):
        with pytest.raises(Refused):
            check_declared(url, rules)


@pytest.mark.parametrize("entry", ["*", "*.com", "a*.example.com", "*.*.example.com", "x.*.com"])
def test_other_wildcards_are_not_rules(entry: str) -> None:
    with pytest.raises(ValueError, match="only a leading"):
        parse_hosts([entry])


@pytest.mark.parametrize("seconds", [float("nan"), float("inf"), -float("inf"), "5", True, [1]])
async def test_a_timeout_that_is_not_a_finite_number_is_refused(seconds: object) -> None:
    egress = Egress("")
    try:
        answer = await egress.fetch({"url": "https://api.example.com/", "timeout": seconds}, RULES)
    finally:
        await egress.close()
    assert answer == {
        "ok": False,
        "refused": True,
        "message": "timeout must be a finite number of seconds",
    }


@pytest.mark.parametrize(
    ("timeout", "seconds"),
    [(None, DEFAULT_TIMEOUT_S), (0, MIN_TIMEOUT_S), (2.5, 2.5), (10**9, MAX_TIMEOUT_S)],
)
def test_a_finite_timeout_is_clamped(timeout: object, seconds: float) -> None:
    request = {"url": "https://api.example.com/"}
    if timeout is not None:
        request["timeout"] = timeout
    assert parse_request(request)[4] == seconds


async def test_an_unexpected_failure_is_logged_not_swallowed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug on the proxy's side leaves the worker without an answer, as garbage does, but
    unlike garbage it is logged."""

    class Broken(Egress):
        async def fetch(self, request: object, rules: object) -> dict[str, object]:
            raise RuntimeError("a bug in the proxy")

    egress = Broken("")
    path = tmp_path / "egress.sock"
    server = await egress.serve(path, ("api.example.com",))
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(encode({"url": "https://api.example.com/"}))
        await writer.drain()
        assert await reader.read() == b""  # closed without an answer
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
        await egress.close()
    assert any(
        record.levelname == "ERROR" and "a bug in the proxy" in (record.exc_text or "")
        for record in caplog.records
    ), caplog.records


@pytest.mark.parametrize(
    ("timeout", "error"), [(float("nan"), ValueError), (float("inf"), ValueError), ("5", TypeError)]
)
def test_the_plugin_side_refuses_a_timeout_before_asking(
    monkeypatch: pytest.MonkeyPatch, timeout: object, error: type[Exception]
) -> None:
    import forecourt_plugin

    monkeypatch.setattr(forecourt_plugin, "_egress_socket", "/nonexistent/egress.sock")
    with pytest.raises(error, match="seconds"):
        forecourt_plugin.fetch("https://api.example.com/", timeout=timeout)  # type: ignore[arg-type]
