"""A node keeps serving while its Redis dies and comes back: requests are never refused or
failed for it, readiness reports it, and the node returns to Redis once it answers."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from conftest import Harness, free_port, start_redis_server, stop_process
from forecourt.ratelimit import failover
from forecourt.ratelimit.failover import FailoverLimiter

SERVER_START_TIMEOUT_S = 5.0
RECOVERY_TIMEOUT_S = 60.0  # only catches a hang


async def served(h: Harness) -> httpx.Response:
    response = await h.client.get("/api/v1/keys", headers=h.auth())
    assert response.status_code == 200, response.text
    assert "ratelimit" in response.headers
    assert "ratelimit-policy" in response.headers
    assert "x-ratelimit-remaining" in response.headers
    return response


async def test_a_redis_outage_is_survived(harness_factory: Any, backend: str) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite nodes run without Redis: there is no Redis outage to survive")
    port = free_port()
    server = await start_redis_server(port)
    try:
        h: Harness = await harness_factory(redis_url=f"redis://127.0.0.1:{port}/0")
        limiter = h.fc.limiter
        assert isinstance(limiter, FailoverLimiter)
        for _ in range(3):
            await served(h)
        assert not limiter.primary_down
        assert (await h.client.get("/readyz")).status_code == 200

        await stop_process(server)
        # Every request is served (``served`` checks each) until the node notices the outage,
        # and then ten more, and more again past the limiter's next probe of the dead server.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RECOVERY_TIMEOUT_S
        while not limiter.primary_down:
            await served(h)
            assert loop.time() < deadline, "the outage went unnoticed"
        for _ in range(10):
            await served(h)
        probe_due = loop.time() + failover.RETRY_INTERVAL_S
        while loop.time() <= probe_due:
            await served(h)
            await asyncio.sleep(0.05)
        assert limiter.primary_down
        # Writes go on too; the invalidation broadcast is skipped, not fatal.
        created = await h.client.post(
            "/api/v1/keys", json={"name": "during", "scopes": ["keys:read"]}, headers=h.auth()
        )
        assert created.status_code == 201, created.text
        revoked = await h.client.post(
            f"/api/v1/keys/{created.json()['id']}/revoke", headers=h.auth()
        )
        assert revoked.status_code == 200, revoked.text
        ready = await h.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["redis"].startswith("unreachable")
        assert ready.json()["checks"]["database"] == "ok"

        server = await start_redis_server(port)
        deadline = loop.time() + RECOVERY_TIMEOUT_S
        while True:
            await served(h)
            ready = await h.client.get("/readyz")
            if ready.status_code == 200 and not limiter.primary_down:
                break
            assert loop.time() < deadline, (ready.text, limiter.primary_down)
            await asyncio.sleep(0.1)
        assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}
        # Counting is back in Redis: the restarted server holds this node's counters.
        await served(h)
        probe = Redis(host="127.0.0.1", port=port)
        try:
            assert await probe.dbsize() > 0
        finally:
            await probe.aclose()
    finally:
        await stop_process(server)
