"""Signing in with an API key (POST /api/v1/auth/key): the dashboard's sign-in with the owner
key, or any valid key. The session gets the same cookies as a password sign-in and acts as
the key, never more; it ends at once when the key is revoked or expires, or its tenant is
suspended, on every node. Every bad key gets the same 401 and no session; failures are
throttled per address; the key is never stored, echoed, logged or audited."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, select, update

from conftest import Harness, problem
from forecourt.keys import format as key_format
from forecourt.keys.models import ApiKey
from forecourt.users.models import UserSession

KEY_LOGIN = "/api/v1/auth/key"
SESSION_COOKIE = "fc_session"
CSRF_COOKIE = "fc_csrf"
MANY = {"minute": 10_000}


def set_cookies(response: httpx.Response) -> dict[str, dict[str, str]]:
    """Each Set-Cookie of the response: name -> {"value": ..., attribute (lowercase): value}."""
    found: dict[str, dict[str, str]] = {}
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        value, *attributes = rest.split(";")
        entry = {"value": value}
        for attribute in attributes:
            key, _, attr_value = attribute.strip().partition("=")
            entry[key.lower()] = attr_value
        found[name.strip()] = entry
    return found


class Session:
    """A session's cookie and CSRF token, sent explicitly (the cookie is Secure and the test
    client speaks plain http)."""

    def __init__(self, token: str, csrf: str, body: dict[str, Any]) -> None:
        self.token = token
        self.csrf = csrf
        self.body = body

    def read(self) -> dict[str, str]:
        return {"Cookie": f"{SESSION_COOKIE}={self.token}; {CSRF_COOKIE}={self.csrf}"}

    def write(self) -> dict[str, str]:
        return {**self.read(), "X-CSRF-Token": self.csrf}


async def sign_in(h: Harness, key: str, client: httpx.AsyncClient | None = None) -> Session:
    response = await (client or h.client).post(KEY_LOGIN, json={"key": key})
    assert response.status_code == 200, response.text
    token = set_cookies(response)[SESSION_COOKIE]["value"]
    assert token
    (client or h.client).cookies.clear()
    return Session(token, response.json()["csrf_token"], response.json())


async def sessions_count(h: Harness) -> int:
    async with h.fc.sessionmaker() as session:
        count = await session.scalar(select(func.count()).select_from(UserSession))
    return int(count or 0)


async def owner_key_id(h: Harness) -> str:
    me = await h.client.get("/api/v1/auth/me", headers=h.auth())
    assert me.status_code == 200, me.text
    key_id: str = me.json()["actor_id"]
    return key_id


async def test_the_owner_key_signs_in_and_its_session_reads_and_writes(
    harness: Harness,
) -> None:
    h = harness
    response = await h.client.post(KEY_LOGIN, json={"key": h.owner_key})
    assert response.status_code == 200, response.text
    h.client.cookies.clear()
    body = response.json()
    key_id = await owner_key_id(h)
    assert body["key"]["id"] == key_id
    assert body["key"]["prefix"] == key_format.display_prefix(h.owner_key)
    assert "system:admin" in body["key"]["scopes"]
    assert h.owner_key not in response.text
    # The same cookies as a password sign-in: HttpOnly, Secure, SameSite=Lax session; the
    # CSRF token in a readable SameSite=Strict cookie.
    cookies = set_cookies(response)
    session_cookie, csrf_cookie = cookies[SESSION_COOKIE], cookies[CSRF_COOKIE]
    assert "httponly" in session_cookie and "secure" in session_cookie
    assert session_cookie["samesite"].lower() == "lax" and session_cookie["path"] == "/"
    assert int(session_cookie["max-age"]) == h.fc.settings.session_ttl_s
    assert "httponly" not in csrf_cookie and csrf_cookie["samesite"].lower() == "strict"
    assert csrf_cookie["value"] == body["csrf_token"] != session_cookie["value"]
    assert h.owner_key not in session_cookie["value"]
    session = Session(session_cookie["value"], body["csrf_token"], body)

    me = await h.client.get("/api/v1/auth/me", headers=session.read())
    assert me.status_code == 200, me.text
    described = me.json()
    assert described["actor_type"] == "key" and described["actor_id"] == key_id
    assert described["via_cookie"] is True
    assert described["key"] == body["key"]
    assert "user" not in described
    # Reads, and writes with the CSRF token (refused without it).
    listed = await h.client.get("/api/v1/keys", headers=session.read())
    assert listed.status_code == 200, listed.text
    made = {"name": "made in the dashboard", "scopes": ["events:read"]}
    problem(
        await h.client.post("/api/v1/keys", json=made, headers=session.read()), 403, "csrf-failed"
    )
    created = await h.client.post("/api/v1/keys", json=made, headers=session.write())
    assert created.status_code == 201, created.text
    assert created.json()["created_by"] == key_id
    # The audit log names the key as the actor of the sign-in and of the write.
    audit = await h.client.get(
        "/api/v1/audit-log", params={"action": "key.signed_in"}, headers=h.auth()
    )
    [entry] = audit.json()["items"]
    assert entry["actor_type"] == "key" and entry["actor_id"] == key_id

    # Sign-out ends it.
    out = await h.client.post("/api/v1/auth/logout", headers=session.write())
    assert out.status_code == 204, out.text
    gone = await h.client.get("/api/v1/auth/me", headers=session.read())
    assert gone.status_code == 401, gone.text


async def test_a_limited_keys_session_does_no_more_than_the_key(harness_factory: Any) -> None:
    h: Harness = await harness_factory(ip_rate_limit=MANY)
    limited = await h.create_key(["events:read", "keys:write"])
    session = await sign_in(h, limited["key"])
    assert set(session.body["key"]["scopes"]) == {"events:read", "keys:write"}
    me = (await h.client.get("/api/v1/auth/me", headers=session.read())).json()
    bearer_me = (await h.client.get("/api/v1/auth/me", headers=h.auth(limited["key"]))).json()
    assert me["scopes"] == bearer_me["scopes"]
    assert "system:admin" not in me["scopes"] and "admin" not in me["scopes"]
    # 403 where the key gets 403, with the same problem.
    for method, path in (("GET", "/api/v1/users"), ("GET", "/api/v1/tenants")):
        by_key = await h.client.request(method, path, headers=h.auth(limited["key"]))
        by_session = await h.client.request(method, path, headers=session.write())
        assert by_key.status_code == by_session.status_code == 403, by_session.text
        assert by_key.json()["detail"] == by_session.json()["detail"]
    # It cannot make a key with more scopes than the key, nor a user (no users:write).
    wider = {"name": "wider", "scopes": ["events:read", "webhooks:write"]}
    refused = await h.client.post("/api/v1/keys", json=wider, headers=session.write())
    assert refused.status_code == 403, refused.text
    user = {"email": "x@example.com", "password": "a long password", "role": "viewer"}
    refused = await h.client.post("/api/v1/users", json=user, headers=session.write())
    assert refused.status_code == 403, refused.text
    narrower = {"name": "narrower", "scopes": ["events:read"]}
    made = await h.client.post("/api/v1/keys", json=narrower, headers=session.write())
    assert made.status_code == 201, made.text
    # The key's own rate limit, shared with its bearer requests (one bucket: the key's).
    metered = await h.create_key(["events:read"], rate_limits={"minute": 4})
    metered_session = await sign_in(h, metered["key"])
    for headers in (h.auth(metered["key"]), metered_session.read()) * 2:
        response = await h.client.get("/api/v1/events", headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["x-ratelimit-limit"] == "4"
    over = await h.client.get("/api/v1/events", headers=metered_session.read())
    problem(over, 429, "rate-limited")


async def test_revoking_or_expiring_the_key_or_suspending_its_tenant_ends_the_session(
    harness_factory: Any,
) -> None:
    h: Harness = await harness_factory(ip_rate_limit=MANY)
    revoked = await h.create_key(["events:read"])
    expiring = await h.create_key(["events:read"])
    tenant = await h.create_tenant("suspended-later")
    revoked_session = await sign_in(h, revoked["key"])
    expiring_session = await sign_in(h, expiring["key"])
    tenant_session = await sign_in(h, tenant["admin_key"])
    for session in (revoked_session, expiring_session, tenant_session):
        ok = await h.client.get("/api/v1/events", headers=session.read())
        assert ok.status_code == 200, ok.text

    response = await h.client.delete(f"/api/v1/keys/{revoked['id']}", headers=h.auth())
    assert response.status_code in (200, 204), response.text
    problem(
        await h.client.get("/api/v1/events", headers=revoked_session.read()),
        401,
        "unauthenticated",
    )

    async with h.fc.sessionmaker() as db:
        past = datetime.now(UTC) - timedelta(seconds=1)
        await db.execute(update(ApiKey).where(ApiKey.id == expiring["id"]).values(expires_at=past))
        await db.commit()
    problem(
        await h.client.get("/api/v1/events", headers=expiring_session.read()),
        401,
        "unauthenticated",
    )

    suspended = await h.client.post("/api/v1/tenants/suspended-later/suspend", headers=h.auth())
    assert suspended.status_code == 200, suspended.text
    by_key = await h.client.get("/api/v1/events", headers=h.auth(tenant["admin_key"]))
    by_session = await h.client.get("/api/v1/events", headers=tenant_session.read())
    problem(by_key, 403, "tenant-suspended")
    problem(by_session, 403, "tenant-suspended")


async def test_rotating_the_key_ends_its_session_when_the_old_secrets_grace_ends(
    harness_factory: Any,
) -> None:
    h: Harness = await harness_factory(ip_rate_limit=MANY)
    key = await h.create_key(["events:read"])
    first = await sign_in(h, key["key"])
    rotated = await h.client.post(
        f"/api/v1/keys/{key['id']}/rotate", json={"grace_period_s": 3600}, headers=h.auth()
    )
    assert rotated.status_code == 200, rotated.text
    # Within the grace the old secret works, and so does the session it opened.
    assert (await h.client.get("/api/v1/events", headers=first.read())).is_success
    async with h.fc.sessionmaker() as db:
        past = datetime.now(UTC) - timedelta(seconds=1)
        await db.execute(
            update(ApiKey).where(ApiKey.id == key["id"]).values(previous_expires_at=past)
        )
        await db.commit()
    problem(await h.client.get("/api/v1/events", headers=first.read()), 401, "unauthenticated")

    # A rotation without grace ends the new secret's session at once.
    second = await sign_in(h, rotated.json()["key"])
    assert (await h.client.get("/api/v1/events", headers=second.read())).is_success
    again = await h.client.post(
        f"/api/v1/keys/{key['id']}/rotate", json={"grace_period_s": 0}, headers=h.auth()
    )
    assert again.status_code == 200, again.text
    problem(await h.client.get("/api/v1/events", headers=second.read()), 401, "unauthenticated")
    third = await sign_in(h, again.json()["key"])
    assert (await h.client.get("/api/v1/events", headers=third.read())).is_success


async def test_revoking_the_key_ends_its_session_on_another_node_at_once(
    harness_factory: Any, backend: str
) -> None:
    if backend != "postgres":
        pytest.skip("two nodes share a database and Redis on PostgreSQL only")
    first: Harness = await harness_factory(ip_rate_limit=MANY)
    second: Harness = await harness_factory(run_workers=False, ip_rate_limit=MANY)
    key = await first.create_key(["events:read"])
    session = await sign_in(first, key["key"])
    # The second node has the key in its cache (a bearer request) and serves the session.
    assert (await second.client.get("/api/v1/events", headers=second.auth(key["key"]))).is_success
    assert (await second.client.get("/api/v1/events", headers=session.read())).is_success
    revoked = await first.client.delete(f"/api/v1/keys/{key['id']}", headers=first.auth())
    assert revoked.status_code in (200, 204), revoked.text
    problem(
        await second.client.get("/api/v1/events", headers=session.read()), 401, "unauthenticated"
    )
    problem(
        await first.client.get("/api/v1/events", headers=session.read()), 401, "unauthenticated"
    )


async def test_every_bad_key_gets_the_same_401_and_no_session(harness_factory: Any) -> None:
    h: Harness = await harness_factory(ip_rate_limit=MANY, trusted_proxies="127.0.0.0/8")
    revoked = await h.create_key(["events:read"])
    await h.client.delete(f"/api/v1/keys/{revoked['id']}", headers=h.auth())
    expired = await h.create_key(["events:read"])
    async with h.fc.sessionmaker() as db:
        past = datetime.now(UTC) - timedelta(seconds=1)
        await db.execute(update(ApiKey).where(ApiKey.id == expired["id"]).values(expires_at=past))
        await db.commit()
    rotated = await h.create_key(["events:read"])
    again = await h.client.post(
        f"/api/v1/keys/{rotated['id']}/rotate", json={"grace_period_s": 3600}, headers=h.auth()
    )
    assert again.status_code == 200, again.text
    tenant = await h.create_tenant("suspended-now")
    suspended = await h.client.post("/api/v1/tenants/suspended-now/suspend", headers=h.auth())
    assert suspended.status_code == 200, suspended.text
    bad = {
        "unknown": key_format.generate(),
        "malformed": "fck_live_not-a-key",
        "not a key at all": "correct horse battery staple",
        "revoked": revoked["key"],
        "expired": expired["key"],
        "pre-rotation secret": rotated["key"],
        "suspended tenant": tenant["admin_key"],
    }
    before = await sessions_count(h)
    details = set()
    for n, (what, raw) in enumerate(bad.items()):
        # A fresh address each time: this test is not about the throttle.
        headers = {"X-Forwarded-For": f"198.51.100.{n + 1}"}
        response = await h.client.post(KEY_LOGIN, json={"key": raw}, headers=headers)
        body = problem(response, 401, "unauthenticated")
        details.add(body["detail"])
        assert "set-cookie" not in response.headers, what
        assert raw not in response.text, what
    assert len(details) == 1, details
    assert await sessions_count(h) == before
    # Failures of known keys are audited with the reason, never the key.
    audit = await h.client.get(
        "/api/v1/audit-log", params={"action": "key.sign_in_failed"}, headers=h.auth()
    )
    reasons = {entry["target_id"]: entry["after"]["reason"] for entry in audit.json()["items"]}
    assert reasons == {
        revoked["id"]: "revoked_key",
        expired["id"]: "expired_key",
        rotated["id"]: "previous_secret",
    }
    for raw in bad.values():
        assert raw not in audit.text


async def test_failed_key_sign_ins_are_throttled_per_address(harness_factory: Any) -> None:
    # 4 failures per address lock; the first 2 are free.
    h: Harness = await harness_factory(
        ip_rate_limit=MANY,
        signin_lockout_failures=4,
        signin_lockout_s=600,
        trusted_proxies="127.0.0.0/8",
    )
    # A clock that stands still: the wait after the third failure cannot run out in the test.
    h.fc.signin_throttle.clock = lambda: 1_800_000_000.0
    here = {"X-Forwarded-For": "203.0.113.7"}
    elsewhere = {"X-Forwarded-For": "203.0.113.8"}
    for _ in range(2):
        wrong = await h.client.post(KEY_LOGIN, json={"key": key_format.generate()}, headers=here)
        problem(wrong, 401, "unauthenticated")
    third = await h.client.post(KEY_LOGIN, json={"key": key_format.generate()}, headers=here)
    problem(third, 401, "unauthenticated")
    # The third failure makes the next attempt from the address wait, a valid key's too.
    throttled = await h.client.post(KEY_LOGIN, json={"key": h.owner_key}, headers=here)
    body = problem(throttled, 429, "rate-limited")
    assert "Too many failed sign-ins" in body["detail"]
    assert throttled.headers["retry-after"] == "1"
    assert "set-cookie" not in throttled.headers
    # Another address is not held back.
    other = await h.client.post(KEY_LOGIN, json={"key": h.owner_key}, headers=elsewhere)
    assert other.status_code == 200, other.text


async def test_the_key_never_reaches_a_log_line_the_session_row_or_the_audit_log(
    harness_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    h: Harness = await harness_factory(ip_rate_limit=MANY)
    caplog.set_level(logging.DEBUG)
    limited = await h.create_key(["events:read"])
    revoked = await h.create_key(["events:read"])
    await h.client.delete(f"/api/v1/keys/{revoked['id']}", headers=h.auth())
    raws = [h.owner_key, limited["key"], revoked["key"]]
    session = await sign_in(h, h.owner_key)
    await sign_in(h, limited["key"])
    refused = await h.client.post(KEY_LOGIN, json={"key": revoked["key"]})
    assert refused.status_code == 401
    await h.client.get("/api/v1/auth/me", headers=session.read())
    await h.client.post("/api/v1/auth/logout", headers=session.write())

    async with h.fc.sessionmaker() as db:
        rows = (await db.scalars(select(UserSession))).all()
    stored = orjson.dumps(
        [{c.name: str(getattr(r, c.name)) for c in UserSession.__table__.columns} for r in rows]
    ).decode()
    assert stored.count('"key_id"') >= 2
    audit = await h.client.get("/api/v1/audit-log", params={"limit": 200}, headers=h.auth())
    assert audit.status_code == 200
    actions = {entry["action"] for entry in audit.json()["items"]}
    assert {"key.signed_in", "key.sign_in_failed", "key.signed_out"} <= actions
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for raw in raws:
        secret_part = raw[len(key_format.display_prefix(raw)) :]
        for text in (stored, audit.text, logged):
            assert raw not in text
            assert secret_part not in text
