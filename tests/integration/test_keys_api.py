"""REST /api/v1/keys: the lifecycle of a key, on SQLite and on PostgreSQL + Redis."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from conftest import Harness
from forecourt.keys import format as key_format

KEYS = "/api/v1/keys"


def parse_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


def assert_no_secret(body: Any, raw_keys: list[str], harness: Harness, text: str) -> None:
    """No `key` field, no hash field, and neither the raw keys nor their hashes anywhere."""
    items = body["items"] if isinstance(body, dict) and "items" in body else [body]
    for item in items:
        assert "key" not in item
        assert not [name for name in item if "hash" in name], item
    for raw in raw_keys:
        assert raw not in text
        assert key_format.hash_key(raw, harness.fc.key_config.secret) not in text


async def status_with(harness: Harness, key: str, path: str = KEYS) -> int:
    response = await harness.client.get(path, headers=harness.auth(key))
    return response.status_code


async def list_all(
    harness: Harness, key: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        response = await harness.client.get(KEYS, params=params, headers=harness.auth(key))
        assert response.status_code == 200, response.text
        body = response.json()
        items.extend(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return items


async def test_create_returns_the_key_once_and_it_works_at_once(harness: Harness) -> None:
    response = await harness.client.post(
        KEYS,
        json={"name": "ci", "description": "for CI", "scopes": ["keys:read", "keys:read"]},
        headers=harness.auth(),
    )
    assert response.status_code == 201, response.text
    created = response.json()
    raw = created["key"]
    assert raw.startswith("fck_live_")
    assert key_format.is_well_formed(raw)
    assert created["prefix"] == raw[:13]
    assert len(created["prefix"]) == 13
    assert created["name"] == "ci"
    assert created["description"] == "for CI"
    assert created["scopes"] == ["keys:read"]
    assert created["status"] == "active"
    assert created["tier"] == "free"
    assert created["rate_limits"] == {}
    assert created["expires_at"] is None
    assert created["last_used_at"] is None
    assert created["revoked_at"] is None
    assert not [name for name in created if "hash" in name]
    assert key_format.hash_key(raw, harness.fc.key_config.secret) not in response.text

    # Usable straight away, as a Bearer token.
    assert await status_with(harness, raw) == 200

    got = await harness.client.get(f"{KEYS}/{created['id']}", headers=harness.auth())
    assert got.status_code == 200
    assert_no_secret(got.json(), [raw], harness, got.text)
    assert {k: v for k, v in got.json().items() if k != "last_used_at"} == {
        k: v for k, v in created.items() if k not in {"key", "last_used_at"}
    }
    listed = await harness.client.get(KEYS, headers=harness.auth())
    assert listed.status_code == 200
    assert_no_secret(listed.json(), [raw, harness.owner_key], harness, listed.text)
    assert created["id"] in [k["id"] for k in listed.json()["items"]]


async def test_test_environment_keys(harness: Harness) -> None:
    created = await harness.create_key(["keys:read"], environment="test")
    assert created["key"].startswith("fck_test_")
    assert created["environment"] == "test"
    assert await status_with(harness, created["key"]) == 200


async def test_list_pages_with_a_cursor_newest_first(harness: Harness) -> None:
    created_ids = []
    for i in range(7):
        created_ids.append((await harness.create_key(["keys:read"], name=f"k{i}"))["id"])
        await asyncio.sleep(0.002)  # ids order by millisecond
    seen: list[str] = []
    pages = 0
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        response = await harness.client.get(KEYS, params=params, headers=harness.auth())
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["items"]) <= 3
        seen.extend(item["id"] for item in body["items"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert len(body["items"]) == 3
    # 7 keys and the owner key: pages of 3, 3 and 2, every id exactly once.
    assert pages == 3
    assert len(seen) == len(set(seen)) == 8
    assert set(created_ids) <= set(seen)
    assert seen[:7] == list(reversed(created_ids))
    assert seen == sorted(seen, reverse=True)
    owner = [k for k in await list_all(harness) if k["name"] == "owner"]
    assert len(owner) == 1
    assert seen[-1] == owner[0]["id"]


async def test_get_unknown_key_is_404(harness: Harness) -> None:
    response = await harness.client.get(f"{KEYS}/key_doesnotexist", headers=harness.auth())
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_patch_changes_only_the_fields_given(harness: Harness) -> None:
    created = await harness.create_key(["keys:read"], name="before", description="d")
    key_id, raw = created["id"], created["key"]
    url = f"{KEYS}/{key_id}"

    response = await harness.client.patch(url, json={"name": "after"}, headers=harness.auth())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "after"
    assert body["description"] == "d"
    assert body["scopes"] == ["keys:read"]
    assert "key" not in body
    assert parse_time(body["updated_at"]) >= parse_time(created["updated_at"])  # type: ignore[operator]

    response = await harness.client.patch(
        url,
        json={"rate_limits": {"minute": 100, "second": 5}, "tier": "pro"},
        headers=harness.auth(),
    )
    assert response.status_code == 200, response.text
    assert response.json()["rate_limits"] == {"minute": 100, "second": 5}
    assert response.json()["tier"] == "pro"
    assert response.json()["name"] == "after"

    expires = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    response = await harness.client.patch(
        url, json={"expires_at": expires.isoformat()}, headers=harness.auth()
    )
    assert response.status_code == 200, response.text
    assert parse_time(response.json()["expires_at"]) == expires
    assert response.json()["status"] == "active"

    response = await harness.client.patch(url, json={"expires_at": None}, headers=harness.auth())
    assert response.status_code == 200, response.text
    assert response.json()["expires_at"] is None

    # All of it persisted.
    got = (await harness.client.get(url, headers=harness.auth())).json()
    assert got["name"] == "after"
    assert got["rate_limits"] == {"minute": 100, "second": 5}
    assert got["tier"] == "pro"
    assert got["expires_at"] is None
    assert got["description"] == "d"

    # New scopes take effect at once: the key's cached permissions are dropped.
    assert await status_with(harness, raw) == 200
    response = await harness.client.patch(
        url, json={"scopes": ["webhooks:read"]}, headers=harness.auth()
    )
    assert response.status_code == 200, response.text
    assert response.json()["scopes"] == ["webhooks:read"]
    assert await status_with(harness, raw) == 403


async def test_patch_with_past_expiry_is_refused(harness: Harness) -> None:
    created = await harness.create_key(["keys:read"])
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    response = await harness.client.patch(
        f"{KEYS}/{created['id']}", json={"expires_at": past}, headers=harness.auth()
    )
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["expires_at"]


async def test_rotate_keeps_the_old_secret_during_the_default_grace(harness: Harness) -> None:
    created = await harness.create_key(["keys:read"])
    old = created["key"]
    before = time.time()
    response = await harness.client.post(f"{KEYS}/{created['id']}/rotate", headers=harness.auth())
    assert response.status_code == 200, response.text
    rotated = response.json()
    new = rotated["key"]
    assert new != old
    assert key_format.is_well_formed(new)
    assert rotated["id"] == created["id"]
    assert rotated["prefix"] == new[:13]
    grace_end = parse_time(rotated["previous_expires_at"])
    assert grace_end is not None
    assert abs(grace_end.timestamp() - (before + 86_400)) < 60
    assert await status_with(harness, old) == 200
    assert await status_with(harness, new) == 200

    got = await harness.client.get(f"{KEYS}/{created['id']}", headers=harness.auth())
    assert got.json()["prefix"] == new[:13]
    assert_no_secret(got.json(), [old, new], harness, got.text)

    # A second rotation without grace ends the first one's grace too.
    response = await harness.client.post(
        f"{KEYS}/{created['id']}/rotate", json={"grace_period_s": 0}, headers=harness.auth()
    )
    assert response.status_code == 200, response.text
    newest = response.json()["key"]
    assert response.json()["previous_expires_at"] is None
    assert await status_with(harness, old) == 401
    assert await status_with(harness, new) == 401
    assert await status_with(harness, newest) == 200


async def test_rotate_without_grace_stops_the_old_secret_at_once(harness: Harness) -> None:
    created = await harness.create_key(["keys:read"])
    old = created["key"]
    assert await status_with(harness, old) == 200  # now cached
    response = await harness.client.post(
        f"{KEYS}/{created['id']}/rotate", json={"grace_period_s": 0}, headers=harness.auth()
    )
    assert response.status_code == 200, response.text
    assert await status_with(harness, old) == 401
    assert await status_with(harness, response.json()["key"]) == 200


async def test_rotate_with_short_grace_stops_the_old_secret_after_it(harness: Harness) -> None:
    created = await harness.create_key(["keys:read"])
    old = created["key"]
    response = await harness.client.post(
        f"{KEYS}/{created['id']}/rotate", json={"grace_period_s": 1}, headers=harness.auth()
    )
    assert response.status_code == 200, response.text
    new = response.json()["key"]
    assert await status_with(harness, old) == 200
    assert await status_with(harness, new) == 200
    await asyncio.sleep(1.5)
    assert await status_with(harness, old) == 401
    assert await status_with(harness, new) == 200


async def test_revoke_stops_the_key_immediately(harness: Harness) -> None:
    created = await harness.create_key(["keys:read"])
    raw = created["key"]
    assert await status_with(harness, raw) == 200  # now cached as valid
    response = await harness.client.post(f"{KEYS}/{created['id']}/revoke", headers=harness.auth())
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "revoked"
    assert response.json()["revoked_at"] is not None
    assert "key" not in response.json()
    assert await status_with(harness, raw) == 401

    got = (await harness.client.get(f"{KEYS}/{created['id']}", headers=harness.auth())).json()
    assert got["status"] == "revoked"
    # Revoking again changes nothing; a revoked key cannot be edited or rotated.
    again = await harness.client.post(f"{KEYS}/{created['id']}/revoke", headers=harness.auth())
    assert again.status_code == 200
    assert again.json()["revoked_at"] == got["revoked_at"]
    patched = await harness.client.patch(
        f"{KEYS}/{created['id']}", json={"name": "x"}, headers=harness.auth()
    )
    assert patched.status_code == 409
    rotated = await harness.client.post(f"{KEYS}/{created['id']}/rotate", headers=harness.auth())
    assert rotated.status_code == 409
    assert await status_with(harness, raw) == 401


async def test_delete_revokes(harness: Harness) -> None:
    created = await harness.create_key(["keys:read"])
    assert await status_with(harness, created["key"]) == 200
    response = await harness.client.delete(f"{KEYS}/{created['id']}", headers=harness.auth())
    assert response.status_code == 200
    assert response.json()["status"] == "revoked"
    assert await status_with(harness, created["key"]) == 401
    # Kept for the audit trail.
    assert created["id"] in [k["id"] for k in await list_all(harness)]


async def test_usage_counts_requests_by_status(harness: Harness) -> None:
    created = await harness.create_key(["keys:read"])
    raw = created["key"]
    n = 5
    for _ in range(n):
        assert await status_with(harness, raw) == 200
    forbidden = await harness.client.post(
        KEYS, json={"name": "x", "scopes": ["keys:read"]}, headers=harness.auth(raw)
    )
    assert forbidden.status_code == 403

    response = await harness.client.get(f"{KEYS}/{created['id']}/usage", headers=harness.auth())
    assert response.status_code == 200, response.text
    usage = response.json()
    assert usage["key_id"] == created["id"]
    totals = usage["totals_30d"]
    assert totals["requests"] == n + 1
    assert totals["status_2xx"] == n
    assert totals["status_4xx"] == 1
    assert totals["status_5xx"] == 0
    assert totals["rate_limited"] == 0
    assert usage["minute"], usage
    assert usage["hour"] and usage["day"]
    for span in ("minute", "hour", "day"):
        assert sum(p["requests"] for p in usage[span]) == n + 1
    assert usage["last_used_at"] is not None

    # The owner's own requests are not counted against this key, and a fresh key has none.
    other = await harness.create_key(["keys:read"])
    response = await harness.client.get(f"{KEYS}/{other['id']}/usage", headers=harness.auth())
    assert response.json()["totals_30d"]["requests"] == 0
    assert response.json()["minute"] == []


async def test_last_used_at_is_set_but_not_rewritten_on_every_request(harness: Harness) -> None:
    created = await harness.create_key(["keys:read"])
    raw, url = created["key"], f"{KEYS}/{created['id']}"
    await harness.fc.usage.flush()
    assert (await harness.client.get(url, headers=harness.auth())).json()["last_used_at"] is None

    before = datetime.now(UTC)
    assert await status_with(harness, raw) == 200
    await harness.fc.usage.flush()
    first = parse_time(
        (await harness.client.get(url, headers=harness.auth())).json()["last_used_at"]
    )
    assert first is not None
    assert before - timedelta(seconds=1) <= first <= datetime.now(UTC) + timedelta(seconds=1)

    await asyncio.sleep(0.05)
    assert await status_with(harness, raw) == 200
    await harness.fc.usage.flush()
    second = parse_time(
        (await harness.client.get(url, headers=harness.auth())).json()["last_used_at"]
    )
    assert second == first


async def test_a_key_grants_only_scopes_it_holds(harness: Harness) -> None:
    writer = await harness.create_key(["keys:write"])
    raw = writer["key"]
    count_before = len(await list_all(harness))

    response = await harness.client.post(
        KEYS, json={"name": "escalate", "scopes": ["webhooks:write"]}, headers=harness.auth(raw)
    )
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    response = await harness.client.post(
        KEYS, json={"name": "escalate", "scopes": ["admin"]}, headers=harness.auth(raw)
    )
    assert response.status_code == 403
    assert len(await list_all(harness)) == count_before

    response = await harness.client.post(
        KEYS, json={"name": "peer", "scopes": ["keys:write"]}, headers=harness.auth(raw)
    )
    assert response.status_code == 201, response.text
    assert response.json()["created_by"] == writer["id"]
    # keys:write implies keys:read, so it can hand that out too.
    response = await harness.client.post(
        KEYS, json={"name": "reader", "scopes": ["keys:read"]}, headers=harness.auth(raw)
    )
    assert response.status_code == 201, response.text

    # Nor can it widen a key's scopes beyond its own.
    response = await harness.client.patch(
        f"{KEYS}/{response.json()['id']}", json={"scopes": ["admin"]}, headers=harness.auth(raw)
    )
    assert response.status_code == 403


async def test_an_admin_key_never_raises_itself(harness: Harness) -> None:
    """admin may hand out any tier and limits to another key, never to itself, and never an
    expiry later than its own."""
    expires = datetime.now(UTC) + timedelta(days=1)
    admin = await harness.create_key(["admin"], tier="free", expires_at=expires.isoformat())
    me, raw = f"{KEYS}/{admin['id']}", admin["key"]
    for body in (
        {"expires_at": None},
        {"expires_at": (expires + timedelta(days=1)).isoformat()},
        {"tier": "enterprise"},
        {"rate_limits": {"minute": 100_000}},
    ):
        response = await harness.client.patch(me, json=body, headers=harness.auth(raw))
        assert response.status_code == 403, (body, response.text)
    got = (await harness.client.get(me, headers=harness.auth())).json()
    assert (got["tier"], got["rate_limits"]) == ("free", {})
    assert parse_time(got["expires_at"]) == parse_time(admin["expires_at"])
    # Lowering itself is fine.
    response = await harness.client.patch(
        me, json={"rate_limits": {"minute": 10}}, headers=harness.auth(raw)
    )
    assert response.status_code == 200, response.text

    # Its children: any tier, but no expiry beyond its own.
    response = await harness.client.post(
        KEYS,
        json={"name": "c", "scopes": ["keys:read"], "tier": "enterprise"},
        headers=harness.auth(raw),
    )
    assert response.status_code == 403, response.text
    response = await harness.client.post(
        KEYS,
        json={
            "name": "c",
            "scopes": ["keys:read"],
            "tier": "enterprise",
            "expires_at": (expires - timedelta(hours=1)).isoformat(),
        },
        headers=harness.auth(raw),
    )
    assert response.status_code == 201, response.text


async def test_only_the_operator_grants_system_admin(harness: Harness) -> None:
    admin = await harness.create_key(["admin"])
    for body in ({"scopes": ["system:admin"]}, {"scopes": ["admin", "system:admin"]}):
        response = await harness.client.post(
            KEYS, json={"name": "op", **body}, headers=harness.auth(admin["key"])
        )
        assert response.status_code == 403, response.text
    response = await harness.client.patch(
        f"{KEYS}/{admin['id']}",
        json={"scopes": ["system:admin"]},
        headers=harness.auth(admin["key"]),
    )
    assert response.status_code == 403, response.text
    # The owner key is the operator: it may.
    response = await harness.client.post(
        KEYS, json={"name": "op", "scopes": ["system:admin"]}, headers=harness.auth()
    )
    assert response.status_code == 201, response.text
    # And an admin key cannot act on the operator's keys, which hold more than admin.
    response = await harness.client.post(
        f"{KEYS}/{response.json()['id']}/revoke", headers=harness.auth(admin["key"])
    )
    assert response.status_code == 403, response.text


async def test_a_keys_writer_cannot_touch_the_owner_key(harness: Harness) -> None:
    writer = (await harness.create_key(["keys:write"]))["key"]
    owner = (await harness.client.get("/api/v1/auth/me", headers=harness.auth())).json()
    path = f"{KEYS}/{owner['actor_id']}"
    for method, suffix, body in (
        ("POST", "/rotate", None),
        ("POST", "/revoke", None),
        ("DELETE", "", None),
        ("PATCH", "", {"name": "mine"}),
        ("GET", "/usage", None),
    ):
        response = await harness.client.request(
            method, path + suffix, json=body, headers=harness.auth(writer)
        )
        assert response.status_code == 403, response.text
    assert await status_with(harness, harness.owner_key) == 200


async def test_expired_key_is_refused(harness: Harness) -> None:
    # Long enough for the create and the first call on a loaded machine.
    expires = datetime.now(UTC) + timedelta(seconds=4)
    created = await harness.create_key(["keys:read"], expires_at=expires.isoformat())
    assert await status_with(harness, created["key"]) == 200
    await asyncio.sleep(max(0.0, expires.timestamp() - time.time()) + 0.3)
    assert await status_with(harness, created["key"]) == 401
    got = (await harness.client.get(f"{KEYS}/{created['id']}", headers=harness.auth())).json()
    assert got["status"] == "expired"


async def test_keys_are_shared_between_nodes(harness_factory: Any) -> None:
    first = await harness_factory()
    second = await harness_factory()
    created = await first.create_key(["keys:read"])
    assert await status_with(second, created["key"]) == 200
    assert created["id"] in [k["id"] for k in await list_all(second, first.owner_key)]


async def test_key_changes_are_published_as_events(harness: Harness) -> None:
    created = await harness.create_key(["events:read"], name="announced")
    key_id = created["id"]
    rotated = await harness.client.post(
        f"/api/v1/keys/{key_id}/rotate", json={"grace_period_s": 0}, headers=harness.auth()
    )
    assert rotated.status_code == 200, rotated.text
    revoked = await harness.client.post(f"/api/v1/keys/{key_id}/revoke", headers=harness.auth())
    assert revoked.status_code == 200, revoked.text

    listed = await harness.client.get(
        "/api/v1/events", params={"type": "key.*"}, headers=harness.auth()
    )
    assert listed.status_code == 200, listed.text
    about_key = [e for e in listed.json()["items"] if e.get("subject") == key_id]
    # Newest first; the owner key made on first start is not announced.
    assert [e["type"] for e in about_key] == ["key.revoked", "key.rotated", "key.created"]
    for event in about_key:
        assert event["data"]["key_id"] == key_id
        assert event["data"]["name"] == "announced"
        assert created["key"] not in str(event) and rotated.json()["key"] not in str(event)
    assert len(listed.json()["items"]) == 3  # nothing about the owner key
