"""The key cache: within its TTL a key is not looked up again, yet a revoked or rotated key
stops working at once, on this node and (through Redis pub/sub) on every other node.

Nodes run with a one-hour cache TTL, so only an invalidation can explain a key that stops
working within the test.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conftest import Harness
from forecourt.keys import auth as key_auth
from forecourt.keys import format as key_format
from forecourt.keys.cache import INVALIDATE_CHANNEL, CachedKey
from forecourt.keys.service import lookup

LONG_TTL_S = 3600
PROPAGATION_TIMEOUT_S = 1.0
SUBSCRIBE_TIMEOUT_S = 5.0
SQLITE_NO_BUS = (
    "SQLite nodes have no shared bus (no Redis): another node's cache expires by its TTL; "
    "cross-node invalidation is covered on the postgres backend"
)


def cached(h: Harness, raw: str) -> bool:
    hit, value = h.fc.key_cache.get(key_format.hash_key(raw, h.fc.key_config.secret))
    return hit and value is not None


async def status_with(h: Harness, raw: str) -> int:
    response = await h.client.get("/api/v1/keys", headers=h.auth(raw))
    return response.status_code


async def eventually_status(h: Harness, raw: str, expected: int, timeout_s: float) -> int:
    """The status ``raw`` gets on ``h``, polled until it is ``expected`` or time is up."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        status = await status_with(h, raw)
        if status == expected or asyncio.get_running_loop().time() > deadline:
            return status
        await asyncio.sleep(0.02)


async def wait_for_subscribers(h: Harness, count: int) -> None:
    """Until ``count`` nodes listen on the invalidation channel (their listeners subscribe
    in the background after start)."""
    assert h.fc.redis is not None
    channel = h.fc.settings.redis_prefix + INVALIDATE_CHANNEL
    deadline = asyncio.get_running_loop().time() + SUBSCRIBE_TIMEOUT_S
    while True:
        [(_, subscribers)] = await h.fc.redis.pubsub_numsub(channel)
        if subscribers >= count:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{subscribers} of {count} nodes"
        await asyncio.sleep(0.02)


async def two_nodes(harness_factory: Any) -> tuple[Harness, Harness]:
    a: Harness = await harness_factory(key_cache_ttl_s=LONG_TTL_S)
    b: Harness = await harness_factory(key_cache_ttl_s=LONG_TTL_S)
    assert a.owner_key == b.owner_key
    return a, b


# -- one node ------------------------------------------------------------------------------


async def test_revocation_is_immediate_on_the_same_node(harness_factory: Any) -> None:
    h: Harness = await harness_factory(key_cache_ttl_s=LONG_TTL_S)
    key = await h.create_key(["keys:read"])
    assert await status_with(h, key["key"]) == 200
    assert cached(h, key["key"])

    response = await h.client.post(f"/api/v1/keys/{key['id']}/revoke", headers=h.auth())
    assert response.status_code == 200, response.text
    assert await status_with(h, key["key"]) == 401


async def test_rotation_without_grace_is_immediate_on_the_same_node(harness_factory: Any) -> None:
    h: Harness = await harness_factory(key_cache_ttl_s=LONG_TTL_S)
    key = await h.create_key(["keys:read"])
    assert await status_with(h, key["key"]) == 200
    assert cached(h, key["key"])

    response = await h.client.post(
        f"/api/v1/keys/{key['id']}/rotate", json={"grace_period_s": 0}, headers=h.auth()
    )
    assert response.status_code == 200, response.text
    assert await status_with(h, key["key"]) == 401
    assert await status_with(h, response.json()["key"]) == 200


async def test_scope_changes_apply_at_once(harness_factory: Any) -> None:
    h: Harness = await harness_factory(key_cache_ttl_s=LONG_TTL_S)
    key = await h.create_key(["keys:read"])
    assert await status_with(h, key["key"]) == 200
    response = await h.client.patch(
        f"/api/v1/keys/{key['id']}", json={"scopes": ["audit-log:read"]}, headers=h.auth()
    )
    assert response.status_code == 200, response.text
    assert await status_with(h, key["key"]) == 403


# -- two nodes -----------------------------------------------------------------------------


async def test_revocation_reaches_another_node_at_once(harness_factory: Any, backend: str) -> None:
    if backend == "sqlite":
        pytest.skip(SQLITE_NO_BUS)
    a, b = await two_nodes(harness_factory)
    await wait_for_subscribers(a, 2)
    key = await a.create_key(["keys:read"])
    assert await status_with(b, key["key"]) == 200
    assert await status_with(b, b.owner_key) == 200
    assert cached(b, key["key"])
    assert cached(b, b.owner_key)

    response = await a.client.post(f"/api/v1/keys/{key['id']}/revoke", headers=a.auth())
    assert response.status_code == 200, response.text
    assert await status_with(a, key["key"]) == 401
    assert await eventually_status(b, key["key"], 401, PROPAGATION_TIMEOUT_S) == 401
    # Other keys stay cached and working on B.
    assert cached(b, b.owner_key)
    assert await status_with(b, b.owner_key) == 200


async def test_rotation_reaches_another_node_at_once(harness_factory: Any, backend: str) -> None:
    if backend == "sqlite":
        pytest.skip(SQLITE_NO_BUS)
    a, b = await two_nodes(harness_factory)
    await wait_for_subscribers(a, 2)
    key = await a.create_key(["keys:read"])
    assert await status_with(b, key["key"]) == 200
    assert cached(b, key["key"])

    response = await a.client.post(
        f"/api/v1/keys/{key['id']}/rotate", json={"grace_period_s": 0}, headers=a.auth()
    )
    assert response.status_code == 200, response.text
    assert await eventually_status(b, key["key"], 401, PROPAGATION_TIMEOUT_S) == 401
    assert await status_with(b, response.json()["key"]) == 200


async def test_rotation_with_grace_keeps_the_old_secret_on_another_node(
    harness_factory: Any, backend: str
) -> None:
    if backend == "sqlite":
        pytest.skip(SQLITE_NO_BUS)
    a, b = await two_nodes(harness_factory)
    await wait_for_subscribers(a, 2)
    key = await a.create_key(["keys:read"])
    assert await status_with(b, key["key"]) == 200

    response = await a.client.post(
        f"/api/v1/keys/{key['id']}/rotate", json={"grace_period_s": 3600}, headers=a.auth()
    )
    assert response.status_code == 200, response.text
    await asyncio.sleep(0.2)  # room for the invalidation to arrive
    assert await status_with(b, key["key"]) == 200
    assert await status_with(b, response.json()["key"]) == 200


# -- the cache itself ----------------------------------------------------------------------


def count_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the hash of every database lookup the authenticator makes."""
    seen: list[str] = []

    async def counting(session: Any, key_hash: str) -> CachedKey | None:
        seen.append(key_hash)
        return await lookup(session, key_hash)

    monkeypatch.setattr(key_auth, "lookup", counting)
    return seen


async def test_a_cached_key_is_not_looked_up_again_within_the_ttl(
    harness_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    h: Harness = await harness_factory(key_cache_ttl_s=LONG_TTL_S)
    key = await h.create_key(["keys:read"])
    key_hash = key_format.hash_key(key["key"], h.fc.key_config.secret)
    seen = count_lookups(monkeypatch)

    for _ in range(5):
        assert await status_with(h, key["key"]) == 200
    assert seen.count(key_hash) == 1

    # Concurrent misses after an invalidation share one lookup too.
    h.fc.key_cache.invalidate(key["id"])
    statuses = await asyncio.gather(*(status_with(h, key["key"]) for _ in range(10)))
    assert statuses == [200] * 10
    assert seen.count(key_hash) == 2


async def test_without_a_cache_every_request_looks_the_key_up(
    harness_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    h: Harness = await harness_factory(key_cache_ttl_s=0)
    key = await h.create_key(["keys:read"])
    key_hash = key_format.hash_key(key["key"], h.fc.key_config.secret)
    seen = count_lookups(monkeypatch)

    for _ in range(3):
        assert await status_with(h, key["key"]) == 200
    assert seen.count(key_hash) == 3


async def test_malformed_keys_never_reach_the_database(
    harness_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    h: Harness = await harness_factory(key_cache_ttl_s=LONG_TTL_S)
    seen = count_lookups(monkeypatch)
    tampered = h.owner_key[:-1] + ("A" if h.owner_key[-1] != "A" else "B")
    for raw in ("not-a-key", "fck_live_short", tampered):
        assert await status_with(h, raw) == 401
    assert seen == []
