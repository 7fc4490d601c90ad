"""Alerts through the REST API, on both backends: trigger, repeats counted on the
unresolved alert (also under concurrent triggers from two nodes), acknowledge, resolve,
filters, summary, bad input and tenant isolation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from conftest import Harness, problem
from forecourt import principal as principals
from forecourt.alerts.models import Alert
from forecourt.alerts.service import NewAlert
from forecourt.events.models import Event

ALERTS = "/api/v1/alerts"
DISK = {"type": "disk.full", "severity": "high", "message": "disk 91%", "labels": {"host": "a"}}


async def trigger(h: Harness, body: dict[str, Any], key: str | None = None) -> Any:
    return await h.client.post(ALERTS, json=body, headers=h.auth(key))


async def ok(response: Any, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


async def count_rows(h: Harness, model: Any, *where: Any) -> int:
    async with h.fc.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)))


async def test_a_repeat_counts_on_the_unresolved_alert(harness: Harness) -> None:
    h = harness
    first = await ok(await trigger(h, DISK), 201)
    assert first["state"] == "open" and first["count"] == 1
    assert first["source"] == "api" and first["labels"] == {"host": "a"}
    again = {**DISK, "severity": "critical", "message": "disk 95%"}
    second = await ok(await trigger(h, again), 200)
    assert second["id"] == first["id"]
    assert second["count"] == 2
    assert second["last_seen_at"] >= first["last_seen_at"]
    assert second["first_seen_at"] == first["first_seen_at"]
    assert (second["severity"], second["message"]) == ("critical", "disk 95%")
    # The same labels given again are a repeat (their order is tests/unit's
    # fingerprint test); other labels, another alert.
    same = {**DISK, "labels": {"host": "a"}}
    assert (await ok(await trigger(h, same), 200))["count"] == 3
    other = await ok(await trigger(h, {**DISK, "labels": {"host": "b"}}), 201)
    assert other["id"] != first["id"] and other["fingerprint"] != first["fingerprint"]
    # An acknowledged alert is still unresolved: a repeat counts on it.
    await ok(await h.client.post(f"{ALERTS}/{first['id']}/acknowledge", headers=h.auth()))
    repeated = await ok(await trigger(h, DISK), 200)
    assert (repeated["id"], repeated["state"], repeated["count"]) == (
        first["id"],
        "acknowledged",
        4,
    )
    # Resolved: the next trigger opens a new alert.
    await ok(await h.client.post(f"{ALERTS}/{first['id']}/resolve", headers=h.auth()))
    reopened = await ok(await trigger(h, DISK), 201)
    assert reopened["id"] != first["id"] and reopened["count"] == 1
    # One alert.triggered per opened alert, one alert.resolved per resolution.
    assert await count_rows(h, Event, Event.type == "alert.triggered") == 3
    assert await count_rows(h, Event, Event.type == "alert.resolved") == 1


async def test_state_transitions_and_conflicts(harness: Harness) -> None:
    h = harness
    alert = await ok(await trigger(h, DISK), 201)
    url = f"{ALERTS}/{alert['id']}"
    acked = await ok(await h.client.post(f"{url}/acknowledge", headers=h.auth()))
    assert acked["state"] == "acknowledged" and acked["acknowledged_at"]
    assert acked["acknowledged_by"]
    body = problem(await h.client.post(f"{url}/acknowledge", headers=h.auth()), 409, "conflict")
    assert "acknowledged" in body["detail"]
    resolved = await ok(await h.client.post(f"{url}/resolve", headers=h.auth()))
    assert resolved["state"] == "resolved" and resolved["resolved_at"]
    before = await ok(await h.client.get(url, headers=h.auth()))
    problem(await h.client.post(f"{url}/resolve", headers=h.auth()), 409, "conflict")
    body = problem(await h.client.post(f"{url}/acknowledge", headers=h.auth()), 409, "conflict")
    assert "resolved" in body["detail"]
    assert await ok(await h.client.get(url, headers=h.auth())) == before
    # An open alert may be resolved without being acknowledged.
    other = await ok(await trigger(h, {**DISK, "type": "cpu.hot"}), 201)
    done = await ok(await h.client.post(f"{ALERTS}/{other['id']}/resolve", headers=h.auth()))
    assert done["state"] == "resolved" and done["acknowledged_at"] is None
    for action in ("acknowledge", "resolve"):
        missing = await h.client.post(f"{ALERTS}/alr_nothere/{action}", headers=h.auth())
        problem(missing, 404, "not-found")
    problem(await h.client.get(f"{ALERTS}/alr_nothere", headers=h.auth()), 404, "not-found")


async def test_list_filters_pages_and_summary(harness: Harness) -> None:
    h = harness
    made = {}
    for name, severity in (("a", "critical"), ("b", "high"), ("c", "high"), ("d", "low")):
        body = {"type": f"t.{name}", "severity": severity, "labels": {}}
        made[name] = await ok(await trigger(h, body), 201)
    await ok(await h.client.post(f"{ALERTS}/{made['b']['id']}/acknowledge", headers=h.auth()))
    await ok(await h.client.post(f"{ALERTS}/{made['d']['id']}/resolve", headers=h.auth()))

    async def ids(**params: Any) -> list[str]:
        page = await ok(await h.client.get(ALERTS, params=params, headers=h.auth()))
        return [item["id"] for item in page["items"]]

    assert await ids() == [made[n]["id"] for n in "dcba"]  # newest first
    assert await ids(severity="high") == [made["c"]["id"], made["b"]["id"]]
    assert await ids(state="acknowledged") == [made["b"]["id"]]
    assert await ids(state="resolved", severity="low") == [made["d"]["id"]]
    assert await ids(type="t.a") == [made["a"]["id"]]
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert len(await ids(since=past, until=future)) == 4
    assert await ids(since=future) == []
    assert await ids(until=past) == []
    # Pages: no overlap, nothing skipped.
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = await ok(await h.client.get(ALERTS, params=params, headers=h.auth()))
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [made[n]["id"] for n in "dcba"]

    summary = await ok(await h.client.get(f"{ALERTS}/summary", headers=h.auth()))
    assert summary["total"] == 4
    assert summary["by_state"] == {"open": 2, "acknowledged": 1, "resolved": 1, "total": 4}
    assert summary["by_severity"]["high"] == {
        "open": 1,
        "acknowledged": 1,
        "resolved": 0,
        "total": 2,
    }
    assert summary["by_severity"]["medium"]["total"] == 0
    later = await ok(
        await h.client.get(f"{ALERTS}/summary", params={"since": future}, headers=h.auth())
    )
    assert later["total"] == 0


async def test_bad_input_is_a_clear_422_and_stores_nothing(harness: Harness) -> None:
    h = harness
    cases: list[tuple[dict[str, Any], str]] = [
        ({**DISK, "severity": "urgent"}, "severity"),
        ({k: v for k, v in DISK.items() if k != "severity"}, "severity"),
        ({**DISK, "type": ""}, "type"),
        ({**DISK, "type": "has space"}, "type"),
        ({**DISK, "labels": {"host": 1}}, "labels"),
        ({**DISK, "labels": {"bad key": "x"}}, "labels"),
        ({**DISK, "labels": {f"k{i}": "v" for i in range(17)}}, "labels"),
        ({**DISK, "message": "x" * 2001}, "message"),
        ({**DISK, "source": ""}, "source"),
        ({**DISK, "extra": 1}, "extra"),
    ]
    for body, field in cases:
        found = problem(await trigger(h, body), 422, "invalid-input")
        assert any(e["field"].startswith(field) for e in found["errors"]), (body, found)
    for params, field in (
        ({"severity": "urgent"}, "severity"),
        ({"state": "closed"}, "state"),
        ({"since": "2026-01-01T00:00:00"}, "since"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "since"),
        ({"limit": 0}, "limit"),
        ({"cursor": "%%%"}, "cursor"),
    ):
        found = problem(
            await h.client.get(ALERTS, params=params, headers=h.auth()), 422, "invalid-input"
        )
        assert any(e["field"] == field for e in found["errors"]), (params, found)
    assert await count_rows(h, Alert) == 0
    # Without alerts:write: 403, and nothing stored.
    reader = await h.create_key(["alerts:read"])
    problem(await trigger(h, DISK, reader["key"]), 403, "forbidden")
    assert await count_rows(h, Alert) == 0
    assert (await ok(await h.client.get(ALERTS, headers=h.auth(reader["key"]))))["items"] == []


async def test_tenants_do_not_share_alerts(harness: Harness) -> None:
    h = harness
    a = (await h.create_tenant("alpha"))["admin_key"]
    b = (await h.create_tenant("beta"))["admin_key"]
    mine = await ok(await trigger(h, DISK, a), 201)
    # The same type and labels in B: B's own alert, not a repeat of A's.
    theirs = await ok(await trigger(h, DISK, b), 201)
    assert theirs["id"] != mine["id"] and theirs["count"] == 1
    url = f"{ALERTS}/{mine['id']}"
    problem(await h.client.get(url, headers=h.auth(b)), 404, "not-found")
    for action in ("acknowledge", "resolve"):
        problem(await h.client.post(f"{url}/{action}", headers=h.auth(b)), 404, "not-found")
    listed = await ok(await h.client.get(ALERTS, headers=h.auth(b)))
    assert [item["id"] for item in listed["items"]] == [theirs["id"]]
    summary = await ok(await h.client.get(f"{ALERTS}/summary", headers=h.auth(b)))
    assert summary["total"] == 1
    assert (await ok(await h.client.get(url, headers=h.auth(a))))["state"] == "open"


async def test_concurrent_triggers_open_one_alert(harness_factory: Any, backend: str) -> None:
    """Two nodes (one on SQLite) trigger the same alert at once: one alert, every trigger
    counted, one alert.triggered event."""
    first: Harness = await harness_factory()
    nodes = [first, await harness_factory()] if backend == "postgres" else [first]
    repeats = 24

    async def fire(i: int) -> int:
        node = nodes[i % len(nodes)]
        response = await node.client.post(ALERTS, json=DISK, headers=node.auth(first.owner_key))
        assert response.status_code in (200, 201), response.text
        return response.status_code

    statuses = await asyncio.gather(*(fire(i) for i in range(repeats)))
    assert statuses.count(201) == 1
    assert await count_rows(first, Alert) == 1
    listed = await ok(await first.client.get(ALERTS, headers=first.auth()))
    assert listed["items"][0]["count"] == repeats
    assert await count_rows(first, Event, Event.type == "alert.triggered") == 1


async def test_a_host_app_triggers_in_process(harness: Harness) -> None:
    """Through ``fc.alerts(session)``, as Forecourt itself (the system actor)."""
    h = harness
    tenant = h.fc.operator_tenant_id
    assert tenant is not None
    new = NewAlert("queue.stuck", "medium", "no progress", "host-app", {"queue": "main"})
    async with h.fc.sessionmaker() as session:
        alert, created = await h.fc.alerts(session).trigger(principals.system(tenant), new)
    assert created and alert.count == 1
    (listed,) = (await ok(await h.client.get(ALERTS, headers=h.auth())))["items"]
    assert (listed["id"], listed["source"], listed["labels"]) == (
        alert.id,
        "host-app",
        {"queue": "main"},
    )
    async with h.fc.sessionmaker() as session:
        again, created = await h.fc.alerts(session).trigger(principals.system(tenant), new)
    assert not created and (again.id, again.count) == (alert.id, 2)
