"""Bad input Forecourt must survive: each gets a clear 4xx problem and changes nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conftest import Harness
from forecourt import principal as principals
from forecourt.keys import format as key_format
from forecourt.keys.schemas import KeyCreate
from forecourt.tenants import service as tenants

KEYS = "/api/v1/keys"
AUDIT = "/api/v1/audit-log"
PROBLEM = "application/problem+json"
BASE62 = key_format.BASE62


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:forecourt:problem:")
    assert body["title"]
    assert body["detail"]
    assert "Traceback" not in response.text
    return body


def fields(body: dict[str, Any]) -> list[str]:
    return [e["field"] for e in body["errors"]]


async def snapshot(harness: Harness) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every key (without last_used_at, which the owner's own reads may move) and every
    audit entry of the default tenant."""
    keys = await harness.client.get(KEYS, params={"limit": 200}, headers=harness.auth())
    audit = await harness.client.get(AUDIT, params={"limit": 200}, headers=harness.auth())
    assert keys.status_code == audit.status_code == 200
    items = [
        {k: v for k, v in item.items() if k != "last_used_at"} for item in keys.json()["items"]
    ]
    return items, audit.json()["items"]


def wrong_checksum(key: str) -> str:
    last = key[-1]
    replacement = BASE62[(BASE62.index(last) + 1) % len(BASE62)]
    bad = key[:-1] + replacement
    assert not key_format.is_well_formed(bad)
    return bad


async def make_other_tenant(harness: Harness) -> tuple[str, str]:
    """A second tenant with an admin key of its own: (key id, raw key)."""
    async with harness.fc.sessionmaker() as session:
        tenant = await tenants.ensure(session, "tenant-b", "Tenant B")
        await session.commit()
        key, raw = await harness.fc.keys(session).create(
            principals.system(tenant.id), KeyCreate(name="b-owner", scopes=["admin"])
        )
    return key.id, raw


async def test_every_invalid_credential_gets_the_same_401(harness: Harness) -> None:
    # Long enough for four creates and three calls on a loaded machine.
    expires = datetime.now(UTC) + timedelta(seconds=5)
    expired = await harness.create_key(["keys:read"], expires_at=expires.isoformat())
    revoked = await harness.create_key(["keys:read"])
    rotated = await harness.create_key(["keys:read"])
    good = await harness.create_key(["keys:read"])

    # Make each one invalid in its own way, after a successful use (so it is cached).
    for created in (expired, revoked, rotated):
        ok = await harness.client.get(KEYS, headers=harness.auth(created["key"]))
        assert ok.status_code == 200
    response = await harness.client.post(f"{KEYS}/{revoked['id']}/revoke", headers=harness.auth())
    assert response.status_code == 200
    response = await harness.client.post(
        f"{KEYS}/{rotated['id']}/rotate", json={"grace_period_s": 0}, headers=harness.auth()
    )
    assert response.status_code == 200
    await asyncio.sleep(max(0.0, expires.timestamp() - time.time()) + 0.2)

    before = await snapshot(harness)
    attempts: dict[str, dict[str, str]] = {
        "missing": {},
        "empty bearer": {"Authorization": "Bearer "},
        "other scheme": {"Authorization": f"Basic {good['key']}"},
        "malformed": {"Authorization": "Bearer not-a-key"},
        "wrong checksum": harness.auth(wrong_checksum(good["key"])),
        "unknown but well formed": harness.auth(key_format.generate()),
        "expired": harness.auth(expired["key"]),
        "revoked": harness.auth(revoked["key"]),
        "rotated out": harness.auth(rotated["key"]),
    }
    bodies = {}
    for name, headers in attempts.items():
        for method, path in (("GET", KEYS), ("POST", KEYS), ("GET", f"{KEYS}/{good['id']}")):
            response = await harness.client.request(
                method,
                path,
                headers=headers,
                json={"name": "x", "scopes": ["keys:read"]} if method == "POST" else None,
            )
            body = assert_problem(response, 401)
            assert response.headers["www-authenticate"].lower().startswith("bearer")
            body.pop("instance", None)
            bodies[(name, method, path)] = body
    # No hint which: every body is the same.
    distinct = {tuple(sorted(b.items())) for b in bodies.values()}
    assert len(distinct) == 1, distinct
    assert await snapshot(harness) == before
    # The good key is still good.
    assert (await harness.client.get(KEYS, headers=harness.auth(good["key"]))).status_code == 200


async def test_missing_scope_is_403(harness: Harness) -> None:
    reader = await harness.create_key(["webhooks:read"])
    before = await snapshot(harness)
    response = await harness.client.get(KEYS, headers=harness.auth(reader["key"]))
    body = assert_problem(response, 403)
    assert body["type"] == "urn:forecourt:problem:forbidden"
    assert "keys:read" in body["detail"]
    response = await harness.client.post(
        KEYS, json={"name": "x", "scopes": ["webhooks:read"]}, headers=harness.auth(reader["key"])
    )
    assert_problem(response, 403)
    response = await harness.client.post(
        f"{KEYS}/{reader['id']}/revoke", headers=harness.auth(reader["key"])
    )
    assert_problem(response, 403)
    assert await snapshot(harness) == before


async def test_other_tenants_keys_are_404_and_never_listed(harness: Harness) -> None:
    b_id, b_raw = await make_other_tenant(harness)
    own = await harness.create_key(["keys:read"])
    before = await snapshot(harness)

    missing = await harness.client.get(
        f"{KEYS}/key_01NOSUCHKEY00000000000000", headers=harness.auth()
    )
    missing_body = assert_problem(missing, 404)
    calls = [
        ("GET", f"{KEYS}/{b_id}", None),
        ("GET", f"{KEYS}/{b_id}/usage", None),
        ("PATCH", f"{KEYS}/{b_id}", {"name": "hijacked"}),
        ("POST", f"{KEYS}/{b_id}/rotate", {"grace_period_s": 0}),
        ("POST", f"{KEYS}/{b_id}/revoke", None),
        ("DELETE", f"{KEYS}/{b_id}", None),
    ]
    for method, path, body in calls:
        response = await harness.client.request(method, path, json=body, headers=harness.auth())
        problem = assert_problem(response, 404)
        assert problem["type"] == missing_body["type"] == "urn:forecourt:problem:not-found"
        assert problem["title"] == missing_body["title"]

    # B's key was not touched: it still works, under its old name.
    response = await harness.client.get(f"{KEYS}/{b_id}", headers=harness.auth(b_raw))
    assert response.status_code == 200
    assert response.json()["name"] == "b-owner"
    assert response.json()["status"] == "active"

    a_ids = {k["id"] for k in before[0]}
    assert b_id not in a_ids
    assert own["id"] in a_ids
    b_list = await harness.client.get(KEYS, params={"limit": 200}, headers=harness.auth(b_raw))
    assert [k["id"] for k in b_list.json()["items"]] == [b_id]
    # And the other way round: B cannot reach A's keys either.
    response = await harness.client.get(f"{KEYS}/{own['id']}", headers=harness.auth(b_raw))
    assert_problem(response, 404)
    b_audit = await harness.client.get(AUDIT, headers=harness.auth(b_raw))
    assert all(e["target_id"] not in a_ids for e in b_audit.json()["items"])
    assert await snapshot(harness) == before


async def test_oversized_body_is_413(harness_factory: Any) -> None:
    harness: Harness = await harness_factory(max_body_bytes=1024)
    before = await snapshot(harness)
    big = {"name": "big", "scopes": ["keys:read"], "description": "x" * 1500}

    response = await harness.client.post(KEYS, json=big, headers=harness.auth())
    body = assert_problem(response, 413)
    assert body["type"] == "urn:forecourt:problem:payload-too-large"
    assert "1024" in body["detail"]

    async def chunks(total: int) -> AsyncIterator[bytes]:
        sent = 0
        while sent < total:
            yield b" " * 256
            sent += 256

    response = await harness.client.post(
        KEYS,
        content=chunks(4096),
        headers={**harness.auth(), "content-type": "application/json"},
    )
    assert_problem(response, 413)

    # Unauthenticated oversized bodies are refused the same way.
    response = await harness.client.post(KEYS, json=big)
    assert_problem(response, 413)
    assert await snapshot(harness) == before

    # A chunked body under the limit is read and handled normally.
    async def small() -> AsyncIterator[bytes]:
        yield b'{"name": "chunked", '
        yield b'"scopes": ["keys:read"]}'

    response = await harness.client.post(
        KEYS, content=small(), headers={**harness.auth(), "content-type": "application/json"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "chunked"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "scopes": "admin"}, "scopes"),
        ({"name": 5, "scopes": ["keys:read"]}, "name"),
        ({"name": "", "scopes": ["keys:read"]}, "name"),
        ({"scopes": ["keys:read"]}, "name"),
        ({"name": "x"}, "scopes"),
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "x", "scopes": [5]}, "scopes.0"),
        ({"name": "x", "scopes": ["keys:read", "keys:destroy"]}, "scopes"),
        (
            {"name": "x", "scopes": ["keys:read"], "rate_limits": {"minute": 0}},
            "rate_limits.minute",
        ),
        (
            {"name": "x", "scopes": ["keys:read"], "rate_limits": {"minute": -5}},
            "rate_limits.minute",
        ),
        (
            {"name": "x", "scopes": ["keys:read"], "rate_limits": {"fortnight": 3}},
            "rate_limits.fortnight",
        ),
        (
            {"name": "x", "scopes": ["keys:read"], "rate_limits": {"minute": True}},
            "rate_limits.minute",
        ),
        (
            {"name": "x", "scopes": ["keys:read"], "rate_limits": {"minute": "10"}},
            "rate_limits.minute",
        ),
        (
            {"name": "x", "scopes": ["keys:read"], "rate_limits": {"minute": 2.5}},
            "rate_limits.minute",
        ),
        ({"name": "x", "scopes": ["keys:read"], "rate_limits": [60]}, "rate_limits"),
        ({"name": "x", "scopes": ["keys:read"], "tier": "platinum"}, "tier"),
        ({"name": "x", "scopes": ["keys:read"], "environment": "prod"}, "environment"),
        (
            {"name": "x", "scopes": ["keys:read"], "expires_at": "2001-01-01T00:00:00Z"},
            "expires_at",
        ),
        ({"name": "x", "scopes": ["keys:read"], "expires_at": "soon"}, "expires_at"),
        ({"name": "x", "scopes": ["keys:read"], "colour": "red"}, "colour"),
        ({"name": "a\u0000b", "scopes": ["keys:read"]}, "name"),
        ({"name": "x", "scopes": ["keys:read"], "description": "\u0000"}, "description"),
        ({"name": "x", "scopes": ["keys:read"], "key": key_format.generate()}, "key"),
    ],
)
async def test_invalid_create_is_422_naming_the_field(
    harness: Harness, body: dict[str, Any], field: str
) -> None:
    before = await snapshot(harness)
    response = await harness.client.post(KEYS, json=body, headers=harness.auth())
    problem = assert_problem(response, 422)
    assert problem["type"] == "urn:forecourt:problem:invalid-input"
    assert field in fields(problem), problem
    assert await snapshot(harness) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": None}, "name"),
        ({"name": 5}, "name"),
        ({"scopes": None}, "scopes"),
        ({"scopes": "admin"}, "scopes"),
        ({"scopes": ["nope:read"]}, "scopes"),
        ({"name": "renamed", "rate_limits": {"minute": 0}}, "rate_limits.minute"),
        ({"name": "renamed", "rate_limits": {"fortnight": 3}}, "rate_limits.fortnight"),
        ({"name": "renamed", "tier": "platinum"}, "tier"),
        ({"name": "renamed", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "renamed", "colour": "red"}, "colour"),
        ({"name": "re\u0000named"}, "name"),
        ({"name": "renamed", "key_hash": "0" * 64}, "key_hash"),
    ],
)
async def test_invalid_update_is_422_and_changes_nothing(
    harness: Harness, body: dict[str, Any], field: str
) -> None:
    created = await harness.create_key(["keys:read"], name="original")
    before = await snapshot(harness)
    response = await harness.client.patch(
        f"{KEYS}/{created['id']}", json=body, headers=harness.auth()
    )
    problem = assert_problem(response, 422)
    assert field in fields(problem), problem
    assert await snapshot(harness) == before
    # The key works as before.
    assert (await harness.client.get(KEYS, headers=harness.auth(created["key"]))).status_code == 200


@pytest.mark.parametrize("grace", [-1, "soon", 10**9])
async def test_invalid_rotation_is_422_and_keeps_the_key(harness: Harness, grace: Any) -> None:
    created = await harness.create_key(["keys:read"])
    before = await snapshot(harness)
    response = await harness.client.post(
        f"{KEYS}/{created['id']}/rotate", json={"grace_period_s": grace}, headers=harness.auth()
    )
    assert "grace_period_s" in fields(assert_problem(response, 422))
    assert await snapshot(harness) == before
    assert (await harness.client.get(KEYS, headers=harness.auth(created["key"]))).status_code == 200


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"", b"[]", b"null", b'{"name": "x", "scopes": ["keys:read"]', b"\xff\xfe"],
)
async def test_body_that_is_not_a_json_object_is_422(harness: Harness, content: bytes) -> None:
    before = await snapshot(harness)
    response = await harness.client.post(
        KEYS, content=content, headers={**harness.auth(), "content-type": "application/json"}
    )
    problem = assert_problem(response, 422)
    assert problem["errors"]
    assert all(not e["field"].isdigit() for e in problem["errors"]), problem
    assert await snapshot(harness) == before


async def test_bad_query_parameters_are_422(harness: Harness) -> None:
    for params, field in (
        ({"cursor": "!!!"}, "cursor"),
        ({"cursor": "bm8tdW5kZXJzY29yZQ"}, "cursor"),
        ({"limit": 0}, "limit"),
        ({"limit": 100_000}, "limit"),
        ({"limit": "many"}, "limit"),
    ):
        response = await harness.client.get(KEYS, params=params, headers=harness.auth())
        assert fields(assert_problem(response, 422)) == [field], params


async def test_a_nul_character_in_a_query_is_never_a_500(harness: Harness, backend: str) -> None:
    """PostgreSQL cannot compare its text with U+0000: a 422 there. SQLite can, and nothing
    matches."""
    for path, params in (
        ("/api/v1/events", {"subject": "a\u0000b"}),
        ("/api/v1/events", {"type": "dashboard.\u0000"}),
        (AUDIT, {"action": "key.\u0000"}),
    ):
        response = await harness.client.get(path, params=params, headers=harness.auth())
        if backend == "postgres":
            body = assert_problem(response, 422)
            assert body["type"] == "urn:forecourt:problem:invalid-input"
            assert "U+0000" in body["detail"]
        else:
            assert response.status_code == 200, response.text
            assert response.json()["items"] == []


async def test_unknown_route_and_wrong_method(harness: Harness) -> None:
    before = await snapshot(harness)
    for headers in ({}, harness.auth()):
        response = await harness.client.get("/api/v1/nothing-here", headers=headers)
        body = assert_problem(response, 404)
        assert body["type"] == "urn:forecourt:problem:not-found"
    response = await harness.client.put(KEYS, json={"name": "x"}, headers=harness.auth())
    body = assert_problem(response, 405)
    assert body["type"] == "urn:forecourt:problem:method-not-allowed"
    assert "POST" in response.headers["allow"]
    response = await harness.client.delete(KEYS, headers=harness.auth())
    assert_problem(response, 405)
    assert await snapshot(harness) == before
