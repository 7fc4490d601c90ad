"""A collector run reaches the live streams: ``execution_complete`` after the run, and
``metrics_update`` with the run's metrics when it succeeded; a run started through the API
(``POST /api/v1/plugin-instances/{id}/execute``) as much as a scheduled one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from plugin_support import execute, files, install, instance, start
from sqlalchemy import update

from conftest import Harness
from forecourt.db.base import utcnow
from forecourt.plugins.models import PluginInstance
from forecourt.streams import channels
from forecourt.streams.subscriber import Ended, Subscriber

RECEIVE_TIMEOUT_S = 30.0  # a bound that catches a hang
PLUGIN = "com.example.streamed"
COLLECTOR = """
def collect(payload):
    return {"metrics": [{"name": "queue.oldest_s", "value": 1.5}]}
"""

NextOf = Callable[[str], Awaitable[dict[str, Any]]]


async def listening(h: Harness) -> tuple[Subscriber, NextOf]:
    """The collector installed, and a subscriber to its executions and metrics; with the
    next message of a type it receives."""
    await install(
        h,
        files(
            COLLECTOR,
            id=PLUGIN,
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
        channels.parse_all(channels.for_plugins([PLUGIN]), {"metrics:read", "plugins:read"})
    )
    assert hub.join(subscriber)

    async def next_of(type: str) -> dict[str, Any]:
        while True:
            item = await asyncio.wait_for(subscriber.next(), RECEIVE_TIMEOUT_S)
            assert not isinstance(item, Ended), item
            message: dict[str, Any] = json.loads(item)
            if message["type"] == type:
                return message

    return subscriber, next_of


async def published(next_of: NextOf, instance_id: str, trigger: str) -> None:
    done = await next_of("execution_complete")
    assert done["plugin_id"] == PLUGIN
    assert done["instance_id"] == instance_id
    assert done["execution"]["trigger"] == trigger
    assert done["execution"]["success"] is True, done
    assert done["execution"]["metrics_count"] == 1
    update_ = await next_of("metrics_update")
    assert update_["channel"] == f"metrics:{PLUGIN}"
    assert update_["instance_id"] == instance_id
    assert [m["name"] for m in update_["metrics"]] == ["queue.oldest_s"]


async def test_a_scheduled_run_publishes_execution_complete_and_metrics_update(
    harness_factory: Any,
) -> None:
    h = await start(harness_factory)
    subscriber, next_of = await listening(h)
    created = await instance(h, plugin_id=PLUGIN, name="streamed")
    async with h.fc.sessionmaker() as session, session.begin():
        await session.execute(
            update(PluginInstance)
            .where(PluginInstance.id == created["id"])
            .values(next_run_at=utcnow() - timedelta(seconds=1))
        )
    await published(next_of, created["id"], "schedule")
    h.fc.streams.leave(subscriber)


async def test_a_run_on_demand_publishes_them_too(harness_factory: Any) -> None:
    h = await start(harness_factory)
    # The scheduler stands still: the run asked for is the only one there can be.
    assert h.fc.plugin_scheduler is not None
    await h.fc.plugin_scheduler.stop(0)
    subscriber, next_of = await listening(h)
    created = await instance(h, plugin_id=PLUGIN, name="streamed")
    result = await execute(h, created["id"], {"interval_s": 60})
    assert result["status"] == "ok", result
    await published(next_of, created["id"], "api")
    h.fc.streams.leave(subscriber)
