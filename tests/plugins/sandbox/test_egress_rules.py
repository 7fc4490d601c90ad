"""Which requests the egress proxy lets out: declared hosts, ports and ``*.`` wildcards."""

from __future__ import annotations

import pytest

from forecourt.plugins.sandbox.egress import Refused, check_declared, parse_hosts

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
