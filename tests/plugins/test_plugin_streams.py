"""A scheduled collector run reaches the live streams: ``execution_complete`` after the run,
and ``metrics_update`` with the run's metrics when it succeeded."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

from plugin_support import files, install, instance, start
from sqlalchemy import update

from forecourt.db.base import utcnow
from forecourt.plugins.models import PluginInstance
from forecourt.streams import channels
from forecourt.streams.subscriber import Ended, Subscriber

RECEIVE_TIMEOUT_S = 30.0  # a bound that catches a hang
COLLECTOR = """
def collect(payload):
    return {"metrics": [{"name": "queue.oldest_s", "value": 1.5}]}
"""


async def test_a_scheduled_run_publishes_execution_complete_and_metrics_update(
    harness_factory: Any,
) -> None:
    h = await start(harness_factory)
    plugin_id = "com.example.streamed"
    await install(
        h,
        files(
            COLLECTOR,
            id=plugin_id,
            type="collector",
            entry_point="plugin:collect",
            permissions={"schedule_interval_s": 60, "metrics": ["queue.oldest_s"]},
        ),
    )
    hub = h.fc.streams
    assert h.fc.operator_tenant_id is not None
    subscriber = Subscriber(
        tenant_id=h.fc.operator_tenant_id,
        actor="key:test",
        queue_size=16,
        max_subscriptions=10,
        head=hub.head,
    )
    subscriber.subscribe(
        channels.parse_all(channels.for_plugins([plugin_id]), {"metrics:read", "plugins:read"})
    )
    assert hub.join(subscriber)
    created = await instance(h, plugin_id=plugin_id, name="streamed")
    async with h.fc.sessionmaker() as session, session.begin():
        await session.execute(
            update(PluginInstance)
            .where(PluginInstance.id == created["id"])
            .values(next_run_at=utcnow() - timedelta(seconds=1))
        )

    async def next_of(type: str) -> dict[str, Any]:
        while True:
            item = await asyncio.wait_for(subscriber.next(), RECEIVE_TIMEOUT_S)
            assert not isinstance(item, Ended), item
            message: dict[str, Any] = json.loads(item)
            if message["type"] == type:
                return message

    done = await next_of("execution_complete")
    assert done["plugin_id"] == plugin_id
    assert done["instance_id"] == created["id"]
    assert done["execution"]["success"] is True, done
    assert done["execution"]["metrics_count"] == 1
    update_ = await next_of("metrics_update")
    assert update_["channel"] == f"metrics:{plugin_id}"
    assert [m["name"] for m in update_["metrics"]] == ["queue.oldest_s"]
    hub.leave(subscriber)
