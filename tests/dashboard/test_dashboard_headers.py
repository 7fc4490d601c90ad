"""The dashboard's security headers, as a unit."""

from __future__ import annotations

import pytest

from forecourt.dashboard.headers import content_security_policy, security_headers


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "forecourt.example.com", "[::1]:8000"])
def test_the_stream_source_is_the_page_s_own_host(host: str) -> None:
    connect = dict(d.split(" ", 1) for d in content_security_policy(host).split("; "))
    assert connect["connect-src"] == f"'self' ws://{host} wss://{host}"


@pytest.mark.parametrize(
    "host",
    [
        None,
        "",
        "evil.example; script-src *",
        "a b",
        "x'y",
        "host:99999999",
        "h\r\nx",
        "trailing.example\n",
    ],
)
def test_an_odd_host_is_never_written_into_the_policy(host: str | None) -> None:
    policy = content_security_policy(host)
    assert "connect-src 'self';" in policy
    if host:
        assert host not in policy


def test_every_header_is_there() -> None:
    headers = security_headers("localhost:8000")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
