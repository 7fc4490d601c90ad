"""The audit log: every change recorded, no secrets in it, filters, paging, append-only."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from conftest import Harness
from forecourt import principal as principals
from forecourt.audit.models import AuditEntry
from forecourt.keys.models import ApiKey
from forecourt.keys.schemas import KeyCreate
from forecourt.tenants import service as tenants

PASSWORD = "a long enough password"
REQUEST_ID = "abc-123"


async def whoami(h: Harness, key: str | None = None) -> dict[str, Any]:
    response = await h.client.get("/api/v1/auth/me", headers=h.auth(key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def entries(h: Harness, key: str | None = None, **params: Any) -> list[dict[str, Any]]:
    """Every entry matching ``params``, all pages."""
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, "limit": 200, **({"cursor": cursor} if cursor else {})}
        response = await h.client.get("/api/v1/audit-log", params=query, headers=h.auth(key))
        assert response.status_code == 200, response.text
        page = response.json()
        found.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return found


async def changes(h: Harness) -> dict[str, Any]:
    """Create, update, rotate and revoke a key and create a user, all as the owner key."""
    headers = {**h.auth(), "X-Request-ID": REQUEST_ID}
    created = await h.client.post(
        "/api/v1/keys", json={"name": "before", "scopes": ["keys:read"]}, headers=headers
    )
    assert created.status_code == 201, created.text
    key = created.json()
    updated = await h.client.patch(
        f"/api/v1/keys/{key['id']}", json={"name": "after"}, headers=headers
    )
    assert updated.status_code == 200, updated.text
    rotated = await h.client.post(
        f"/api/v1/keys/{key['id']}/rotate", json={"grace_period_s": 60}, headers=headers
    )
    assert rotated.status_code == 200, rotated.text
    revoked = await h.client.post(f"/api/v1/keys/{key['id']}/revoke", headers=headers)
    assert revoked.status_code == 200, revoked.text
    user = await h.client.post(
        "/api/v1/users",
        json={"email": "audit@example.com", "password": PASSWORD, "role": "viewer"},
        headers=headers,
    )
    assert user.status_code == 201, user.text
    return {
        "key_id": key["id"],
        "raw_keys": [key["key"], rotated.json()["key"]],
        "user_id": user.json()["id"],
    }


async def test_every_change_is_recorded_with_who_where_and_what(harness: Harness) -> None:
    owner = await whoami(harness)
    done = await changes(harness)
    key_id = done["key_id"]

    on_key = await entries(harness, target_id=key_id)
    # Newest first.
    assert [e["action"] for e in on_key] == [
        "key.revoked",
        "key.rotated",
        "key.updated",
        "key.created",
    ]
    on_user = await entries(harness, target_id=done["user_id"])
    assert [e["action"] for e in on_user] == ["user.created"]

    for entry in [*on_key, *on_user]:
        assert entry["actor_type"] == "key"
        assert entry["actor_id"] == owner["actor_id"]
        assert entry["ip"] == "127.0.0.1"
        assert entry["request_id"] == REQUEST_ID
        assert entry["created_at"].endswith(("Z", "+00:00"))
    by_action = {e["action"]: e for e in [*on_key, *on_user]}
    assert by_action["key.created"]["target_type"] == "key"
    assert by_action["key.created"]["after"]["name"] == "before"
    assert by_action["key.created"]["after"]["scopes"] == ["keys:read"]
    assert by_action["key.updated"]["before"]["name"] == "before"
    assert by_action["key.updated"]["after"]["name"] == "after"
    assert by_action["key.rotated"]["after"]["grace_period_s"] == 60
    assert by_action["key.revoked"]["before"]["revoked_at"] is None
    assert by_action["key.revoked"]["after"]["revoked_at"] is not None
    assert by_action["user.created"]["target_type"] == "user"
    assert by_action["user.created"]["after"]["email"] == "audit@example.com"
    assert by_action["user.created"]["after"]["role"] == "viewer"

    # Every entry belongs to the caller's tenant.
    async with harness.fc.sessionmaker() as session:
        tenant_ids = set(
            await session.scalars(
                select(AuditEntry.tenant_id).where(
                    AuditEntry.target_id.in_([key_id, done["user_id"]])
                )
            )
        )
    assert tenant_ids == {owner["tenant_id"]}


async def test_entries_never_contain_secrets(harness: Harness) -> None:
    done = await changes(harness)
    async with harness.fc.sessionmaker() as session:
        key = await session.get(ApiKey, done["key_id"])
        assert key is not None
        hashes = [key.key_hash, key.previous_key_hash]
    assert all(hashes)

    listed = await entries(harness)
    assert len(listed) >= 6  # bootstrap's owner key + the five changes
    text_of_all = json.dumps(listed)
    for secret in [*done["raw_keys"], harness.owner_key, *hashes, PASSWORD]:
        assert secret not in text_of_all
    assert "$argon2" not in text_of_all
    for entry in listed:
        for summary in (entry["before"] or {}, entry["after"] or {}):
            assert not {"key", "key_hash", "previous_key_hash", "password", "password_hash"} & set(
                summary
            )


async def test_filters(harness: Harness) -> None:
    first = await changes(harness)
    writer = await harness.create_key(["keys:write", "audit-log:read"])
    made_by_writer = await harness.client.post(
        "/api/v1/keys",
        json={"name": "by-writer", "scopes": ["keys:read"]},
        headers=harness.auth(writer["key"]),
    )
    assert made_by_writer.status_code == 201

    by_actor = await entries(harness, actor_id=writer["id"])
    assert [(e["action"], e["target_id"]) for e in by_actor] == [
        ("key.created", made_by_writer.json()["id"])
    ]

    created = await entries(harness, action="key.created")
    assert {e["action"] for e in created} == {"key.created"}
    assert {first["key_id"], writer["id"], made_by_writer.json()["id"]} <= {
        e["target_id"] for e in created
    }

    key_actions = await entries(harness, action="key.*")
    assert {e["action"] for e in key_actions} == {
        "key.created",
        "key.updated",
        "key.rotated",
        "key.revoked",
    }
    everything = await entries(harness)
    assert len(key_actions) == sum(e["action"].startswith("key.") for e in everything)
    assert any(e["action"] == "user.created" for e in everything)

    on_target = await entries(harness, target_id=first["user_id"])
    assert [e["action"] for e in on_target] == ["user.created"]

    assert await entries(harness, action="nothing.happened") == []
    assert await entries(harness, target_id="key_doesnotexist") == []


async def test_since_and_until(harness: Harness) -> None:
    early = await harness.create_key(["keys:read"], name="early")
    await asyncio.sleep(0.05)
    middle = datetime.now(UTC)
    await asyncio.sleep(0.05)
    late = await harness.create_key(["keys:read"], name="late")

    after = await entries(harness, action="key.created", since=middle.isoformat())
    assert [e["target_id"] for e in after] == [late["id"]]
    before = await entries(harness, action="key.created", until=middle.isoformat())
    assert early["id"] in {e["target_id"] for e in before}
    assert late["id"] not in {e["target_id"] for e in before}
    # Other zones name the same instant.
    zulu = middle.isoformat().replace("+00:00", "Z")
    assert [e["target_id"] for e in await entries(harness, since=zulu, action="key.*")] == [
        late["id"]
    ]
    window = await entries(harness, since=middle.isoformat(), until=datetime.now(UTC).isoformat())
    assert [e["target_id"] for e in window] == [late["id"]]


@pytest.mark.parametrize("field", ["since", "until"])
async def test_naive_times_are_refused(harness: Harness, field: str) -> None:
    response = await harness.client.get(
        "/api/v1/audit-log", params={field: "2026-01-01T00:00:00"}, headers=harness.auth()
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == [field]


async def test_cursor_pagination_walks_every_entry_once(harness: Harness) -> None:
    await changes(harness)
    everything = await entries(harness)
    assert len(everything) >= 6

    walked: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        response = await harness.client.get(
            "/api/v1/audit-log", params=params, headers=harness.auth()
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert 1 <= len(page["items"]) <= 2
        walked.extend(e["id"] for e in page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 100
    assert walked == [e["id"] for e in everything]
    assert len(set(walked)) == len(walked)
    assert pages == (len(everything) + 1) // 2


async def test_bad_cursor_is_422(harness: Harness) -> None:
    response = await harness.client.get(
        "/api/v1/audit-log", params={"cursor": "!!!"}, headers=harness.auth()
    )
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["cursor"]


async def test_no_route_edits_the_log(harness: Harness) -> None:
    await changes(harness)
    before = await entries(harness)
    entry_id = before[0]["id"]
    for path in ("/api/v1/audit-log", f"/api/v1/audit-log/{entry_id}"):
        for method in ("PUT", "PATCH", "DELETE"):
            response = await harness.client.request(
                method, path, json={"action": "forged"}, headers=harness.auth()
            )
            assert response.status_code in {404, 405}, (method, path, response.text)
            assert response.headers["content-type"] == "application/problem+json"
    assert await entries(harness) == before


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET action = 'forged'",
        "DELETE FROM audit_log",
    ],
)
async def test_the_database_refuses_to_change_the_log(harness: Harness, statement: str) -> None:
    await changes(harness)
    async with harness.fc.sessionmaker() as session:
        count = await session.scalar(select(func.count()).select_from(AuditEntry))
    assert count

    with pytest.raises(DBAPIError, match="append-only"):
        async with harness.fc.engine.begin() as conn:
            await conn.execute(text(statement))

    async with harness.fc.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(AuditEntry)) == count
        forged = await session.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "forged")
        )
        assert forged == 0


async def test_reading_needs_the_audit_log_scope(harness: Harness) -> None:
    without = await harness.create_key(["keys:read", "keys:write", "users:read"])
    response = await harness.client.get("/api/v1/audit-log", headers=harness.auth(without["key"]))
    assert response.status_code == 403
    assert response.json()["type"].endswith(":forbidden")

    reader = await harness.create_key(["audit-log:read"])
    response = await harness.client.get("/api/v1/audit-log", headers=harness.auth(reader["key"]))
    assert response.status_code == 200

    anonymous = await harness.client.get("/api/v1/audit-log")
    assert anonymous.status_code == 401


async def test_other_tenants_entries_are_never_listed(harness: Harness) -> None:
    async with harness.fc.sessionmaker() as session:
        other = await tenants.ensure(session, "other-tenant", "Other")
        await session.commit()
        _, other_owner = await harness.fc.keys(session).create(
            principals.system(other.id), KeyCreate(name="other-owner", scopes=["admin"])
        )
    other_key = await harness.client.post(
        "/api/v1/keys",
        json={"name": "other-child", "scopes": ["keys:read"]},
        headers=harness.auth(other_owner),
    )
    assert other_key.status_code == 201
    mine = await harness.create_key(["keys:read"], name="mine")

    ours = await entries(harness)
    theirs = await entries(harness, other_owner)
    our_ids = {e["id"] for e in ours}
    their_ids = {e["id"] for e in theirs}
    assert our_ids.isdisjoint(their_ids)
    assert mine["id"] in {e["target_id"] for e in ours}
    assert other_key.json()["id"] not in {e["target_id"] for e in ours}
    assert other_key.json()["id"] in {e["target_id"] for e in theirs}
    assert mine["id"] not in {e["target_id"] for e in theirs}
    # Filtering by the other tenant's target does not reach across either.
    assert await entries(harness, target_id=other_key.json()["id"]) == []
    async with harness.fc.sessionmaker() as session:
        stored = await session.scalar(select(func.count()).select_from(AuditEntry))
    assert stored == len(ours) + len(theirs)
