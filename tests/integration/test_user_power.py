"""Who may change a user: rank for users, the role's scopes for keys; the last enabled owner
stays; removing a user ends its sessions and lists (and by default revokes) its keys; the audit
log records password changes as a flag and ended sessions with their count."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from conftest import Harness
from forecourt.users.service import ROLE_SCOPES

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new passphrase"
SESSION_COOKIE = "fc_session"
USERS = "/api/v1/users"
AUDIT = "/api/v1/audit-log"
PROPAGATION_TIMEOUT_S = 5.0  # a generous bound that only catches a missing invalidation


class Session:
    def __init__(self, token: str, csrf: str) -> None:
        self.token = token
        self.csrf = csrf

    def headers(self) -> dict[str, str]:
        return {"Cookie": f"{SESSION_COOKIE}={self.token}", "X-CSRF-Token": self.csrf}


async def create_user(h: Harness, email: str, role: str, key: str | None = None) -> str:
    response = await h.client.post(
        USERS, json={"email": email, "password": PASSWORD, "role": role}, headers=h.auth(key)
    )
    assert response.status_code == 201, response.text
    user_id: str = response.json()["id"]
    return user_id


async def login(h: Harness, email: str, password: str = PASSWORD) -> Session:
    response = await h.client.post(
        "/api/v1/auth/login", json={"email": email, "password": password}
    )
    assert response.status_code == 200, response.text
    header = next(
        v for v in response.headers.get_list("set-cookie") if v.startswith(SESSION_COOKIE + "=")
    )
    token = header.split(";", 1)[0].split("=", 1)[1]
    return Session(token, response.json()["csrf_token"])


async def signed_in(h: Harness, session: Session) -> bool:
    response = await h.client.get("/api/v1/auth/me", headers=session.headers())
    assert response.status_code in (200, 401), response.text
    return response.status_code == 200


async def audit(h: Harness, **params: str) -> list[dict[str, Any]]:
    response = await h.client.get(AUDIT, params={"limit": 200, **params}, headers=h.auth())
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    return body


async def key_works(h: Harness, raw: str) -> bool:
    response = await h.client.get("/api/v1/auth/me", headers=h.auth(raw))
    return response.status_code == 200


async def eventually_refused(h: Harness, raw: str) -> bool:
    """Whether ``raw`` stops working on ``h`` within the propagation bound (an invalidation
    travels through Redis); polled, never slept through."""
    deadline = asyncio.get_running_loop().time() + PROPAGATION_TIMEOUT_S
    while await key_works(h, raw):
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def user_key(h: Harness, session: Session, name: str) -> dict[str, Any]:
    """A key the signed-in user creates (so its created_by is the user)."""
    response = await h.client.post(
        "/api/v1/keys", json={"name": name, "scopes": ["events:read"]}, headers=session.headers()
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def disable_user_with_key(
    h: Harness, email: str, key_name: str
) -> tuple[str, Session, dict[str, Any], httpx.Response]:
    """An admin user, signed in, with a key of its own; then disabled with the owner key.
    (user id, its session, its key, the response to the disabling)."""
    user = await create_user(h, email, "admin")
    session = await login(h, email)
    key = await user_key(h, session, key_name)
    response = await h.client.patch(f"{USERS}/{user}", json={"disabled": True}, headers=h.auth())
    assert response.status_code == 200, response.text
    return user, session, key, response


# -- the last enabled owner ---------------------------------------------------------------------


async def test_the_last_enabled_owner_cannot_be_disabled_demoted_or_deleted(
    harness: Harness,
) -> None:
    h = harness
    first = await create_user(h, "first@example.com", "owner")
    for method, path, body in (
        ("PATCH", f"{USERS}/{first}", {"disabled": True}),
        ("PATCH", f"{USERS}/{first}", {"role": "admin"}),
        ("DELETE", f"{USERS}/{first}", None),
    ):
        problem = assert_problem(
            await h.client.request(method, path, json=body, headers=h.auth()), 409
        )
        assert "last enabled owner" in problem["detail"]
    got = (await h.client.get(f"{USERS}/{first}", headers=h.auth())).json()
    assert got["role"] == "owner" and got["disabled_at"] is None
    assert not [e for e in await audit(h, target_id=first) if e["action"] != "user.created"]

    # A disabled owner does not count; a second enabled one does.
    second = await create_user(h, "second@example.com", "owner")
    response = await h.client.patch(f"{USERS}/{second}", json={"disabled": True}, headers=h.auth())
    assert response.status_code == 200, response.text
    assert_problem(
        await h.client.patch(f"{USERS}/{first}", json={"role": "member"}, headers=h.auth()), 409
    )
    response = await h.client.patch(f"{USERS}/{second}", json={"disabled": False}, headers=h.auth())
    assert response.status_code == 200, response.text
    response = await h.client.patch(f"{USERS}/{first}", json={"role": "admin"}, headers=h.auth())
    assert response.status_code == 200, response.text
    # Now the second is the last one: it cannot remove itself either.
    session = await login(h, "second@example.com")
    assert_problem(await h.client.delete(f"{USERS}/{second}", headers=session.headers()), 409)
    assert_problem(
        await h.client.patch(
            f"{USERS}/{second}", json={"disabled": True}, headers=session.headers()
        ),
        409,
    )
    assert await signed_in(h, session)


# -- who may change whom ----------------------------------------------------------------------


async def test_users_change_only_users_they_outrank_or_equal(harness: Harness) -> None:
    h = harness
    owner = await create_user(h, "o@example.com", "owner")
    admin = await create_user(h, "a@example.com", "admin")
    other_admin = await create_user(h, "a2@example.com", "admin")
    member = await create_user(h, "m@example.com", "member")
    as_admin = await login(h, "a@example.com")
    for target in (member, other_admin, admin):
        response = await h.client.patch(
            f"{USERS}/{target}", json={"name": "renamed"}, headers=as_admin.headers()
        )
        assert response.status_code == 200, response.text
    problem = assert_problem(
        await h.client.patch(f"{USERS}/{owner}", json={"name": "x"}, headers=as_admin.headers()),
        403,
    )
    assert "owner" not in problem["detail"]
    assert_problem(
        await h.client.patch(
            f"{USERS}/{member}", json={"role": "owner"}, headers=as_admin.headers()
        ),
        403,
    )
    as_owner = await login(h, "o@example.com")
    response = await h.client.patch(
        f"{USERS}/{admin}", json={"role": "member"}, headers=as_owner.headers()
    )
    assert response.status_code == 200, response.text


async def test_keys_assign_roles_whose_scopes_they_hold(harness: Harness) -> None:
    h = harness
    member_scopes = sorted(ROLE_SCOPES["member"] | {"users:write"})
    key = (await h.create_key(member_scopes))["key"]
    member = await create_user(h, "m@example.com", "member", key=key)
    viewer = await create_user(h, "v@example.com", "viewer", key=key)
    for role in ("admin", "owner"):
        assert_problem(
            await h.client.post(
                USERS,
                json={"email": f"{role}@example.com", "password": PASSWORD, "role": role},
                headers=h.auth(key),
            ),
            403,
        )
        assert_problem(
            await h.client.patch(f"{USERS}/{member}", json={"role": role}, headers=h.auth(key)),
            403,
        )
    # It may change the users it covers, but not an admin (whose role holds more than it).
    response = await h.client.patch(
        f"{USERS}/{viewer}", json={"role": "member"}, headers=h.auth(key)
    )
    assert response.status_code == 200, response.text
    admin = await create_user(h, "a@example.com", "admin")
    for method, path, body in (
        ("PATCH", f"{USERS}/{admin}", {"password": NEW_PASSWORD}),
        ("DELETE", f"{USERS}/{admin}/sessions", None),
        ("DELETE", f"{USERS}/{admin}", None),
    ):
        assert_problem(await h.client.request(method, path, json=body, headers=h.auth(key)), 403)
    # A key holding admin may make owners.
    await create_user(h, "owner@example.com", "owner", key=(await h.create_key(["admin"]))["key"])


# -- removing a user and its keys --------------------------------------------------------------


async def test_deleting_a_user_revokes_its_keys_everywhere_and_ends_its_sessions(
    harness_factory: Any, backend: str
) -> None:
    a = await harness_factory()
    b = await harness_factory()  # a second node on the same database
    user = await create_user(a, "leaver@example.com", "admin")
    session = await login(a, "leaver@example.com")
    keys = [await user_key(a, session, "k1"), await user_key(a, session, "k2")]
    unrelated = await a.create_key(["events:read"])
    for key in keys:
        assert await key_works(b, key["key"])  # cached on the second node

    response = await a.client.delete(f"{USERS}/{user}", headers=a.auth())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == user
    assert body["keys"] == [
        {"id": k["id"], "name": k["name"], "prefix": k["prefix"], "revoked": True} for k in keys
    ]
    for key in keys:
        assert not await key_works(a, key["key"])
    if backend == "postgres":  # SQLite nodes share no bus: there the other node's TTL decides
        for key in keys:
            assert await eventually_refused(b, key["key"])
        assert await key_works(b, unrelated["key"])
    assert await key_works(a, unrelated["key"])
    assert not await signed_in(a, session)
    assert_problem(await a.client.get(f"{USERS}/{user}", headers=a.auth()), 404)
    [entry] = [e for e in await audit(a, target_id=user) if e["action"] == "user.deleted"]
    assert [k["id"] for k in entry["after"]["keys"]] == [k["id"] for k in keys]
    revoked = {e["target_id"] for e in await audit(a, action="key.revoked")}
    assert revoked == {k["id"] for k in keys}


async def test_disabling_a_user_revokes_its_keys(harness: Harness) -> None:
    h = harness
    user, session, key, response = await disable_user_with_key(h, "off@example.com", "mine")
    assert response.json()["keys"] == [
        {"id": key["id"], "name": "mine", "prefix": key["prefix"], "revoked": True}
    ]
    assert not await key_works(h, key["key"])
    assert not await signed_in(h, session)
    [entry] = [e for e in await audit(h, target_id=user) if e["action"] == "user.updated"]
    assert entry["after"]["disabled"] is True
    assert entry["after"]["keys"] == response.json()["keys"]
    # A change that does not disable lists nothing.
    response = await h.client.patch(f"{USERS}/{user}", json={"name": "n"}, headers=h.auth())
    assert response.json()["keys"] == []


async def test_keys_of_removed_users_can_be_kept(harness_factory: Any) -> None:
    h = await harness_factory(revoke_keys_of_removed_users=False)
    user, _, key, response = await disable_user_with_key(h, "stay@example.com", "kept")
    assert response.json()["keys"] == [
        {"id": key["id"], "name": "kept", "prefix": key["prefix"], "revoked": False}
    ]
    assert await key_works(h, key["key"])
    response = await h.client.delete(f"{USERS}/{user}", headers=h.auth())
    assert response.json()["keys"][0]["revoked"] is False
    assert await key_works(h, key["key"])


# -- sessions and the audit trail -------------------------------------------------------------


async def test_ending_sessions_and_changing_a_password_are_audited_without_values(
    harness: Harness,
) -> None:
    h = harness
    user = await create_user(h, "s@example.com", "member")
    first, second = await login(h, "s@example.com"), await login(h, "s@example.com")
    response = await h.client.delete(f"{USERS}/{user}/sessions", headers=h.auth())
    assert response.status_code == 200, response.text
    assert response.json() == {"ended": 2}
    assert not await signed_in(h, first)
    assert not await signed_in(h, second)
    response = await h.client.delete(f"{USERS}/{user}/sessions", headers=h.auth())
    assert response.json() == {"ended": 0}
    ended = [e for e in await audit(h, target_id=user) if e["action"] == "user.sessions_ended"]
    assert sorted(e["after"]["count"] for e in ended) == [0, 2]

    third = await login(h, "s@example.com")
    response = await h.client.patch(
        f"{USERS}/{user}", json={"password": NEW_PASSWORD}, headers=h.auth()
    )
    assert response.status_code == 200, response.text
    assert not await signed_in(h, third)
    entries = await audit(h, target_id=user)
    [changed] = [e for e in entries if e["action"] == "user.updated"]
    assert changed["after"]["password_changed"] is True
    counts = sorted(e["after"]["count"] for e in entries if e["action"] == "user.sessions_ended")
    assert counts == [0, 1, 2]
    text = (await h.client.get(AUDIT, params={"limit": 200}, headers=h.auth())).text
    assert NEW_PASSWORD not in text and PASSWORD not in text
    assert "argon2" not in text
    await login(h, "s@example.com", NEW_PASSWORD)


async def test_unknown_users_are_404(harness: Harness) -> None:
    for method, path in (("DELETE", f"{USERS}/usr_nope"), ("DELETE", f"{USERS}/usr_nope/sessions")):
        assert_problem(await harness.client.request(method, path, headers=harness.auth()), 404)


async def test_two_owners_demoted_at_once_leave_one(harness: Harness) -> None:
    h = harness
    owners = [await create_user(h, f"o{i}@example.com", "owner") for i in range(2)]
    responses = await asyncio.gather(
        *(
            h.client.patch(f"{USERS}/{owner}", json={"role": "admin"}, headers=h.auth())
            for owner in owners
        )
    )
    assert sorted(r.status_code for r in responses) == [200, 409], [r.text for r in responses]
    listed = (await h.client.get(USERS, headers=h.auth())).json()
    assert [u["role"] for u in listed].count("owner") == 1
