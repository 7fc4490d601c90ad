"""Every plugin run ends with an execution record, whatever fails and wherever.

Failures are injected at each step of a run (files, pool, call, output check, publishing,
recording) and the plugin itself times out, crashes or is cancelled mid-run; each time the
run is recorded with a status. Event-triggered runs count their attempts when they are
claimed, so a row taken over after its lease expired stops at the attempt limit too.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from plugin_support import execute, executions, files, install, instance, start, wait_until
from sqlalchemy import func, insert, select

from conftest import Harness
from forecourt.db.base import utcnow
from forecourt.ids import new_id
from forecourt.plugins import runner as runner_module
from forecourt.plugins.models import Plugin, PluginInstance, PluginQueueItem
from forecourt.plugins.sandbox import WorkerPool

CODE = """
import os
import time


def run(payload):
    return {"records": payload["records"]}


def sleepy(payload):
    time.sleep(60)
    return {"records": []}


def crash(payload):
    os._exit(3)


def hook(payload):
    return {"events": []}


def slow_hook(payload):
    time.sleep(60)
    return {"events": []}
"""
INPUT = {"records": [{"a": 1}]}
MAX_ATTEMPTS = 3


class Injected(Exception):
    """A failure the test causes inside Forecourt."""


def fail(*args: Any, **kwargs: Any) -> Any:
    raise Injected("injected by the test")


async def afail(*args: Any, **kwargs: Any) -> Any:
    raise Injected("injected by the test")


async def transformation(h: Harness, entry: str = "run", **fields: Any) -> dict[str, Any]:
    await install(h, files(CODE, entry_point=f"plugin:{entry}", **fields))
    return await instance(h)


async def only_record(h: Harness, run: dict[str, Any]) -> dict[str, Any]:
    listed = await executions(h, "com.example.upper")
    assert [e["id"] for e in listed] == [run["id"]]
    return listed[0]


# -- a failure at each step of a run ---------------------------------------------------------


@pytest.mark.parametrize(
    "step", ["ensure_files", "pool", "call", "check_output"], ids=lambda step: step
)
async def test_a_failure_inside_forecourt_is_a_recorded_error(
    harness_factory: Any, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    h = await start(harness_factory)
    created = await transformation(h)
    runner = h.fc.plugin_runner
    if step == "ensure_files":
        monkeypatch.setattr(runner, "ensure_files", afail)
    elif step == "pool":
        monkeypatch.setattr(runner, "pool", afail)
    elif step == "call":
        monkeypatch.setattr(WorkerPool, "call", afail)
    else:
        monkeypatch.setattr(runner_module, "check_output", fail)

    run = await execute(h, created["id"], INPUT)

    assert run["status"] == "error"
    assert run["error_class"] == "InternalError"
    assert run["error_message"] == (
        "the run failed inside Forecourt (Injected); the server's log has the details"
    )
    assert run["output"] is None
    record = await only_record(h, run)
    assert record["status"] == "error"
    failed = await h.client.get(
        "/api/v1/events", params={"type": "plugin.failed"}, headers=h.auth()
    )
    assert [e["data"]["execution_id"] for e in failed.json()["items"]] == [run["id"]]


@pytest.mark.parametrize("step", ["follow_ups", "outcome"])
async def test_a_run_whose_outcome_cannot_be_published_is_still_recorded(
    harness_factory: Any, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    h = await start(harness_factory)
    created = await transformation(h)
    monkeypatch.setattr(runner_module.publishing, step, afail)

    run = await execute(h, created["id"], INPUT)

    assert run["status"] == "error"
    assert run["error_class"] == "RecordFailed"
    assert "could not be recorded (Injected)" in run["error_message"]
    record = await only_record(h, run)
    assert (record["status"], record["error_class"]) == ("error", "RecordFailed")


async def test_a_timeout_and_a_crash_are_recorded(harness_factory: Any) -> None:
    h = await start(harness_factory)
    await install(h, files(CODE, entry_point="plugin:sleepy", resources={"timeout_s": 0.5}))
    await install(
        h, files(CODE, id="com.example.crash", entry_point="plugin:crash", config_schema=None)
    )
    sleepy = await instance(h)
    crash = await instance(h, plugin_id="com.example.crash", name="crash")

    timed_out = await execute(h, sleepy["id"], INPUT)
    crashed = await execute(h, crash["id"], INPUT)

    assert (timed_out["status"], timed_out["error_class"]) == ("timeout", "Timeout")
    assert (crashed["status"], crashed["error_class"]) == ("killed", "WorkerDied")
    assert "exit status 3" in crashed["error_message"]
    await only_record(h, timed_out)
    listed = await executions(h, "com.example.crash")
    assert [(e["id"], e["status"]) for e in listed] == [(crashed["id"], "killed")]


async def test_a_run_cancelled_mid_call_is_recorded(harness_factory: Any) -> None:
    h = await start(harness_factory)
    created = await transformation(h, "sleepy")
    runner = h.fc.plugin_runner
    loaded = await h.client.get(f"/api/v1/plugin-instances/{created['id']}", headers=h.auth())
    assert loaded.status_code == 200
    async with h.fc.sessionmaker() as session:
        row = await session.get(PluginInstance, created["id"])
        assert row is not None
        plugin = await session.get(Plugin, row.plugin_version_id)
        assert plugin is not None
    task = asyncio.create_task(runner.run(row, plugin, INPUT, trigger="api"))

    async def busy() -> bool:
        pool = runner._pool
        return pool is not None and any(keyed.busy for keyed in pool._keys.values())

    await wait_until(busy, timeout_s=30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async def recorded() -> list[dict[str, Any]]:
        return await executions(h, "com.example.upper")

    listed = await wait_until(recorded)
    assert [(e["status"], e["error_class"]) for e in listed] == [("error", "Cancelled")]
    assert "cancelled" in listed[0]["error_message"]


# -- the attempt limit holds across lease takeovers --------------------------------------------


async def install_hook(h: Harness, entry: str, **fields: Any) -> None:
    await install(
        h,
        files(
            CODE,
            id="com.example.hook",
            type="hook",
            entry_point=f"plugin:{entry}",
            permissions={"events": ["alert.*"]},
            config_schema=None,
            **fields,
        ),
    )


async def drained(h: Harness) -> bool:
    """Whether the plugin event queue is empty."""
    async with h.fc.sessionmaker() as session:
        count = await session.scalar(select(func.count()).select_from(PluginQueueItem))
    return not count


async def test_a_row_taken_over_past_its_attempt_limit_is_recorded_and_dropped(
    harness_factory: Any,
) -> None:
    h = await start(harness_factory, plugin_event_max_attempts=MAX_ATTEMPTS)
    await install_hook(h, "hook")
    # Published before the instance exists, so only the rows written here are queued.
    published = await h.client.post(
        "/api/v1/events", json={"type": "alert.triggered", "data": {}}, headers=h.auth()
    )
    assert published.status_code in (200, 201), published.text
    event = published.json()
    created = await instance(h, plugin_id="com.example.hook", name="hook")
    tenant_id = event["tenant"]

    # Every attempt so far was claimed and never finished (the nodes died mid-run).
    exhausted = await insert_row(h, tenant_id, created["id"], event["id"], MAX_ATTEMPTS)

    async def recorded(count: int) -> list[dict[str, Any]]:
        listed = await executions(h, "com.example.hook")
        return listed if len(listed) >= count else []

    listed = await wait_until(lambda: recorded(1), timeout_s=30)
    assert await drained(h)
    assert [(e["status"], e["error_class"], e["attempt"]) for e in listed] == [
        ("error", "AttemptsExhausted", MAX_ATTEMPTS + 1)
    ]
    assert f"{MAX_ATTEMPTS} attempts were started" in listed[0]["error_message"]
    assert listed[0]["event_id"] == event["id"]
    assert exhausted

    # One attempt short of the limit: taken over, it runs once more, as the last attempt.
    await insert_row(h, tenant_id, created["id"], event["id"], MAX_ATTEMPTS - 1)
    listed = await wait_until(lambda: recorded(2), timeout_s=30)
    await wait_until(lambda: drained(h), timeout_s=30)
    assert sorted((e["status"], e["attempt"]) for e in listed) == [
        ("error", MAX_ATTEMPTS + 1),
        ("ok", MAX_ATTEMPTS),
    ]


async def test_runs_that_keep_dying_stop_at_the_attempt_limit(harness_factory: Any) -> None:
    """Each claim's run hangs and its lease runs out, as when the node running it dies; other
    claims take the row over until the limit, and the row then ends with a record."""
    h = await start(harness_factory, plugin_event_max_attempts=MAX_ATTEMPTS)
    await install_hook(h, "slow_hook", resources={"timeout_s": 100})
    router = h.fc.plugin_router
    assert router is not None
    router.lease = timedelta(seconds=1.0)  # each run outlives its lease: taken over
    await instance(h, plugin_id="com.example.hook", name="hook")
    published = await h.client.post(
        "/api/v1/events", json={"type": "alert.triggered", "data": {}}, headers=h.auth()
    )
    assert published.status_code in (200, 201), published.text

    async def recorded() -> list[dict[str, Any]]:
        return await executions(h, "com.example.hook")

    await wait_until(recorded, timeout_s=60)
    await wait_until(lambda: drained(h), timeout_s=60)
    # One record: the claim past the limit (a claim that found the row taken over again
    # meanwhile, on a busy machine, records nothing and counts one more attempt).
    listed = await recorded()
    assert [e["error_class"] for e in listed] == ["AttemptsExhausted"]
    assert listed[0]["attempt"] > MAX_ATTEMPTS
    # Exactly MAX_ATTEMPTS runs were started; they are still hanging, never finished.
    pool = h.fc.plugin_runner._pool
    assert pool is not None

    async def settled() -> bool:  # the router's last task ends once the row is dropped
        busy = sum(len(keyed.busy) for keyed in pool._keys.values())
        return busy == MAX_ATTEMPTS and len(router._running) == MAX_ATTEMPTS

    await wait_until(settled)


async def insert_row(
    h: Harness, tenant_id: str, instance_id: str, event_id: str, attempts: int
) -> str:
    row_id = new_id("pq")
    now = utcnow()
    async with h.fc.sessionmaker() as session, session.begin():
        await session.execute(
            insert(PluginQueueItem).values(
                id=row_id,
                tenant_id=tenant_id,
                instance_id=instance_id,
                event_id=event_id,
                event_type="alert.triggered",
                depth=0,
                attempts=attempts,
                next_attempt_at=now - timedelta(minutes=5),
                lease_owner="a-node-that-died",
                lease_expires_at=now - timedelta(minutes=1),
                created_at=now - timedelta(minutes=5),
            )
        )
    return row_id
