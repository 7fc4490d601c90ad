"""/api/v1/tenants, the operator's: create (with a first admin key), list, get, suspend,
resume, delete. A suspension stops every key and session of the tenant at once, on every node
(two nodes sharing PostgreSQL and Redis); the operator's own tenant is neither suspended nor
deleted; each change is in the tenant's own audit log, made by "operator"."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import func, select

from conftest import Harness, problem
from forecourt.audit.models import AuditEntry
from forecourt.db.models import metadata
from forecourt.keys.models import ApiKey

PASSWORD = "correct horse battery"
SESSION_COOKIE = "fc_session"
WAIT_S = 15.0


async def wait_for_status(
    node: Harness, headers: dict[str, str], ok: Callable[[int], bool]
) -> None:
    """Until ``node`` answers GET /api/v1/keys with ``headers`` by a status ``ok`` accepts (a
    broadcast reaches another node asynchronously)."""
    deadline = time.monotonic() + WAIT_S
    while not ok((await node.client.get("/api/v1/keys", headers=headers)).status_code):
        assert time.monotonic() < deadline, "not within the wait"
        await asyncio.sleep(0.02)


async def test_create_list_get_and_the_first_admin_key(harness: Harness) -> None:
    h = harness
    created = await h.create_tenant("acme", "Acme Inc")
    assert created["slug"] == "acme" and created["name"] == "Acme Inc"
    assert created["suspended"] is False and created["admin_key"].startswith("fck_")
    key = created["admin_key"]
    # The key is the new tenant's admin: it sees its own keys only, and holds no system:admin.
    keys = await h.client.get("/api/v1/keys", headers=h.auth(key))
    assert keys.status_code == 200
    [own] = keys.json()["items"]
    assert own["id"] == created["admin_key_id"] and own["scopes"] == ["admin"]
    problem(await h.client.get("/api/v1/tenants", headers=h.auth(key)), 403, "forbidden")

    for slug in ("beta", "gamma"):
        await h.create_tenant(slug)
    first = await h.client.get("/api/v1/tenants", params={"limit": 2}, headers=h.auth())
    assert first.status_code == 200 and first.json()["next_cursor"]
    rest = await h.client.get(
        "/api/v1/tenants",
        params={"limit": 2, "cursor": first.json()["next_cursor"]},
        headers=h.auth(),
    )
    slugs = [t["slug"] for t in first.json()["items"] + rest.json()["items"]]
    assert sorted(slugs) == ["acme", "beta", "default", "gamma"]
    assert rest.json()["next_cursor"] is None
    by_id = await h.client.get(f"/api/v1/tenants/{created['id']}", headers=h.auth())
    by_slug = await h.client.get("/api/v1/tenants/acme", headers=h.auth())
    assert by_id.json() == by_slug.json() and by_id.json()["slug"] == "acme"
    assert "admin_key" not in by_id.json()
    problem(await h.client.get("/api/v1/tenants/nope", headers=h.auth()), 404, "not-found")


async def test_bad_and_duplicate_input_changes_nothing(harness: Harness) -> None:
    h = harness
    await h.create_tenant("acme")
    duplicate = await h.client.post(
        "/api/v1/tenants", json={"slug": "acme", "name": "Again"}, headers=h.auth()
    )
    problem(duplicate, 409, "conflict")
    for body in ({"slug": "Bad Slug", "name": "x"}, {"slug": "ok"}, {"slug": "x", "name": ""}):
        response = await h.client.post("/api/v1/tenants", json=body, headers=h.auth())
        assert response.status_code == 422, (body, response.text)
    listed = await h.client.get("/api/v1/tenants", headers=h.auth())
    assert sorted(t["slug"] for t in listed.json()["items"]) == ["acme", "default"]
    async with h.fc.sessionmaker() as session:
        keys = await session.scalar(select(func.count()).select_from(ApiKey))
    assert keys == 2  # the owner's and acme's first key


async def test_the_operators_own_tenant_is_neither_suspended_nor_deleted(
    harness: Harness,
) -> None:
    h = harness
    for call in (
        h.client.post("/api/v1/tenants/default/suspend", headers=h.auth()),
        h.client.delete("/api/v1/tenants/default", headers=h.auth()),
    ):
        problem(await call, 409, "conflict")
    me = await h.client.get("/api/v1/keys", headers=h.auth())
    assert me.status_code == 200


async def sign_in(h: Harness, tenant_key: str, email: str, tenant: str) -> dict[str, str]:
    """A user of the key's tenant, signed in: the cookie header of its session."""
    created = await h.client.post(
        "/api/v1/users",
        json={"email": email, "password": PASSWORD, "role": "admin"},
        headers=h.auth(tenant_key),
    )
    assert created.status_code == 201, created.text
    login = await h.client.post(
        "/api/v1/auth/login", json={"email": email, "password": PASSWORD, "tenant": tenant}
    )
    assert login.status_code == 200, login.text
    token = login.cookies.get(SESSION_COOKIE) or _cookie(login)
    return {"Cookie": f"{SESSION_COOKIE}={token}"}


def _cookie(response: httpx.Response) -> str:
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        if name.strip() == SESSION_COOKIE:
            return rest.split(";")[0]
    raise AssertionError("no session cookie")


async def test_suspend_stops_keys_and_sessions_at_once_on_every_node(
    harness_factory: Any, backend: str
) -> None:
    first: Harness = await harness_factory()
    # PostgreSQL + Redis: a second node on the same database; SQLite runs one node.
    nodes = [first, await harness_factory()] if backend == "postgres" else [first]
    created = await first.create_tenant("acme")
    key = created["admin_key"]
    cookie = await sign_in(first, key, "ada@acme.example", "acme")
    other = await first.create_tenant("other")

    async def status(node: Harness, headers: dict[str, str]) -> int:
        return (await node.client.get("/api/v1/keys", headers=headers)).status_code

    for node in nodes:  # both credentials work (and the key is cached) on every node
        assert await status(node, first.auth(key)) == 200
        assert await status(node, cookie) == 200

    suspended = await first.client.post("/api/v1/tenants/acme/suspend", headers=first.auth())
    assert suspended.status_code == 200 and suspended.json()["suspended"] is True
    for node in nodes:
        for headers in (first.auth(key), cookie):
            await wait_for_status(node, headers, lambda code: code == 403)
            body = problem(
                await node.client.get("/api/v1/keys", headers=headers), 403, "tenant-suspended"
            )
            assert "suspended" in body["detail"]
        # Another tenant's key is untouched.
        assert await status(node, first.auth(other["admin_key"])) == 200
    got = await first.client.get("/api/v1/tenants/acme", headers=first.auth())
    assert got.json()["suspended"] is True and got.json()["suspended_at"]

    resumed = await first.client.post("/api/v1/tenants/acme/resume", headers=first.auth())
    assert resumed.status_code == 200 and resumed.json()["suspended"] is False
    for node in nodes:
        for headers in (first.auth(key), cookie):
            await wait_for_status(node, headers, lambda code: code == 200)

    # A node started while a tenant is suspended knows it from the database.
    await first.client.post("/api/v1/tenants/acme/suspend", headers=first.auth())
    late: Harness = await harness_factory()
    problem(await late.client.get("/api/v1/keys", headers=first.auth(key)), 403, "tenant-suspended")


async def test_each_change_is_in_the_tenants_log_by_operator(harness: Harness) -> None:
    h = harness
    created = await h.create_tenant("acme")
    for action in ("suspend", "resume"):
        response = await h.client.post(f"/api/v1/tenants/acme/{action}", headers=h.auth())
        assert response.status_code == 200
    log = await h.client.get("/api/v1/audit-log", headers=h.auth(created["admin_key"]))
    entries = {e["action"]: e for e in log.json()["items"]}
    for action in ("tenant.created", "tenant.suspended", "tenant.resumed"):
        entry = entries[action]
        assert entry["actor_type"] == "operator" and entry["actor_id"] is None
        assert entry["ip"] is None and entry["target_id"] == created["id"]
    assert entries["tenant.suspended"]["after"]["suspended_at"]
    # The operator's own log names the operator's key.
    own = await h.client.get("/api/v1/audit-log", params={"action": "tenant.*"}, headers=h.auth())
    actions = {e["action"]: e for e in own.json()["items"]}
    assert set(actions) == {"tenant.created", "tenant.suspended", "tenant.resumed"}
    assert {e["actor_type"] for e in actions.values()} == {"key"}
    async with h.fc.sessionmaker() as session:
        keys_named = await session.scalars(
            select(AuditEntry.actor_id).where(AuditEntry.tenant_id == created["id"])
        )
        assert all(actor is None for actor in keys_named)


async def test_delete_removes_everything_the_tenant_owns(
    harness_factory: Any, backend: str
) -> None:
    local = {"webhook_allow_private": "127.0.0.0/8"}
    first: Harness = await harness_factory(**local)
    nodes = [first, await harness_factory(**local)] if backend == "postgres" else [first]
    created = await first.create_tenant("acme")
    key = created["admin_key"]
    cookie = await sign_in(first, key, "ada@acme.example", "acme")
    webhook = await first.client.post(
        "/api/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"}, headers=first.auth(key)
    )
    assert webhook.status_code == 201, webhook.text
    registered = await first.client.post(
        "/api/v1/event-types", json={"name": "acme.thing"}, headers=first.auth(key)
    )
    assert registered.status_code == 201, registered.text
    published = await first.client.post(
        "/api/v1/events", json={"type": "acme.thing", "data": {"n": 1}}, headers=first.auth(key)
    )
    assert published.status_code in (200, 201, 202), published.text
    for node in nodes:
        assert (await node.client.get("/api/v1/keys", headers=first.auth(key))).status_code == 200

    deleted = await first.client.delete("/api/v1/tenants/acme", headers=first.auth())
    assert deleted.status_code == 204
    for node in nodes:
        for headers in (first.auth(key), cookie):
            await wait_for_status(node, headers, lambda code: code in (401, 403))
    problem(await first.client.get("/api/v1/tenants/acme", headers=first.auth()), 404, "not-found")
    async with first.fc.sessionmaker() as session:
        for table in metadata.sorted_tables:
            if "tenant_id" in table.c:
                left = await session.scalar(
                    select(func.count())
                    .select_from(table)
                    .where(table.c.tenant_id == created["id"])
                )
                assert left == 0, table.name
    # The operator's own tenant lost nothing.
    assert (await first.client.get("/api/v1/keys", headers=first.auth())).status_code == 200
