"""Sign-in throttling: per (account, address) and per account, growing waits then a lockout
(429 with Retry-After), the same for unknown accounts; every failure audited without the
password; the password verifier runs for unknown accounts too."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from conftest import Harness
from forecourt.users import service as users_service

LOGIN = "/api/v1/auth/login"
PASSWORD = "correct horse battery"
WRONG = "wrong horse battery"
EMAIL = "throttled@example.com"


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def start(harness_factory: Any, **settings: Any) -> tuple[Harness, Clock]:
    h: Harness = await harness_factory(ip_rate_limit={"minute": 10_000}, **settings)
    clock = Clock()
    h.fc.signin_throttle.clock = clock
    response = await h.client.post(
        "/api/v1/users",
        json={"email": EMAIL, "password": PASSWORD, "role": "member"},
        headers=h.auth(),
    )
    assert response.status_code == 201, response.text
    return h, clock


async def login(
    h: Harness, password: str, email: str = EMAIL, ip: str | None = None
) -> httpx.Response:
    headers = {"X-Forwarded-For": ip} if ip else {}
    return await h.client.post(LOGIN, json={"email": email, "password": password}, headers=headers)


def assert_throttled(response: httpx.Response, retry_after: int, locked: bool) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == str(retry_after)
    detail = response.json()["detail"]
    assert "Too many failed sign-ins" in detail
    assert ("locked" in detail) is locked, detail
    assert f"{retry_after} s" in detail


async def failures_in_audit(h: Harness) -> list[dict[str, Any]]:
    response = await h.client.get(
        "/api/v1/audit-log",
        params={"action": "user.sign_in_failed", "limit": 200},
        headers=h.auth(),
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_waits_grow_then_the_account_locks(harness_factory: Any) -> None:
    # 8 failures per (account, address) lock; the first 4 are free.
    h, clock = await start(harness_factory, signin_lockout_failures=8, signin_lockout_s=600)
    for _ in range(4):
        assert (await login(h, WRONG)).status_code == 401
    for wait in (1, 2, 4):
        assert (await login(h, WRONG)).status_code == 401
        # Too soon: refused without checking anything, even with the right password.
        assert_throttled(await login(h, PASSWORD), wait, locked=False)
        clock.advance(wait - 0.5)
        assert_throttled(await login(h, WRONG), 1, locked=False)
        clock.advance(0.5)
    # The 8th failure locks.
    assert (await login(h, WRONG)).status_code == 401
    assert_throttled(await login(h, PASSWORD), 600, locked=True)
    clock.advance(599)
    assert_throttled(await login(h, PASSWORD), 1, locked=True)
    clock.advance(1)
    # After the lockout the right password works, and the count starts again.
    assert (await login(h, PASSWORD)).status_code == 200
    for _ in range(4):
        assert (await login(h, WRONG)).status_code == 401
    assert (await login(h, PASSWORD)).status_code == 200


async def test_unknown_accounts_are_throttled_the_same_way(harness_factory: Any) -> None:
    h, clock = await start(harness_factory, signin_lockout_failures=4, signin_lockout_s=300)
    known: list[int] = []
    unknown: list[int] = []
    for _ in range(6):
        known.append((await login(h, WRONG)).status_code)
        unknown.append((await login(h, WRONG, email="nobody@example.com")).status_code)
        clock.advance(0.25)
    assert known == unknown == [401, 401, 401, 429, 429, 429]


async def test_addresses_are_throttled_apart_and_the_account_as_a_whole(
    harness_factory: Any,
) -> None:
    # Per (account, address): lock at 2. Per account: waits after 5, lock at 10.
    h, clock = await start(
        harness_factory,
        signin_lockout_failures=2,
        signin_lockout_s=900,
        trusted_proxies="127.0.0.0/8",
    )
    assert (await login(h, WRONG, ip="198.51.100.1")).status_code == 401
    assert (await login(h, WRONG, ip="198.51.100.1")).status_code == 401
    assert_throttled(await login(h, PASSWORD, ip="198.51.100.1"), 900, locked=True)
    # Another address is not locked out by the first one's failures.
    assert (await login(h, PASSWORD, ip="198.51.100.2")).status_code == 200
    # A guesser spread over many addresses meets the account's own limit.
    statuses = []
    for i in range(10, 20):
        statuses.append((await login(h, WRONG, ip=f"203.0.113.{i}")).status_code)
    assert statuses[:5] == [401] * 5
    assert statuses[5] == 401  # the 6th starts the account's waits
    assert statuses[6:] == [429] * 4
    assert_throttled(await login(h, PASSWORD, ip="198.51.100.3"), 1, locked=False)
    clock.advance(1)
    assert (await login(h, PASSWORD, ip="198.51.100.3")).status_code == 200


async def test_every_failure_is_audited_without_the_password(harness_factory: Any) -> None:
    h, _clock = await start(
        harness_factory, signin_lockout_failures=2, trusted_proxies="127.0.0.0/8"
    )
    secret_guess = "guess-7f3a9c-not-the-password"
    assert (await login(h, secret_guess, ip="198.51.100.7")).status_code == 401
    assert (await login(h, secret_guess, email="Nobody@Example.com")).status_code == 401
    assert (await login(h, secret_guess, ip="198.51.100.7")).status_code == 401
    assert (await login(h, secret_guess, ip="198.51.100.7")).status_code == 429
    # An unknown tenant has no log to write to, and nothing is written anywhere else.
    other = await h.client.post(
        LOGIN, json={"email": EMAIL, "password": secret_guess, "tenant": "no-such-tenant"}
    )
    assert other.status_code == 401

    entries = await failures_in_audit(h)
    reasons = sorted((e["after"]["email"], e["after"]["reason"], e["ip"]) for e in entries)
    assert reasons == sorted(
        [
            (EMAIL, "wrong_password", "198.51.100.7"),
            (EMAIL, "wrong_password", "198.51.100.7"),
            ("nobody@example.com", "unknown_account", "127.0.0.1"),
            (EMAIL, "throttled", "198.51.100.7"),
        ]
    )
    users = (await h.client.get("/api/v1/users", headers=h.auth())).json()
    user_id = next(u["id"] for u in users if u["email"] == EMAIL)
    for entry in entries:
        assert entry["actor_type"] == "user"
        assert entry["actor_id"] is None
        assert entry["target_type"] == "user"
        if entry["after"]["reason"] == "wrong_password":
            assert entry["target_id"] == user_id
    raw = orjson.dumps(entries).decode()
    assert secret_guess not in raw
    assert PASSWORD not in raw


async def test_the_verifier_runs_for_unknown_accounts_too(
    harness_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    h, _clock = await start(harness_factory)
    calls: list[str] = []
    real = users_service.verify_password

    def counting(password_hash: str, password: str) -> bool:
        calls.append(password_hash)
        return real(password_hash, password)

    monkeypatch.setattr(users_service, "verify_password", counting)
    assert (await login(h, WRONG)).status_code == 401
    assert (await login(h, WRONG, email="nobody@example.com")).status_code == 401
    unknown_tenant = await h.client.post(
        LOGIN, json={"email": EMAIL, "password": WRONG, "tenant": "no-such-tenant"}
    )
    assert unknown_tenant.status_code == 401
    assert len(calls) == 3
    # Every one was a real argon2id verification.
    assert all(c.startswith("$argon2id$") for c in calls)
    # The unknown ones ran against the dummy hash, not a short cut.
    assert calls[1] == calls[2] != calls[0]
    # Same answer either way.
    assert (await login(h, WRONG)).json()["detail"] == (
        await login(h, WRONG, email="nobody@example.com")
    ).json()["detail"]


async def test_every_node_sees_the_same_counts(harness_factory: Any, backend: str) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite nodes keep the sign-in throttle in memory, one per node")
    a, clock = await start(harness_factory, signin_lockout_failures=2, signin_lockout_s=300)
    b: Harness = await harness_factory(
        ip_rate_limit={"minute": 10_000}, signin_lockout_failures=2, signin_lockout_s=300
    )
    b.fc.signin_throttle.clock = clock
    assert (await login(a, WRONG)).status_code == 401
    assert (await login(b, WRONG)).status_code == 401
    assert_throttled(await login(a, PASSWORD), 300, locked=True)
    assert_throttled(await login(b, PASSWORD), 300, locked=True)
    clock.advance(300)
    assert (await login(b, PASSWORD)).status_code == 200
