"""Automatic actions are audited with the system as actor: an endpoint that the delivery
worker disables (a receiver answering 410 Gone) gets an ``endpoint.disabled`` entry by
``system`` in its tenant's log."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from conftest import Harness
from forecourt.webhooks.models import Endpoint
from receivers import Receiver, Reply, add_endpoint, publish

WAIT_S = 30.0  # only catches a hang


async def wait_disabled(h: Harness, endpoint_id: str) -> Endpoint:
    deadline = time.monotonic() + WAIT_S
    while True:
        async with h.fc.sessionmaker() as session:
            row = await session.get(Endpoint, endpoint_id)
        assert row is not None
        if not row.enabled:
            return row
        assert time.monotonic() < deadline, "the endpoint was never disabled"
        h.fc.wake_workers()
        await asyncio.sleep(0.05)


async def test_an_endpoint_disabled_by_the_worker_is_audited_as_the_system(
    harness_factory: Any,
) -> None:
    h: Harness = await harness_factory(webhook_allow_private="127.0.0.0/8")
    async with Receiver(Reply(status=410)) as receiver:
        endpoint = await add_endpoint(
            h.fc, receiver.url("/gone"), retry_policy={"kind": "none", "max_attempts": 1}
        )
        await publish(h.fc, endpoint)
        h.fc.wake_workers()
        row = await wait_disabled(h, endpoint.id)

    response = await h.client.get(
        "/api/v1/audit-log", params={"target_id": endpoint.id}, headers=h.auth()
    )
    assert response.status_code == 200, response.text
    entries = response.json()["items"]
    assert [e["action"] for e in entries] == ["endpoint.disabled"]
    entry = entries[0]
    assert entry["actor_type"] == "system"
    assert entry["actor_id"] is None
    assert entry["target_type"] == "endpoint"
    assert entry["after"]["enabled"] is False
    assert entry["after"]["automatic"] is True
    assert entry["after"]["disabled_reason"] == row.disabled_reason
    assert row.disabled_reason

    # By the system's own filter too: the log can be searched for automatic actions.
    by_action = await h.client.get(
        "/api/v1/audit-log", params={"action": "endpoint.disabled"}, headers=h.auth()
    )
    assert [e["actor_type"] for e in by_action.json()["items"]] == ["system"]


async def test_a_manual_disable_names_its_caller_not_the_system(harness_factory: Any) -> None:
    h: Harness = await harness_factory(webhook_allow_private="127.0.0.0/8")
    async with Receiver() as receiver:
        endpoint = await add_endpoint(
            h.fc, receiver.url("/ok"), retry_policy={"kind": "none", "max_attempts": 1}
        )
        response = await h.client.post(f"/api/v1/webhooks/{endpoint.id}/disable", headers=h.auth())
        assert response.status_code == 200, response.text
    entries = (
        await h.client.get("/api/v1/audit-log", params={"target_id": endpoint.id}, headers=h.auth())
    ).json()["items"]
    assert [(e["action"], e["actor_type"]) for e in entries] == [("endpoint.disabled", "key")]
