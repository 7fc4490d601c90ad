"""Events to hook and alert instances: queued with the event, run in the sandbox in the
background, retried when they time out, never holding up publishing or each other."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from plugin_support import (
    events,
    executions,
    files,
    install,
    instance,
    slack_like,
    start,
    wait_until,
)
from sqlalchemy import func, select

from conftest import Harness
from forecourt.plugins.models import PluginQueueItem
from forecourt.plugins.routing import MAX_DEPTH
from receivers import Receiver, Reply

HOOKS = """
import time

import forecourt_plugin


def boom(payload):
    raise RuntimeError("this hook always fails")


def slow(payload):
    time.sleep(float(forecourt_plugin.config().get("sleep_s", 2)))
    return {"events": []}


def meet(payload):
    # Say it started, then wait until every party has: only runs in flight at once can all
    # return (run one after the other, the first waits until its timeout).
    url = forecourt_plugin.config()["url"]
    forecourt_plugin.fetch(url + "/arrived", method="POST")
    while forecourt_plugin.fetch(url + "/all").status != 200:
        time.sleep(0.02)
    return {"events": []}


def echo(payload):
    return {"events": [{"type": "dashboard.viewed", "data": {"after": payload["event"]["type"]}}]}
"""
HANG_S = 60.0  # only catches a hang
SLOW_TIMEOUT_S = 10.0  # the slow hook's timeout: far longer than a delivery takes
SLEEP_SCHEMA = {
    "type": "object",
    "properties": {"sleep_s": {"type": "number"}, "url": {"type": "string"}},
}


@pytest.fixture
async def receiver() -> Any:
    async with Receiver() as started:
        yield started


def hook(
    entry: str, events: list[str], network: list[str] | None = None, **fields: Any
) -> dict[str, str]:
    permissions: dict[str, Any] = {"events": events}
    if network:
        permissions["network"] = network
    return files(
        HOOKS,
        id=f"com.example.{entry}",
        type="hook",
        entry_point=f"plugin:{entry}",
        permissions=permissions,
        config_schema=SLEEP_SCHEMA,
        **fields,
    )


async def publish(h: Harness, type: str, **fields: Any) -> dict[str, Any]:
    response = await h.client.post(
        "/api/v1/events", json={"type": type, "data": {"cpu": 97}, **fields}, headers=h.auth()
    )
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


async def queued(h: Harness) -> int:
    async with h.fc.sessionmaker() as session:
        count = await session.scalar(select(func.count()).select_from(PluginQueueItem))
    return int(count or 0)


async def test_an_alert_instance_gets_the_events_it_subscribes_to(
    harness_factory: Any, receiver: Receiver
) -> None:
    h = await start(harness_factory)
    await install(h, slack_like(receiver))
    url = receiver.url("/slack")
    alert = await instance(
        h,
        plugin_id="com.example.slack",
        name="slack",
        config={"webhook_url": url, "template": "*$type* ($severity) $subject"},
    )
    resolved_only = await instance(
        h,
        plugin_id="com.example.slack",
        name="resolved-only",
        config={"webhook_url": receiver.url("/resolved")},
        event_types=["alert.resolved"],
    )
    published = await publish(h, "alert.triggered", subject="cpu", severity="warning")
    await publish(h, "dashboard.created")  # not subscribed

    await receiver.wait_for(lambda: len(receiver.received) >= 1, 15, "the alert")
    message = json.loads(receiver.received[0].body)
    assert receiver.received[0].path == "/slack"
    assert message["text"].startswith("*alert.triggered* (warning) cpu")
    assert '"cpu": 97' in message["text"]

    ran = await wait_until(lambda: executions(h, "com.example.slack"))
    [execution] = ran
    assert execution["trigger"] == "event" and execution["status"] == "ok"
    assert execution["instance_id"] == alert["id"]
    assert execution["event_id"] == published["id"]
    # A queue row goes only once its run is recorded, with the events the run published
    # (and their own rows): an empty queue means nothing more is coming.
    await wait_until(lambda: _none(queued(h)))
    assert len(receiver.received) == 1
    assert await executions(h, "com.example.slack", instance_id=resolved_only["id"]) == []


async def test_a_failing_hook_holds_up_neither_publishing_nor_other_plugins(
    harness_factory: Any, receiver: Receiver
) -> None:
    h = await start(harness_factory, plugin_event_max_attempts=1)
    await install(h, hook("boom", ["alert.*"]))
    # The slow hook sleeps for an hour and ends only at its timeout: until then it has no
    # execution record, so whatever happens while there is none did not wait for it.
    await install(h, hook("slow", ["alert.*"], resources={"timeout_s": SLOW_TIMEOUT_S}))
    await install(h, slack_like(receiver))
    await instance(h, plugin_id="com.example.boom", name="boom")
    await instance(h, plugin_id="com.example.slow", name="slow", config={"sleep_s": 3600})
    await instance(
        h, plugin_id="com.example.slack", name="slack", config={"webhook_url": receiver.url()}
    )

    published = await asyncio.wait_for(publish(h, "alert.triggered"), HANG_S)
    assert await executions(h, "com.example.slow") == []  # publishing never waits for a plugin
    await receiver.wait_for(lambda: bool(receiver.received), SLOW_TIMEOUT_S, "the alert")
    [failed] = await wait_until(lambda: executions(h, "com.example.boom"))
    assert await executions(h, "com.example.slow") == []  # neither is behind the slow hook

    assert failed["status"] == "error" and failed["error_class"] == "RuntimeError"
    assert failed["event_id"] == published["id"] and failed["attempt"] == 1
    [slow] = await wait_until(lambda: executions(h, "com.example.slow"), timeout_s=HANG_S)
    assert slow["status"] == "timeout"
    failures = await events(h, "plugin.failed")
    assert sorted(e["data"]["plugin_id"] for e in failures) == [
        "com.example.boom",
        "com.example.slow",
    ]
    await wait_until(lambda: _none(queued(h)))
    assert len(await executions(h, "com.example.boom")) == 1  # an error is not retried


async def test_the_runs_of_one_event_are_in_flight_at_once(
    harness_factory: Any, receiver: Receiver
) -> None:
    """Two instances that each wait for the other to start: both return only if their runs
    overlap, whatever order they are claimed in."""
    h = await start(harness_factory, plugin_event_max_attempts=1)
    arrived = "/arrived"
    receiver.reply(arrived, Reply(status=204))
    receiver.reply(
        "/all",
        lambda _, __: Reply(status=200 if len(receiver.ids(arrived)) >= 2 else 409),
    )
    host = [f"127.0.0.1:{receiver.port}"]
    await install(h, hook("meet", ["alert.*"], network=host, resources={"timeout_s": 20}))
    for name in ("first", "second"):
        config = {"url": f"http://127.0.0.1:{receiver.port}"}
        await instance(h, plugin_id="com.example.meet", name=name, config=config)

    await publish(h, "alert.triggered")

    async def both() -> list[dict[str, Any]]:
        found = await executions(h, "com.example.meet")
        return found if len(found) == 2 else []

    ran = await wait_until(both, timeout_s=HANG_S)
    assert [e["status"] for e in ran] == ["ok", "ok"], ran
    assert len(receiver.ids(arrived)) == 2


async def test_timeouts_are_retried_then_given_up(harness_factory: Any) -> None:
    h = await start(harness_factory, plugin_event_max_attempts=3)
    await install(h, hook("slow", ["alert.triggered"], resources={"timeout_s": 0.5}))
    await instance(h, plugin_id="com.example.slow", name="slow", config={"sleep_s": 30})
    published = await publish(h, "alert.triggered")

    async def three() -> list[dict[str, Any]]:
        found = await executions(h, "com.example.slow")
        return found if len(found) >= 3 else []

    ran = await wait_until(three, timeout_s=30)
    assert sorted(e["attempt"] for e in ran) == [1, 2, 3]
    assert {e["status"] for e in ran} == {"timeout"}
    assert {e["event_id"] for e in ran} == {published["id"]}
    await wait_until(lambda: _none(queued(h)))  # nothing more is coming
    assert len(await executions(h, "com.example.slow")) == 3
    assert len(await events(h, "plugin.failed")) == 3


async def test_plugins_do_not_trigger_each_other_forever(harness_factory: Any) -> None:
    h = await start(harness_factory)
    await install(h, hook("echo", ["*"]))
    first = await instance(h, plugin_id="com.example.echo", name="first")
    await publish(h, "alert.triggered")
    await wait_until(lambda: executions(h, "com.example.echo"))
    await wait_until(lambda: _none(queued(h)))  # nothing more is coming
    # Its own follow-up and plugin.execution_completed events are not routed back to it.
    assert len(await executions(h, "com.example.echo", instance_id=first["id"])) == 1

    await instance(h, plugin_id="com.example.echo", name="second")
    await publish(h, "alert.resolved")  # its queue rows are committed with it
    await wait_until(lambda: _none(queued(h)), timeout_s=30)
    ran = len(await executions(h, "com.example.echo"))
    # Two instances feeding each other two events per run (a follow-up, and
    # plugin.execution_completed): 2, 4, 8 ... runs at each hop, cut after MAX_DEPTH hops.
    assert ran == 1 + sum(2 * 2**depth for depth in range(MAX_DEPTH + 1))


async def _none(count: Any) -> bool:
    return int(await count) == 0


async def test_an_instances_event_types_are_names_or_wildcards(
    harness_factory: Any, receiver: Receiver
) -> None:
    h = await start(harness_factory)
    await install(h, slack_like(receiver))
    body = {"plugin_id": "com.example.slack", "config": {"webhook_url": receiver.url("/x")}}
    for patterns, field in (
        (["alert.*", "Not A Type"], "event_types.1"),
        (["alert.**"], "event_types.0"),
        (["alert."], "event_types.0"),
    ):
        response = await h.client.post(
            "/api/v1/plugin-instances",
            json={**body, "name": "bad", "event_types": patterns},
            headers=h.auth(),
        )
        assert response.status_code == 422, response.text
        assert [e["field"] for e in response.json()["errors"]] == [field], patterns
    made = await instance(
        h, **body, name="good", event_types=["alert.triggered", "alert.*", "alert.*", "*"]
    )
    assert made["event_types"] == ["*", "alert.*", "alert.triggered"]  # sorted, no repeats
