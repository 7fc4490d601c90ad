"""FORECOURT_TRUSTED_PROXIES: behind a trusted proxy the client address comes from
X-Forwarded-For or Forwarded, for the rate limits, the audit log and the sign-in throttle;
from anyone else the headers are ignored. The test client connects from 127.0.0.1."""

from __future__ import annotations

from typing import Any

import httpx

from conftest import Harness

KEYS = "/api/v1/keys"


def spelled(headers: dict[str, str]) -> dict[str, str]:
    """``x_forwarded_for=...`` as the header ``x-forwarded-for``."""
    return {k.replace("_", "-"): v for k, v in headers.items()}


async def anonymous(h: Harness, **headers: str) -> httpx.Response:
    return await h.client.get(KEYS, headers=spelled(headers))


async def audit_ip_of_new_key(h: Harness, **headers: str) -> str | None:
    created = await h.client.post(
        KEYS,
        json={"name": "via proxy", "scopes": ["keys:read"]},
        headers={**h.auth(), **spelled(headers)},
    )
    assert created.status_code == 201, created.text
    entries = await h.client.get(
        "/api/v1/audit-log",
        params={"target_id": created.json()["id"], "action": "key.created"},
        headers=h.auth(),
    )
    assert entries.status_code == 200, entries.text
    items = entries.json()["items"]
    assert len(items) == 1
    ip: str | None = items[0]["ip"]
    return ip


async def test_behind_a_trusted_proxy_each_client_has_its_own_ip_limit(
    harness_factory: Any,
) -> None:
    h: Harness = await harness_factory(
        ip_rate_limit={"minute": 2}, trusted_proxies="127.0.0.0/8, 10.0.0.0/8"
    )
    # The client forged "6.6.6.6"; the proxies appended the real address and their own.
    a = {"x_forwarded_for": "6.6.6.6, 198.51.100.1, 10.1.2.3"}
    assert (await anonymous(h, **a)).status_code == 401
    assert (await anonymous(h, **a)).status_code == 401
    assert (await anonymous(h, **a)).status_code == 429
    # A forged left part does not make another client.
    assert (await anonymous(h, x_forwarded_for="7.7.7.7, 198.51.100.1")).status_code == 429
    # Another client behind the same proxy has a bucket of its own (Forwarded works too).
    b = {"forwarded": 'for="[2001:db8::2]:5000";proto=https'}
    assert (await anonymous(h, **b)).status_code == 401
    assert (await anonymous(h, **b)).status_code == 401
    assert (await anonymous(h, **b)).status_code == 429
    # The proxy's own requests (no header) are the proxy's.
    assert (await anonymous(h)).status_code == 401


async def test_without_trusted_proxies_the_headers_are_ignored(harness_factory: Any) -> None:
    h: Harness = await harness_factory(ip_rate_limit={"minute": 2})
    # The owner key, once known, is not subject to the address's limit.
    assert (await h.client.get(KEYS, headers=h.auth())).status_code == 200
    assert (await anonymous(h, x_forwarded_for="198.51.100.1")).status_code == 401
    assert (await anonymous(h, x_forwarded_for="198.51.100.2")).status_code == 401
    # Every request was 127.0.0.1's, whatever it claimed.
    assert (await anonymous(h, forwarded="for=198.51.100.3")).status_code == 429
    assert await audit_ip_of_new_key(h, x_forwarded_for="198.51.100.4") == "127.0.0.1"


async def test_an_untrusted_peer_cannot_name_another_address(harness_factory: Any) -> None:
    # Trusting only 10.0.0.0/8: the test client (127.0.0.1) is not a proxy.
    h: Harness = await harness_factory(trusted_proxies="10.0.0.0/8")
    assert await audit_ip_of_new_key(h, x_forwarded_for="198.51.100.4") == "127.0.0.1"


async def test_audit_entries_name_the_client_behind_the_proxy(harness_factory: Any) -> None:
    h: Harness = await harness_factory(trusted_proxies="127.0.0.1")
    assert await audit_ip_of_new_key(h, x_forwarded_for="198.51.100.5") == "198.51.100.5"
    assert (
        await audit_ip_of_new_key(h, forwarded='for="[2001:db8::5]:1";by=127.0.0.1')
        == "2001:db8::5"
    )


async def test_sign_in_audit_and_throttle_use_the_client_behind_the_proxy(
    harness_factory: Any,
) -> None:
    h: Harness = await harness_factory(trusted_proxies="127.0.0.1", signin_lockout_failures=2)
    created = await h.client.post(
        "/api/v1/users",
        json={"email": "proxied@example.com", "password": "correct horse battery"},
        headers=h.auth(),
    )
    assert created.status_code == 201, created.text
    body = {"email": "proxied@example.com", "password": "wrong horse battery"}
    for _ in range(2):
        response = await h.client.post(
            "/api/v1/auth/login", json=body, headers={"X-Forwarded-For": "198.51.100.9"}
        )
        assert response.status_code == 401
    locked = await h.client.post(
        "/api/v1/auth/login", json=body, headers={"X-Forwarded-For": "198.51.100.9"}
    )
    assert locked.status_code == 429
    # The proxy itself, or another client, is not locked out.
    other = await h.client.post("/api/v1/auth/login", json=body)
    assert other.status_code == 401
    entries = await h.client.get(
        "/api/v1/audit-log", params={"action": "user.sign_in_failed"}, headers=h.auth()
    )
    ips = sorted(e["ip"] for e in entries.json()["items"])
    assert ips == ["127.0.0.1", "198.51.100.9", "198.51.100.9", "198.51.100.9"]

    good = await h.client.post(
        "/api/v1/auth/login",
        json={**body, "password": "correct horse battery"},
        headers={"X-Forwarded-For": "198.51.100.10"},
    )
    assert good.status_code == 200, good.text
    signed_in = await h.client.get(
        "/api/v1/audit-log", params={"action": "user.signed_in"}, headers=h.auth()
    )
    assert [e["ip"] for e in signed_in.json()["items"]] == ["198.51.100.10"]
