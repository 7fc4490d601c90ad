"""Alert rules and alerts in the audit log, on both backends.

Creating, changing and deleting a rule each write one entry in the tenant's log, in the
change's transaction, naming who (the key), from where (ip, request id) and what (the rule's
definition before and after, never the evaluator's status). A change refused with a 409 or a
422 writes none. Triggering, acknowledging and resolving an alert are recorded too. Another
tenant's log shows none of it.
"""

from __future__ import annotations

from typing import Any

from conftest import Harness, problem

RULES = "/api/v1/alert-rules"
ALERTS = "/api/v1/alerts"
SETTINGS = {"alert_evaluation_interval_s": 0}
REQUEST_ID = "alert-audit-1"
RULE = {
    "name": "backlog",
    "query": {"metric": "queue.depth", "labels": {"queue": "main"}, "window_s": 60},
    "condition": "above",
    "threshold": 100,
    "for_s": 120,
    "severity": "critical",
}


async def entries(h: Harness, key: str | None = None, **params: Any) -> list[dict[str, Any]]:
    """The log's entries matching ``params``, newest first (one page holds them all here)."""
    response = await h.client.get(
        "/api/v1/audit-log", params={**params, "limit": 200}, headers=h.auth(key)
    )
    assert response.status_code == 200, response.text
    assert response.json()["next_cursor"] is None
    found: list[dict[str, Any]] = response.json()["items"]
    return found


async def test_rule_changes_are_recorded(harness_factory: Any) -> None:
    h: Harness = await harness_factory(**SETTINGS)
    headers = {**h.auth(), "X-Request-ID": REQUEST_ID}
    me = (await h.client.get("/api/v1/auth/me", headers=h.auth())).json()

    created = await h.client.post(RULES, json=RULE, headers=headers)
    assert created.status_code == 201, created.text
    rule = created.json()
    url = f"{RULES}/{rule['id']}"
    [entry] = await entries(h, target_id=rule["id"])
    assert entry["action"] == "alert_rule.created"
    assert entry["target_type"] == "alert_rule"
    assert entry["before"] is None
    after = entry["after"]
    assert after["id"] == rule["id"]
    assert after["name"] == "backlog"
    assert after["query"] == {
        "metric": "queue.depth",
        "labels": {"queue": "main"},
        "aggregation": "avg",
        "window_s": 60,
    }
    assert (after["condition"], after["threshold"], after["for_s"]) == ("above", 100, 120)
    assert (after["severity"], after["enabled"]) == ("critical", True)
    assert "status" not in after  # the evaluator's state is not a change of the rule

    changed = await h.client.patch(url, json={"name": "queue", "threshold": 5}, headers=headers)
    assert changed.status_code == 200, changed.text
    # Refused changes leave no entry: a name another rule has (409), a bad field (422), a
    # condition the threshold does not fit (409).
    other = await h.client.post(RULES, json={**RULE, "name": "other"}, headers=h.auth())
    assert other.status_code == 201, other.text
    problem(await h.client.patch(url, json={"name": "other"}, headers=h.auth()), 409, "conflict")
    problem(await h.client.patch(url, json={"for_s": -1}, headers=h.auth()), 422, "invalid-input")
    problem(
        await h.client.patch(url, json={"condition": "absent", "threshold": 3}, headers=h.auth()),
        409,
        "conflict",
    )
    problem(
        await h.client.post(RULES, json=RULE | {"name": "other"}, headers=h.auth()), 409, "conflict"
    )

    deleted = await h.client.delete(url, headers=headers)
    assert deleted.status_code == 204, deleted.text

    found = await entries(h, target_id=rule["id"])
    assert [e["action"] for e in found] == [
        "alert_rule.deleted",
        "alert_rule.updated",
        "alert_rule.created",
    ]
    deletion, update, _ = found
    assert (update["before"]["name"], update["after"]["name"]) == ("backlog", "queue")
    assert (update["before"]["threshold"], update["after"]["threshold"]) == (100, 5)
    assert update["before"]["query"] == update["after"]["query"]
    assert deletion["before"]["name"] == "queue"
    assert deletion["before"]["threshold"] == 5
    assert deletion["after"] is None
    for item in found:
        assert item["actor_type"] == "key"
        assert item["actor_id"] == me["actor_id"]
        assert item["request_id"] == REQUEST_ID
        assert item["ip"] == "127.0.0.1"
    # Only the other rule's creation besides: no entry for anything refused.
    rule_entries = await entries(h, target_type="alert_rule")
    assert sorted(e["action"] for e in rule_entries) == sorted(
        ["alert_rule.created", "alert_rule.updated", "alert_rule.deleted", "alert_rule.created"]
    )

    # Another tenant's log shows none of it.
    beta = (await h.create_tenant("beta"))["admin_key"]
    assert await entries(h, beta, target_type="alert_rule") == []


async def test_alert_triggers_and_state_changes_are_recorded(harness_factory: Any) -> None:
    h: Harness = await harness_factory(**SETTINGS)
    body = {"type": "disk.full", "severity": "high", "labels": {"disk": "sda"}}
    opened = await h.client.post(ALERTS, json=body, headers=h.auth())
    assert opened.status_code == 201, opened.text
    alert = opened.json()
    repeat = await h.client.post(ALERTS, json=body, headers=h.auth())
    assert repeat.status_code == 200, repeat.text  # a repeat is not a new alert: no entry
    acked = await h.client.post(f"{ALERTS}/{alert['id']}/acknowledge", headers=h.auth())
    assert acked.status_code == 200, acked.text
    problem(
        await h.client.post(f"{ALERTS}/{alert['id']}/acknowledge", headers=h.auth()),
        409,
        "conflict",
    )
    resolved = await h.client.post(f"{ALERTS}/{alert['id']}/resolve", headers=h.auth())
    assert resolved.status_code == 200, resolved.text
    problem(
        await h.client.post(f"{ALERTS}/{alert['id']}/resolve", headers=h.auth()), 409, "conflict"
    )

    found = await entries(h, target_id=alert["id"])
    assert [e["action"] for e in found] == [
        "alert.resolved",
        "alert.acknowledged",
        "alert.triggered",
    ]
    assert {e["target_type"] for e in found} == {"alert"}
    triggered = found[-1]["after"]
    assert (triggered["type"], triggered["severity"]) == ("disk.full", "high")
    assert triggered["labels"] == {"disk": "sda"}
