"""A time without a time zone names no instant: every time parameter of the webhook,
delivery, alert and log routes refuses one with a 422 naming it (and changes nothing), and
takes the same time with its zone."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import Harness, free_port, problem

NAIVE = "2026-01-01T00:00:00"
ZONED = "2026-01-01T00:00:00Z"


@pytest.fixture
async def harness(harness_factory: Any) -> Harness:
    started: Harness = await harness_factory(webhook_allow_private="127.0.0.0/8")
    return started


@pytest.fixture
async def endpoint_id(harness: Harness) -> str:
    created = await harness.client.post(
        "/api/v1/webhooks",
        json={"url": f"http://127.0.0.1:{free_port()}/hook", "event_types": ["dashboard.*"]},
        headers=harness.auth(),
    )
    assert created.status_code == 201, created.text
    found: str = created.json()["id"]
    return found


def cases(endpoint_id: str) -> list[tuple[str, str, str]]:
    """(method, path, parameter) of every time parameter these routes take."""
    deliveries = f"/api/v1/webhooks/{endpoint_id}/deliveries"
    return [
        ("GET", deliveries, "since"),
        ("GET", deliveries, "until"),
        ("POST", f"/api/v1/webhooks/{endpoint_id}/recover", "since"),
        ("GET", "/api/v1/alerts", "since"),
        ("GET", "/api/v1/alerts", "until"),
        ("GET", "/api/v1/alerts/summary", "since"),
        ("GET", "/api/v1/alerts/summary", "until"),
        ("GET", "/api/v1/system/logs", "since"),
    ]


async def test_a_time_needs_its_zone(harness: Harness, endpoint_id: str) -> None:
    for method, path, name in cases(endpoint_id):
        refused = await harness.client.request(
            method, path, params={name: NAIVE}, headers=harness.auth()
        )
        body: dict[str, Any] = problem(refused, 422, "invalid-input")
        assert body["errors"][0]["field"] == name, (method, path, body)
        assert "time zone" in body["errors"][0]["message"], body
        taken = await harness.client.request(
            method, path, params={name: ZONED}, headers=harness.auth()
        )
        assert taken.status_code == 200, (method, path, taken.text)
