"""Alerts reach alert plugins like any event: the shipped Slack alert's code, allowed to
reach a loopback receiver instead of hooks.slack.com, posts one message when an alert opens
and one when it resolves (not for a repeat or an acknowledgement)."""

from __future__ import annotations

import json
from typing import Any

from plugin_support import install, instance, slack_like, start, wait_until
from sqlalchemy import func, select

from conftest import Harness
from forecourt.plugins.models import PluginQueueItem
from receivers import Receiver

WAIT_S = 30.0  # a bound that catches a hang, not a timing
ALERT = {"type": "disk.full", "severity": "critical", "labels": {"host": "a"}}


async def test_the_slack_alert_posts_when_an_alert_opens_and_resolves(
    harness_factory: Any,
) -> None:
    async with Receiver() as receiver:
        h: Harness = await start(harness_factory)
        await install(h, slack_like(receiver))
        await instance(
            h,
            plugin_id="com.example.slack",
            name="slack",
            config={
                "webhook_url": receiver.url("/slack"),
                "template": "$type ($severity) $subject",
            },
        )

        async def post(path: str, body: Any = None) -> dict[str, Any]:
            response = await h.client.post(path, json=body, headers=h.auth())
            assert response.status_code in (200, 201), response.text
            answer: dict[str, Any] = response.json()
            return answer

        opened = await post("/api/v1/alerts", ALERT)
        await post("/api/v1/alerts", ALERT)  # a repeat: no event
        await post(f"/api/v1/alerts/{opened['id']}/acknowledge")  # no event
        await post(f"/api/v1/alerts/{opened['id']}/resolve")
        await receiver.wait_for(lambda: len(receiver.received) >= 2, WAIT_S, "two Slack posts")
        texts = sorted(json.loads(r.body)["text"] for r in receiver.received)
        assert texts[0].startswith(f"alert.resolved (critical) {opened['id']}")
        assert texts[1].startswith(f"alert.triggered (critical) {opened['id']}")
        # A queue row goes only once its run is recorded: an empty queue means every event
        # for the instance has run, and nothing more is coming.
        await wait_until(lambda: _queue_empty(h), WAIT_S)
        assert len(receiver.received) == 2


async def _queue_empty(h: Harness) -> bool:
    async with h.fc.sessionmaker() as session:
        return not await session.scalar(select(func.count()).select_from(PluginQueueItem))
