"""Alert rules on both backends: above, below and absent with their for-duration, driven by
points written through the metrics API and explicit evaluations at chosen times; the
alert.triggered and alert.resolved events reach a real webhook receiver on loopback; one
node evaluates a rule at a time (two nodes on PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conftest import Harness, problem
from forecourt import codec
from receivers import Receiver

RULES = "/api/v1/alert-rules"
ALERTS = "/api/v1/alerts"
SETTINGS = {"alert_evaluation_interval_s": 0, "webhook_allow_private": "127.0.0.0/8"}
QUEUE = {"queue": "main"}
WAIT_S = 30.0  # a bound that catches a hang, not a timing


def start_time() -> datetime:
    """A whole second twenty minutes ago: every point of a test is in the past and within
    raw retention."""
    return (datetime.now(UTC) - timedelta(minutes=20)).replace(microsecond=0)


async def write(
    h: Harness, value: float, at: datetime, name: str = "queue.depth", labels: Any = None
) -> None:
    point = {"name": name, "value": value, "labels": labels or QUEUE, "time": at.isoformat()}
    response = await h.client.post("/api/v1/metrics", json={"points": [point]}, headers=h.auth())
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 1
    await h.fc.metrics.flush()


async def evaluate(h: Harness, at: datetime) -> int:
    return await h.fc.alert_evaluator.run_once(at)


async def make_rule(h: Harness, key: str | None = None, **fields: Any) -> dict[str, Any]:
    body = {
        "name": "backlog",
        "query": {"metric": "queue.depth", "labels": QUEUE, "aggregation": "avg", "window_s": 60},
        "condition": "above",
        "threshold": 100,
        "for_s": 120,
        "severity": "critical",
        **fields,
    }
    body = {k: v for k, v in body.items() if v is not None}  # threshold=None: none
    response = await h.client.post(RULES, json=body, headers=h.auth(key))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def rule_status(h: Harness, rule_id: str) -> dict[str, Any]:
    response = await h.client.get(f"{RULES}/{rule_id}", headers=h.auth())
    assert response.status_code == 200, response.text
    status: dict[str, Any] = response.json()["status"]
    return status


async def alerts(h: Harness, **params: Any) -> list[dict[str, Any]]:
    response = await h.client.get(ALERTS, params=params, headers=h.auth())
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_above_for_a_duration_reaches_a_webhook(harness_factory: Any) -> None:
    async with Receiver() as receiver:
        h: Harness = await harness_factory(**SETTINGS)
        endpoint = {"url": receiver.url(), "event_types": ["alert.*"]}
        response = await h.client.post("/api/v1/webhooks", json=endpoint, headers=h.auth())
        assert response.status_code == 201, response.text
        rule = await make_rule(h)
        t0 = start_time()
        s = timedelta(seconds=1)

        await write(h, 150, t0 - 10 * s)
        assert await evaluate(h, t0) == 1
        status = await rule_status(h, rule["id"])
        assert status["pending_since"] is not None and not status["firing"]
        assert status["last_value"] == 150
        await write(h, 160, t0 + 50 * s)
        await evaluate(h, t0 + 60 * s)
        assert not (await rule_status(h, rule["id"]))["firing"]
        assert await alerts(h) == []

        await write(h, 170, t0 + 110 * s)
        await evaluate(h, t0 + 120 * s)  # held for 120 s
        status = await rule_status(h, rule["id"])
        assert status["firing"] and status["alert_id"]
        (opened,) = await alerts(h)
        assert opened["id"] == status["alert_id"]
        assert (opened["type"], opened["severity"], opened["state"]) == (
            "metric.threshold",
            "critical",
            "open",
        )
        assert opened["rule_id"] == rule["id"] and opened["labels"]["rule_id"] == rule["id"]
        assert "170" in opened["message"]
        # Still holding: the same alert, no repeat.
        await evaluate(h, t0 + 150 * s)
        (still,) = await alerts(h)
        assert (still["id"], still["count"], still["state"]) == (opened["id"], 1, "open")

        await write(h, 20, t0 + 170 * s)
        await evaluate(h, t0 + 180 * s)  # the window (120 s, 180 s] averages 20
        (resolved,) = await alerts(h)
        assert resolved["state"] == "resolved" and resolved["id"] == opened["id"]
        status = await rule_status(h, rule["id"])
        assert not status["firing"] and status["alert_id"] is None

        await receiver.wait_for(
            lambda: len(receiver.received) >= 2, WAIT_S, "both alert events at the receiver"
        )
        bodies = [codec.loads(r.body) for r in receiver.received]
        assert [b["type"] for b in bodies] == ["alert.triggered", "alert.resolved"]
        assert {b["data"]["alert"]["id"] for b in bodies} == {opened["id"]}
        assert bodies[0]["severity"] == "critical"
        assert bodies[1]["data"]["alert"]["state"] == "resolved"


async def test_below_restarts_its_duration_when_it_stops_holding(harness_factory: Any) -> None:
    h: Harness = await harness_factory(**SETTINGS)
    rule = await make_rule(
        h,
        name="starved",
        condition="below",
        threshold=10,
        for_s=60,
        query={"metric": "queue.depth", "labels": QUEUE, "aggregation": "min", "window_s": 30},
    )
    t0 = start_time()
    s = timedelta(seconds=1)
    await write(h, 5, t0 - 5 * s)
    await evaluate(h, t0)
    assert (await rule_status(h, rule["id"]))["pending_since"] is not None
    await write(h, 50, t0 + 25 * s)
    await evaluate(h, t0 + 30 * s)  # min over (0 s, 30 s] is 50: not below
    assert (await rule_status(h, rule["id"]))["pending_since"] is None
    await write(h, 5, t0 + 55 * s)
    await evaluate(h, t0 + 60 * s)
    await write(h, 5, t0 + 85 * s)
    await evaluate(h, t0 + 90 * s)  # held 30 s of 60
    assert await alerts(h) == []
    await write(h, 5, t0 + 115 * s)
    await evaluate(h, t0 + 120 * s)
    (opened,) = await alerts(h)
    assert opened["state"] == "open"
    assert datetime.fromisoformat(opened["first_seen_at"]) == t0 + 120 * s


async def test_absent_opens_and_resolves(harness_factory: Any) -> None:
    h: Harness = await harness_factory(**SETTINGS)
    rule = await make_rule(
        h,
        name="heartbeat",
        condition="absent",
        threshold=None,
        for_s=60,
        query={"metric": "app.heartbeat", "labels": {}, "aggregation": "count", "window_s": 60},
        severity="medium",
    )
    assert rule["threshold"] is None
    t0 = start_time()
    s = timedelta(seconds=1)
    await evaluate(h, t0)
    assert (await alerts(h)) == []
    await evaluate(h, t0 + 60 * s)
    (first,) = await alerts(h)
    assert (first["type"], first["severity"]) == ("metric.absent", "medium")
    await write(h, 1, t0 + 90 * s, name="app.heartbeat", labels={})
    await evaluate(h, t0 + 120 * s)
    assert [a["state"] for a in await alerts(h)] == ["resolved"]
    # Silent again: after the duration, a new alert.
    await evaluate(h, t0 + 200 * s)
    await evaluate(h, t0 + 260 * s)
    newest, older = await alerts(h)
    assert (newest["state"], older["id"]) == ("open", first["id"])
    assert newest["id"] != first["id"]


async def test_rule_crud_and_bad_input(harness_factory: Any) -> None:
    h: Harness = await harness_factory(**SETTINGS)
    base = {
        "name": "r",
        "query": {"metric": "queue.depth"},
        "condition": "above",
        "threshold": 1,
    }
    # A refused field of a new rule is named after its condition: its schema is one per
    # condition (a threshold for above and below, none for absent).
    for body, field in (
        ({**base, "threshold": None}, "above.threshold"),
        ({k: v for k, v in base.items() if k != "threshold"}, "above.threshold"),
        ({**base, "condition": "absent"}, "absent.threshold"),
        ({**base, "condition": "equal"}, "body"),
        ({**base, "query": {"metric": "queue.depth", "aggregation": "p99"}}, "above.query"),
        ({**base, "query": {"metric": "queue.depth", "window_s": 0}}, "above.query.window_s"),
        ({**base, "query": {"metric": "no spaces"}}, "above.query.metric"),
        ({**base, "query": {"metric": "m", "labels": {"k": 1}}}, "above.query.labels"),
        ({**base, "for_s": -1}, "above.for_s"),
        ({**base, "for_s": "5"}, "above.for_s"),
        ({**base, "severity": "urgent"}, "above.severity"),
        ({**base, "name": ""}, "above.name"),
        ({**base, "name": "a\x00b"}, "above.name"),
        ({**base, "unknown": True}, "above.unknown"),
    ):
        response = await h.client.post(RULES, json=body, headers=h.auth())
        found = problem(response, 422, "invalid-input")
        assert any(e["field"].startswith(field) for e in found["errors"]), (body, found)
    listed = await h.client.get(RULES, headers=h.auth())
    assert listed.json()["items"] == []

    rule = await make_rule(h, name="r")
    assert rule["query"] == {
        "metric": "queue.depth",
        "labels": QUEUE,
        "aggregation": "avg",
        "window_s": 60,
    }
    problem(await h.client.post(RULES, json=base, headers=h.auth()), 409, "conflict")
    url = f"{RULES}/{rule['id']}"
    changed = await h.client.patch(url, json={"threshold": 5, "for_s": 0}, headers=h.auth())
    assert changed.status_code == 200, changed.text
    assert (changed.json()["threshold"], changed.json()["for_s"]) == (5, 0)
    absent = await h.client.patch(url, json={"condition": "absent"}, headers=h.auth())
    assert absent.status_code == 200 and absent.json()["threshold"] is None
    # Below what? The rule has no threshold now: a conflict with the rule, which stays.
    bad = await h.client.patch(url, json={"condition": "below"}, headers=h.auth())
    assert problem(bad, 409, "conflict")["detail"] == "A condition 'below' needs a threshold."
    assert (await h.client.get(url, headers=h.auth())).json()["condition"] == "absent"
    other = await make_rule(h, name="other")
    clash = await h.client.patch(f"{RULES}/{other['id']}", json={"name": "r"}, headers=h.auth())
    problem(clash, 409, "conflict")
    assert (await h.client.get(f"{RULES}/{other['id']}", headers=h.auth())).json()["name"] == (
        "other"
    )

    # Firing, then disabled: its alert is resolved.
    t0 = start_time()
    await write(h, 500, t0 - timedelta(seconds=5))
    await h.client.patch(f"{RULES}/{other['id']}", json={"for_s": 0}, headers=h.auth())
    await evaluate(h, t0)
    assert (await rule_status(h, other["id"]))["firing"]
    off = await h.client.patch(f"{RULES}/{other['id']}", json={"enabled": False}, headers=h.auth())
    assert off.status_code == 200 and not off.json()["status"]["firing"]
    assert [a["state"] for a in await alerts(h, type="metric.threshold")] == ["resolved"]
    # Firing, then deleted: its alert is resolved too.
    await h.client.patch(f"{RULES}/{other['id']}", json={"enabled": True}, headers=h.auth())
    await evaluate(h, t0 + timedelta(seconds=1))
    assert (await rule_status(h, other["id"]))["firing"]
    deleted = await h.client.delete(f"{RULES}/{other['id']}", headers=h.auth())
    assert deleted.status_code == 204
    assert {a["state"] for a in await alerts(h, type="metric.threshold")} == {"resolved"}
    problem(await h.client.get(f"{RULES}/{other['id']}", headers=h.auth()), 404, "not-found")

    # Another tenant sees none of it.
    b = (await h.create_tenant("beta"))["admin_key"]
    problem(await h.client.get(url, headers=h.auth(b)), 404, "not-found")
    problem(await h.client.patch(url, json={"for_s": 1}, headers=h.auth(b)), 404, "not-found")
    problem(await h.client.delete(url, headers=h.auth(b)), 404, "not-found")
    assert (await h.client.get(RULES, headers=h.auth(b))).json()["items"] == []
    assert (await h.client.get(url, headers=h.auth())).status_code == 200


async def test_worker_nodes_evaluate_in_the_background(harness_factory: Any) -> None:
    """With an interval, a node that runs workers evaluates rules by itself."""
    h: Harness = await harness_factory(alert_evaluation_interval_s=0.2)
    rule = await make_rule(
        h, name="silent", condition="absent", threshold=None, for_s=0, severity="low"
    )
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not (opened := await alerts(h)):
        assert asyncio.get_running_loop().time() < deadline, "no background evaluation"
        await asyncio.sleep(0.05)
    assert opened[0]["rule_id"] == rule["id"] and opened[0]["type"] == "metric.absent"
    assert (await rule_status(h, rule["id"]))["evaluated_at"] is not None


@pytest.mark.parametrize("backend", ["postgres"])
async def test_one_node_evaluates_a_rule_at_a_time(harness_factory: Any) -> None:
    """Node A holds the rule claimed; node B's pass at the same time evaluates nothing, and
    after A commits the rule is not due again at that time."""
    a: Harness = await harness_factory(**SETTINGS)
    b: Harness = await harness_factory(**SETTINGS)
    rule = await make_rule(a, for_s=0)
    t0 = start_time()
    await write(a, 500, t0 - timedelta(seconds=5))
    claimed = asyncio.Event()
    release = asyncio.Event()

    async def hold(ids: list[str]) -> None:
        assert ids == [rule["id"]]
        claimed.set()
        await release.wait()

    a.fc.alert_evaluator.after_claim = hold
    a_pass = asyncio.create_task(evaluate(a, t0))
    await asyncio.wait_for(claimed.wait(), WAIT_S)
    assert await evaluate(b, t0) == 0
    release.set()
    assert await asyncio.wait_for(a_pass, WAIT_S) == 1
    assert await evaluate(b, t0) == 0
    (opened,) = await alerts(a)
    assert opened["count"] == 1 and opened["rule_id"] == rule["id"]
    # Later, B evaluates it (A holds nothing).
    a.fc.alert_evaluator.after_claim = None
    assert await evaluate(b, t0 + timedelta(seconds=1)) == 1
    assert (await alerts(a))[0]["count"] == 1
