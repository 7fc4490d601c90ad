"""Where plugins run, a tenant's access is checked for each instance: event routing and the
scheduler skip the instances of a tenant whose plugin is not available to it or that it
disabled, in the query itself, whatever state the instance is in; other tenants' instances of
the same plugin keep running; and they resume once the plugin is usable again.

Each "nothing ran" check waits first for a witness: an instance of another plugin in the same
tenant that takes the same event (or is due at the same tick), so the router or the scheduler
has provably passed the instance it skipped.

The tenant's switch also turns its instances off; here each instance is then turned back on
in the database, as an instance made while the switch changed would be, so that only the
check where plugins run stands between it and a run.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from plugin_support import files, install, start, wait_until
from sqlalchemy import func, select, update

from conftest import Harness, problem
from forecourt.db.base import utcnow
from forecourt.plugins.models import PluginExecution, PluginInstance, PluginQueueItem
from forecourt.plugins.routing import EventRouter

HOOK = """
def run(payload):
    return {"events": []}


def collect(payload):
    return {"metrics": [{"name": "queue.depth", "value": 1}]}
"""
TRIGGER = "alert.triggered"
HANG_S = 30.0  # only catches a hang


def hook(plugin_id: str) -> dict[str, str]:
    return files(
        HOOK,
        id=plugin_id,
        type="hook",
        entry_point="plugin:run",
        permissions={"events": ["alert.*"]},
        config_schema={"type": "object"},
    )


def collector(plugin_id: str) -> dict[str, str]:
    return files(
        HOOK,
        id=plugin_id,
        type="collector",
        entry_point="plugin:collect",
        permissions={"schedule_interval_s": 5, "metrics": ["queue.depth"]},
        config_schema={"type": "object"},
    )


@pytest.fixture
async def h(harness_factory: Any) -> Harness:
    return await start(harness_factory)


async def new_instance(h: Harness, key: str | None, plugin_id: str, name: str) -> str:
    response = await h.client.post(
        "/api/v1/plugin-instances",
        json={"plugin_id": plugin_id, "name": name},
        headers=h.auth(key),
    )
    assert response.status_code == 201, response.text
    instance_id: str = response.json()["id"]
    return instance_id


async def set_enabled(h: Harness, key: str, plugin_id: str, enabled: bool) -> None:
    response = await h.client.patch(
        f"/api/v1/plugins/{plugin_id}", json={"enabled": enabled}, headers=h.auth(key)
    )
    assert response.status_code == 200, response.text
    assert response.json()["enabled"] is enabled


async def set_available(h: Harness, plugin_id: str, tenants: list[str] | None) -> None:
    body: dict[str, Any] = {"all_tenants": tenants is None, "tenants": tenants or []}
    response = await h.client.put(
        f"/api/v1/plugins/{plugin_id}/availability", json=body, headers=h.auth()
    )
    assert response.status_code == 200, response.text


async def turn_on(h: Harness, *instance_ids: str) -> None:
    """Enable instances in the database, past the tenant's switch (see the module docstring)."""
    async with h.fc.sessionmaker() as session, session.begin():
        await session.execute(
            update(PluginInstance).where(PluginInstance.id.in_(instance_ids)).values(enabled=True)
        )


async def due_now(h: Harness, *instance_ids: str) -> None:
    """Make the instances' next scheduled runs due now, in one statement (the same tick)."""
    async with h.fc.sessionmaker() as session, session.begin():
        await session.execute(
            update(PluginInstance)
            .where(PluginInstance.id.in_(instance_ids))
            .values(next_run_at=utcnow() - timedelta(seconds=1))
        )


async def runs(h: Harness, instance_id: str, trigger: str) -> list[PluginExecution]:
    async with h.fc.sessionmaker() as session:
        found = await session.scalars(
            select(PluginExecution).where(
                PluginExecution.instance_id == instance_id, PluginExecution.trigger == trigger
            )
        )
        return list(found.all())


async def ran_for(h: Harness, instance_id: str, event_id: str) -> bool:
    return any(r.event_id == event_id for r in await runs(h, instance_id, "event"))


async def publish(h: Harness, key: str | None) -> str:
    response = await h.client.post(
        "/api/v1/events", json={"type": TRIGGER, "data": {"cpu": 97}}, headers=h.auth(key)
    )
    assert response.status_code in (200, 201), response.text
    event_id: str = response.json()["id"]
    return event_id


async def execute(h: Harness, key: str, instance_id: str) -> httpx.Response:
    return await h.client.post(
        f"/api/v1/plugin-instances/{instance_id}/execute",
        json={"input": {"event": {"type": TRIGGER}}},
        headers=h.auth(key),
    )


async def hook_instances(h: Harness) -> tuple[str, str, str, str]:
    """Tenant beta's admin key; the default tenant's instance ("ours") and beta's ("theirs")
    of com.example.hook, and beta's witness that takes the same events."""
    beta = (await h.create_tenant("beta"))["admin_key"]
    await install(h, hook("com.example.hook"))
    await install(h, hook("com.example.witness"))
    ours = await new_instance(h, None, "com.example.hook", "ours")
    theirs = await new_instance(h, beta, "com.example.hook", "theirs")
    witness = await new_instance(h, beta, "com.example.witness", "witness")
    return beta, ours, theirs, witness


async def only_ours_run(h: Harness, beta: str, ours: str, theirs: str, witness: str) -> None:
    """With beta's plugin not usable to it and ``theirs`` turned on in the database: it can
    neither be executed nor take an event (its witness does), while the default tenant's
    instance of the same plugin still runs."""
    await turn_on(h, theirs)
    problem(await execute(h, beta, theirs), 409, "conflict")
    event = await publish(h, beta)
    await wait_until(lambda: ran_for(h, witness, event))
    assert await runs(h, theirs, "event") == []
    # The default tenant's instance of the same plugin still runs.
    ours_event = await publish(h, None)
    await wait_until(lambda: ran_for(h, ours, ours_event))


async def test_a_tenants_switch_stops_its_event_runs_only(h: Harness) -> None:
    beta, ours, theirs, witness = await hook_instances(h)

    await set_enabled(h, beta, "com.example.hook", False)
    await only_ours_run(h, beta, ours, theirs, witness)

    await set_enabled(h, beta, "com.example.hook", True)
    again = await publish(h, beta)
    await wait_until(lambda: ran_for(h, theirs, again))
    assert [r.event_id for r in await runs(h, theirs, "event")] == [again]


async def test_an_event_queued_before_the_switch_is_not_run_after_it(h: Harness) -> None:
    beta = (await h.create_tenant("beta"))["admin_key"]
    await install(h, hook("com.example.hook"))
    theirs = await new_instance(h, beta, "com.example.hook", "theirs")
    # The node's router stopped: the event is queued while the plugin is usable, and
    # claimed by another router after the tenant's switch.
    assert h.fc.plugin_router is not None
    await h.fc.plugin_router.stop(grace_s=HANG_S)
    await publish(h, beta)
    assert await queued(h) == 1
    await set_enabled(h, beta, "com.example.hook", False)
    await turn_on(h, theirs)
    router = EventRouter(h.fc.plugin_runner, "another-node")
    await router.start()
    try:
        await wait_until(lambda: _none_queued(h))
    finally:
        await router.stop(grace_s=HANG_S)
    assert await runs(h, theirs, "event") == []


async def queued(h: Harness) -> int:
    async with h.fc.sessionmaker() as session:
        count = await session.scalar(select(func.count()).select_from(PluginQueueItem))
    return int(count or 0)


async def _none_queued(h: Harness) -> bool:
    return await queued(h) == 0


async def test_availability_stops_a_tenants_event_runs_only(h: Harness) -> None:
    beta, ours, theirs, witness = await hook_instances(h)

    await set_available(h, "com.example.hook", ["default"])
    await only_ours_run(h, beta, ours, theirs, witness)

    await set_available(h, "com.example.hook", None)
    await turn_on(h, theirs)  # the operator's list turned it off; its admin would turn it on
    again = await publish(h, beta)
    await wait_until(lambda: ran_for(h, theirs, again))


async def test_a_tenants_switch_and_availability_stop_its_scheduled_runs_only(
    h: Harness,
) -> None:
    beta = (await h.create_tenant("beta"))["admin_key"]
    gamma = (await h.create_tenant("gamma"))["admin_key"]
    await install(h, collector("com.example.queues"))
    await install(h, collector("com.example.witness"))
    ours = await new_instance(h, None, "com.example.queues", "ours")
    off = await new_instance(h, beta, "com.example.queues", "off")
    lost = await new_instance(h, gamma, "com.example.queues", "lost")
    witnesses = [
        await new_instance(h, key, "com.example.witness", "witness") for key in (beta, gamma)
    ]

    await set_enabled(h, beta, "com.example.queues", False)
    await set_available(h, "com.example.queues", ["default", "beta"])
    await turn_on(h, off, lost)
    await due_now(h, ours, off, lost, *witnesses)
    for witness in witnesses:
        await wait_until(lambda w=witness: runs(h, w, "schedule"))  # type: ignore[misc]
    await wait_until(lambda: runs(h, ours, "schedule"))
    assert await runs(h, off, "schedule") == []
    assert await runs(h, lost, "schedule") == []

    # Usable again: the runs that waited are due, and run.
    await set_enabled(h, beta, "com.example.queues", True)
    await set_available(h, "com.example.queues", None)
    await turn_on(h, lost)
    await wait_until(lambda: runs(h, off, "schedule"))
    await wait_until(lambda: runs(h, lost, "schedule"))
