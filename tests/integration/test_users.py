"""Dashboard users: creation, argon2id passwords, cookie sessions, roles, CSRF, sign-out."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from conftest import Harness
from forecourt.users.models import User

PASSWORD = "correct horse battery"
NEW_PASSWORD = "another long passphrase"
SESSION_COOKIE = "fc_session"


async def create_user(
    h: Harness, email: str, role: str = "member", password: str = PASSWORD
) -> dict[str, Any]:
    response = await h.client.post(
        "/api/v1/users",
        json={"email": email, "password": password, "role": role},
        headers=h.auth(),
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


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
    """A signed-in user's cookie and CSRF token, sent explicitly (the cookie is Secure and
    the test client speaks plain http)."""

    def __init__(self, token: str, csrf: str) -> None:
        self.token = token
        self.csrf = csrf

    def cookie(self) -> dict[str, str]:
        return {"Cookie": f"{SESSION_COOKIE}={self.token}"}

    def write(self) -> dict[str, str]:
        return {**self.cookie(), "X-CSRF-Token": self.csrf}


async def login(h: Harness, email: str, password: str = PASSWORD) -> Session:
    response = await h.client.post(
        "/api/v1/auth/login", json={"email": email, "password": password}
    )
    assert response.status_code == 200, response.text
    token = set_cookies(response)[SESSION_COOKIE]["value"]
    assert token
    return Session(token, response.json()["csrf_token"])


async def me(h: Harness, session: Session) -> httpx.Response:
    return await h.client.get("/api/v1/auth/me", headers=session.cookie())


# -- creating users ------------------------------------------------------------------------


async def test_create_user_stores_an_argon2id_hash(harness: Harness) -> None:
    user = await create_user(harness, "Ada@Example.com", role="admin")
    assert user["email"] == "ada@example.com"
    assert user["role"] == "admin"
    assert "password" not in user
    assert "password_hash" not in user
    async with harness.fc.sessionmaker() as session:
        stored = await session.scalar(select(User.password_hash).where(User.id == user["id"]))
    assert stored is not None
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


async def test_duplicate_email_is_a_conflict(harness: Harness) -> None:
    await create_user(harness, "dup@example.com")
    for email in ("dup@example.com", "DUP@example.com"):
        response = await harness.client.post(
            "/api/v1/users",
            json={"email": email, "password": PASSWORD},
            headers=harness.auth(),
        )
        assert response.status_code == 409, response.text
        assert response.headers["content-type"] == "application/problem+json"
    listed = await harness.client.get("/api/v1/users", headers=harness.auth())
    assert [u["email"] for u in listed.json()] == ["dup@example.com"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "short@example.com", "password": "too-short"}, "password"),
        ({"email": "not-an-email", "password": PASSWORD}, "email"),
        ({"email": "role@example.com", "password": PASSWORD, "role": "superuser"}, "role"),
    ],
)
async def test_invalid_user_input_names_the_field(
    harness: Harness, body: dict[str, str], field: str
) -> None:
    response = await harness.client.post("/api/v1/users", json=body, headers=harness.auth())
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert [e["field"] for e in problem["errors"]] == [field]
    assert field in problem["detail"]
    listed = await harness.client.get("/api/v1/users", headers=harness.auth())
    assert listed.json() == []


# -- signing in ----------------------------------------------------------------------------


async def test_login_sets_a_hardened_session_cookie(harness: Harness) -> None:
    user = await create_user(harness, "login@example.com")
    response = await harness.client.post(
        "/api/v1/auth/login", json={"email": "login@example.com", "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"]["id"] == user["id"]
    assert body["user"]["last_login_at"] is not None
    assert len(body["csrf_token"]) >= 32
    cookie = set_cookies(response)[SESSION_COOKIE]
    assert "httponly" in cookie
    assert "secure" in cookie
    assert cookie["samesite"].lower() == "lax"
    assert cookie["path"] == "/"
    assert cookie["value"] != body["csrf_token"]

    # The Secure cookie is not sent back over plain http by a client that honours it ...
    assert (await harness.client.get("/api/v1/auth/me")).status_code == 401
    # ... and when it is sent (as a browser on https would), it authenticates the user.
    response = await me(harness, Session(cookie["value"], body["csrf_token"]))
    assert response.status_code == 200, response.text
    assert response.json()["actor_type"] == "user"
    assert response.json()["actor_id"] == user["id"]


async def test_login_without_secure_cookies_works_through_the_cookie_jar(
    harness_factory: Any,
) -> None:
    h: Harness = await harness_factory(cookie_secure=False)
    user = await create_user(h, "jar@example.com", role="viewer")
    response = await h.client.post(
        "/api/v1/auth/login", json={"email": "jar@example.com", "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    cookie = set_cookies(response)[SESSION_COOKIE]
    assert "secure" not in cookie
    assert "httponly" in cookie

    response = await h.client.get("/api/v1/auth/me")
    assert response.status_code == 200, response.text
    identity = response.json()
    assert identity["actor_type"] == "user"
    assert identity["actor_id"] == user["id"]
    assert "keys:read" in identity["scopes"]
    assert "keys:write" not in identity["scopes"]


async def test_wrong_password_and_unknown_email_fail_the_same_way(harness: Harness) -> None:
    await create_user(harness, "known@example.com")
    wrong = await harness.client.post(
        "/api/v1/auth/login", json={"email": "known@example.com", "password": "not the password"}
    )
    unknown = await harness.client.post(
        "/api/v1/auth/login", json={"email": "nobody@example.com", "password": "not the password"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.headers["content-type"] == "application/problem+json"
    assert wrong.json() == unknown.json()
    assert SESSION_COOKIE not in set_cookies(wrong)
    assert SESSION_COOKIE not in set_cookies(unknown)


async def test_me_without_credentials_is_401(harness: Harness) -> None:
    response = await harness.client.get(
        "/api/v1/auth/me", headers={"Cookie": f"{SESSION_COOKIE}=made-up-token"}
    )
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


# -- roles ---------------------------------------------------------------------------------


async def test_viewer_reads_but_cannot_write(harness: Harness) -> None:
    await create_user(harness, "viewer@example.com", role="viewer")
    session = await login(harness, "viewer@example.com")
    listed = await harness.client.get("/api/v1/keys", headers=session.cookie())
    assert listed.status_code == 200, listed.text
    created = await harness.client.post(
        "/api/v1/keys", json={"name": "nope", "scopes": ["keys:read"]}, headers=session.write()
    )
    assert created.status_code == 403, created.text
    assert created.json()["type"].endswith(":forbidden")
    users = await harness.client.get("/api/v1/users", headers=session.cookie())
    assert users.status_code == 403


async def test_member_cannot_create_keys(harness: Harness) -> None:
    await create_user(harness, "member@example.com", role="member")
    session = await login(harness, "member@example.com")
    identity = (await me(harness, session)).json()
    assert "keys:read" in identity["scopes"]
    assert "keys:write" not in identity["scopes"]
    created = await harness.client.post(
        "/api/v1/keys", json={"name": "nope", "scopes": ["keys:read"]}, headers=session.write()
    )
    assert created.status_code == 403, created.text
    assert created.json()["type"].endswith(":forbidden")
    keys = await harness.client.get("/api/v1/keys", headers=harness.auth())
    assert [k["name"] for k in keys.json()["items"]] == ["owner"]


# -- CSRF ----------------------------------------------------------------------------------


async def test_cookie_writes_need_the_csrf_token(harness: Harness) -> None:
    admin = await create_user(harness, "admin@example.com", role="admin")
    session = await login(harness, "admin@example.com")
    body = {"name": "from-dashboard", "scopes": ["keys:read"]}

    missing = await harness.client.post("/api/v1/keys", json=body, headers=session.cookie())
    assert missing.status_code == 403, missing.text
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["type"].endswith(":csrf-failed")

    wrong = await harness.client.post(
        "/api/v1/keys", json=body, headers={**session.cookie(), "X-CSRF-Token": "x" * 43}
    )
    assert wrong.status_code == 403, wrong.text
    assert wrong.json()["type"].endswith(":csrf-failed")

    keys = await harness.client.get("/api/v1/keys", headers=harness.auth())
    assert [k["name"] for k in keys.json()["items"]] == ["owner"]

    right = await harness.client.post("/api/v1/keys", json=body, headers=session.write())
    assert right.status_code == 201, right.text
    assert right.json()["created_by"] == admin["id"]

    user = await harness.client.post(
        "/api/v1/users",
        json={"email": "made-by-admin@example.com", "password": PASSWORD},
        headers=session.write(),
    )
    assert user.status_code == 201, user.text


async def test_csrf_token_of_another_session_is_refused(harness: Harness) -> None:
    await create_user(harness, "one@example.com", role="admin")
    first = await login(harness, "one@example.com")
    second = await login(harness, "one@example.com")
    assert first.csrf != second.csrf
    response = await harness.client.post(
        "/api/v1/keys",
        json={"name": "x", "scopes": ["keys:read"]},
        headers={**first.cookie(), "X-CSRF-Token": second.csrf},
    )
    assert response.status_code == 403
    assert response.json()["type"].endswith(":csrf-failed")


async def test_bearer_requests_need_no_csrf_token(harness: Harness) -> None:
    response = await harness.client.post(
        "/api/v1/keys", json={"name": "bearer", "scopes": ["keys:read"]}, headers=harness.auth()
    )
    assert response.status_code == 201, response.text
    user = await harness.client.post(
        "/api/v1/users",
        json={"email": "bearer@example.com", "password": PASSWORD},
        headers=harness.auth(),
    )
    assert user.status_code == 201, user.text


# -- ending sessions -----------------------------------------------------------------------


async def test_logout_ends_the_session(harness: Harness) -> None:
    await create_user(harness, "bye@example.com")
    session = await login(harness, "bye@example.com")
    other = await login(harness, "bye@example.com")
    assert (await me(harness, session)).status_code == 200

    response = await harness.client.post("/api/v1/auth/logout", headers=session.write())
    assert response.status_code == 204, response.text
    cleared = set_cookies(response)[SESSION_COOKIE]
    assert cleared["value"] in {"", '""'}
    assert cleared.get("max-age") == "0"

    assert (await me(harness, session)).status_code == 401
    # Only the session signed out of ends.
    assert (await me(harness, other)).status_code == 200
    signed_out = await harness.client.get(
        "/api/v1/audit-log", params={"action": "user.signed_out"}, headers=harness.auth()
    )
    assert len(signed_out.json()["items"]) == 1


async def test_logout_needs_the_csrf_token(harness: Harness) -> None:
    await create_user(harness, "stay@example.com")
    session = await login(harness, "stay@example.com")
    response = await harness.client.post("/api/v1/auth/logout", headers=session.cookie())
    assert response.status_code == 403
    assert (await me(harness, session)).status_code == 200


async def test_disabling_a_user_ends_their_sessions(harness: Harness) -> None:
    user = await create_user(harness, "off@example.com")
    session = await login(harness, "off@example.com")
    assert (await me(harness, session)).status_code == 200

    response = await harness.client.patch(
        f"/api/v1/users/{user['id']}", json={"disabled": True}, headers=harness.auth()
    )
    assert response.status_code == 200, response.text
    assert response.json()["disabled_at"] is not None

    assert (await me(harness, session)).status_code == 401
    again = await harness.client.post(
        "/api/v1/auth/login", json={"email": "off@example.com", "password": PASSWORD}
    )
    assert again.status_code == 401

    # Enabling the user again does not bring the old session back.
    response = await harness.client.patch(
        f"/api/v1/users/{user['id']}", json={"disabled": False}, headers=harness.auth()
    )
    assert response.status_code == 200
    assert (await me(harness, session)).status_code == 401
    await login(harness, "off@example.com")


async def test_changing_the_password_ends_sessions(harness: Harness) -> None:
    user = await create_user(harness, "pw@example.com")
    session = await login(harness, "pw@example.com")
    async with harness.fc.sessionmaker() as db:
        old_hash = await db.scalar(select(User.password_hash).where(User.id == user["id"]))

    response = await harness.client.patch(
        f"/api/v1/users/{user['id']}", json={"password": NEW_PASSWORD}, headers=harness.auth()
    )
    assert response.status_code == 200, response.text

    assert (await me(harness, session)).status_code == 401
    old = await harness.client.post(
        "/api/v1/auth/login", json={"email": "pw@example.com", "password": PASSWORD}
    )
    assert old.status_code == 401
    fresh = await login(harness, "pw@example.com", NEW_PASSWORD)
    assert (await me(harness, fresh)).status_code == 200
    async with harness.fc.sessionmaker() as db:
        new_hash = await db.scalar(select(User.password_hash).where(User.id == user["id"]))
    assert new_hash is not None
    assert new_hash.startswith("$argon2id$")
    assert new_hash != old_hash


async def test_sign_in_is_audited(harness: Harness) -> None:
    user = await create_user(harness, "audited@example.com")
    await login(harness, "audited@example.com")
    response = await harness.client.get(
        "/api/v1/audit-log", params={"action": "user.signed_in"}, headers=harness.auth()
    )
    assert response.status_code == 200, response.text
    entries = response.json()["items"]
    assert len(entries) == 1
    entry = entries[0]
    assert entry["actor_type"] == "user"
    assert entry["actor_id"] == user["id"]
    assert entry["target_type"] == "session"
    assert entry["ip"] == "127.0.0.1"
    # A failed sign-in creates no session and no entry.
    await harness.client.post(
        "/api/v1/auth/login", json={"email": "audited@example.com", "password": "wrong password"}
    )
    again = await harness.client.get(
        "/api/v1/audit-log", params={"action": "user.signed_in"}, headers=harness.auth()
    )
    assert len(again.json()["items"]) == 1


async def test_users_hand_out_roles_up_to_their_own(harness: Harness) -> None:
    await create_user(harness, "admin@example.com", role="admin")
    await create_user(harness, "owner@example.com", role="owner")
    victim = await create_user(harness, "member@example.com", role="member")
    admin = await login(harness, "admin@example.com")
    owner = await login(harness, "owner@example.com")
    body = {"email": "new-owner@example.com", "password": PASSWORD, "role": "owner"}

    refused = await harness.client.post("/api/v1/users", json=body, headers=admin.write())
    assert refused.status_code == 403, refused.text
    promoted = await harness.client.patch(
        f"/api/v1/users/{victim['id']}", json={"role": "owner"}, headers=admin.write()
    )
    assert promoted.status_code == 403, promoted.text

    as_admin = {**body, "email": "new-admin@example.com", "role": "admin"}
    created = await harness.client.post("/api/v1/users", json=as_admin, headers=admin.write())
    assert created.status_code == 201, created.text
    created = await harness.client.post("/api/v1/users", json=body, headers=owner.write())
    assert created.status_code == 201, created.text
    listed = await harness.client.get("/api/v1/users", headers=harness.auth())
    roles = {u["email"]: u["role"] for u in listed.json()}
    assert roles["member@example.com"] == "member"
    assert roles["new-owner@example.com"] == "owner"
