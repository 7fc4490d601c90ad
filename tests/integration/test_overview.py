"""The tenant overview: /stats/summary, /plugins/{id}/status, /plugins/categories.

Nodes run with a one-hour overview cache, so only an invalidation can explain a write that
shows on the next read: on the node that wrote, and (on PostgreSQL + Redis, through the
broadcast) on another node.
"""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from conftest import Harness, free_port, problem
from forecourt.overview.cache import INVALIDATE_CHANNEL

LONG_TTL_S = 3600
PROPAGATION_TIMEOUT_S = 5.0  # a generous bound that only catches a missing invalidation
DELIVERY_TIMEOUT_S = 30.0
SUBSCRIBE_TIMEOUT_S = 5.0
SUMMARY = "/api/v1/stats/summary"
PLUGIN = "com.example.flaky"
MANIFEST = f"""
id = "{PLUGIN}"
name = "Flaky"
version = "1.0.0"
type = "transformation"
category = "testing"
entry_point = "plugin:run"
"""
CODE = (
    "def run(payload):\n"
    "    if any(record.get('fail') for record in payload.get('records', [])):\n"
    "        raise ValueError('asked to fail')\n"
    "    return payload\n"
)
SETTINGS = {
    "overview_cache_ttl_s": LONG_TTL_S,
    "plugin_allow_unsigned": True,
    "webhook_allow_private": "127.0.0.0/8",
}


async def ok(response: Awaitable[httpx.Response], status: int = 200) -> dict[str, Any]:
    done = await response
    assert done.status_code == status, done.text
    body: dict[str, Any] = done.json()
    return body


async def summary(h: Harness, key: str | None = None) -> dict[str, Any]:
    return await ok(h.client.get(SUMMARY, headers=h.auth(key)))


async def status(h: Harness, plugin_id: str = PLUGIN, key: str | None = None) -> dict[str, Any]:
    return await ok(h.client.get(f"/api/v1/plugins/{plugin_id}/status", headers=h.auth(key)))


async def eventually(
    read: Callable[[], Awaitable[dict[str, Any]]],
    holds: Callable[[dict[str, Any]], bool],
    timeout_s: float = PROPAGATION_TIMEOUT_S,
) -> dict[str, Any]:
    """``read()``, again until ``holds`` or time is up; the last answer."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        found = await read()
        if holds(found) or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.02)


async def wait_for_subscribers(h: Harness, count: int) -> None:
    """Until ``count`` nodes listen on the overview channel."""
    assert h.fc.redis is not None
    channel = h.fc.settings.redis_prefix + INVALIDATE_CHANNEL
    deadline = asyncio.get_running_loop().time() + SUBSCRIBE_TIMEOUT_S
    while True:
        [(_, subscribers)] = await h.fc.redis.pubsub_numsub(channel)
        if subscribers >= count:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{subscribers} of {count} nodes"
        await asyncio.sleep(0.02)


async def two_nodes(harness_factory: Any, backend: str) -> tuple[Harness, Harness]:
    """Two nodes sharing PostgreSQL + Redis; on SQLite, one node twice."""
    a: Harness = await harness_factory(**SETTINGS)
    if backend == "sqlite":
        return a, a
    b: Harness = await harness_factory(**SETTINGS)
    await wait_for_subscribers(a, 2)
    return a, b


async def install(h: Harness) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("forecourt-plugin.toml", MANIFEST)
        archive.writestr("plugin.py", CODE)
    package = {"package": ("plugin.zip", buffer.getvalue(), "application/zip")}
    await ok(h.client.post("/api/v1/plugins", files=package, headers=h.auth()), 201)


async def instance(h: Harness, name: str, key: str | None = None) -> str:
    body = {"plugin_id": PLUGIN, "name": name, "config": {}}
    made = await ok(h.client.post("/api/v1/plugin-instances", json=body, headers=h.auth(key)), 201)
    return str(made["id"])


async def run(h: Harness, instance_id: str, fail: bool, key: str | None = None) -> str:
    done = await ok(
        h.client.post(
            f"/api/v1/plugin-instances/{instance_id}/execute",
            json={"input": {"records": [{"fail": fail}]}},
            headers=h.auth(key),
        )
    )
    return str(done["status"])


async def publish(h: Harness, key: str | None = None) -> None:
    kind = {"name": "overview.tested"}
    made = await h.client.post("/api/v1/event-types", json=kind, headers=h.auth(key))
    assert made.status_code in (201, 409), made.text  # 409: registered before
    body = {"type": "overview.tested", "data": {"n": 1}}
    await ok(h.client.post("/api/v1/events", json=body, headers=h.auth(key)), 201)


# -- the summary ---------------------------------------------------------------------------


async def test_the_summary_counts_what_the_tenant_holds_and_did(harness_factory: Any) -> None:
    h: Harness = await harness_factory(**SETTINGS)
    before = await summary(h)
    assert before["events_last_hour"] == 0
    assert before["open_alerts"]["total"] == 0
    assert before["executions_last_hour"]["total"] == 0
    assert before["plugins"]["installed"] >= 1  # the built-ins

    await install(h)
    instance_id = await instance(h, "flaky")
    assert await run(h, instance_id, fail=False) == "ok"
    await publish(h)
    alert = {"type": "disk.full", "severity": "high", "message": "disk"}
    await ok(h.client.post("/api/v1/alerts", json=alert, headers=h.auth()), 201)
    point = {"name": "overview.metric", "value": 1}
    await ok(h.client.post("/api/v1/metrics", json={"points": [point]}, headers=h.auth()), 202)
    await h.fc.metrics.flush()

    h.fc.overview_cache.invalidate(h.fc.operator_tenant_id or "")  # the metric write is not hooked
    after = await summary(h)
    assert after["plugins"]["installed"] == before["plugins"]["installed"] + 1
    assert after["instances"]["total"] == before["instances"]["total"] + 1
    assert after["instances"]["enabled"] == before["instances"]["enabled"] + 1
    ran = {
        s: after["executions_last_hour"][s] - n for s, n in before["executions_last_hour"].items()
    }
    assert ran["ok"] >= 1 and ran["total"] == ran["ok"]  # ours, and any scheduled built-in's
    assert after["events_last_hour"] >= 1
    assert after["open_alerts"]["high"] == 1 and after["open_alerts"]["total"] == 1
    assert after["metrics"]["series"] >= 1 and after["metrics"]["points"] >= 1


async def test_the_summary_is_the_callers_tenant_alone(harness: Harness) -> None:
    await publish(harness)
    alert = {"type": "disk.full", "severity": "low", "message": "disk"}
    await ok(harness.client.post("/api/v1/alerts", json=alert, headers=harness.auth()), 201)
    other = (await harness.create_tenant("beta"))["admin_key"]
    theirs = await summary(harness, other)
    assert theirs["events_last_hour"] == 0
    assert theirs["open_alerts"]["total"] == 0
    assert theirs["instances"]["total"] == 0


async def test_a_read_within_the_ttl_is_served_from_the_cache(harness_factory: Any) -> None:
    h: Harness = await harness_factory(**SETTINGS)
    tenant = await h.create_tenant("beta")  # no built-in instance runs here meanwhile
    key = tenant["admin_key"]
    first = await summary(h, key)
    # Metric points do not drop the cache: within the TTL, the same answer.
    point = {"name": "overview.metric", "value": 1}
    await ok(h.client.post("/api/v1/metrics", json={"points": [point]}, headers=h.auth(key)), 202)
    await h.fc.metrics.flush()
    assert await summary(h, key) == first
    h.fc.overview_cache.invalidate(tenant["id"])
    assert (await summary(h, key))["metrics"]["series"] == first["metrics"]["series"] + 1


async def test_writes_show_on_the_next_read_on_every_node(
    harness_factory: Any, backend: str
) -> None:
    a, b = await two_nodes(harness_factory, backend)
    await install(b)
    instance_id = await instance(b, "flaky")
    first = await summary(a)

    await publish(b)
    found = await eventually(
        lambda: summary(a),
        lambda s: s["events_last_hour"] == first["events_last_hour"] + 1,
    )
    assert found["events_last_hour"] == first["events_last_hour"] + 1

    alert = {"type": "disk.full", "severity": "critical", "message": "disk"}
    await ok(b.client.post("/api/v1/alerts", json=alert, headers=b.auth()), 201)
    found = await eventually(lambda: summary(a), lambda s: s["open_alerts"]["critical"] == 1)
    assert found["open_alerts"]["critical"] == 1

    def failed(s: dict[str, Any]) -> int:
        return int(s["executions_last_hour"]["total"] - s["executions_last_hour"]["ok"])

    assert failed(found) == 0
    assert await run(b, instance_id, fail=True) != "ok"
    found = await eventually(lambda: summary(a), lambda s: failed(s) == 1)
    assert failed(found) == 1


async def test_a_recorded_delivery_attempt_drops_the_summary(harness_factory: Any) -> None:
    h: Harness = await harness_factory(**SETTINGS)
    endpoint = {"url": f"http://127.0.0.1:{free_port()}/hook", "event_types": []}
    await ok(h.client.post("/api/v1/webhooks", json=endpoint, headers=h.auth()), 201)
    await publish(h)
    assert (await summary(h))["deliveries"]["total"] == 1
    # The worker's attempt fails (nothing listens) and is recorded: the delivery moves on.
    found = await eventually(
        lambda: summary(h),
        lambda s: s["deliveries"]["pending"] + s["deliveries"]["delivering"] == 0,
        DELIVERY_TIMEOUT_S,
    )
    assert found["deliveries"]["retrying"] + found["deliveries"]["failed"] == 1, found


# -- plugin status ---------------------------------------------------------------------------


async def test_status_shows_each_instances_health(harness_factory: Any, backend: str) -> None:
    a, b = await two_nodes(harness_factory, backend)
    await install(b)
    healthy = await instance(b, "a-healthy")
    failing = await instance(b, "b-failing")
    empty = await status(a)
    assert [i["name"] for i in empty["instances"]] == ["a-healthy", "b-failing"]
    assert all(i["last_run_at"] is None for i in empty["instances"])

    assert await run(b, healthy, fail=False) == "ok"
    assert await run(b, failing, fail=False) == "ok"
    for _ in range(2):
        assert await run(b, failing, fail=True) != "ok"

    found = await eventually(
        lambda: status(a), lambda s: s["instances"][1]["consecutive_errors"] == 2
    )
    good, bad = found["instances"]
    assert good["instance_id"] == healthy
    assert good["consecutive_errors"] == 0 and good["errors_last_hour"] == 0
    assert good["last_success_at"] is not None
    assert good["last_success_at"] == good["last_run_at"]
    assert bad["instance_id"] == failing
    assert bad["consecutive_errors"] == 2 and bad["errors_last_hour"] == 2
    assert bad["last_status"] != "ok"
    assert bad["last_success_at"] is not None and bad["last_run_at"] > bad["last_success_at"]
    assert bad["next_run_at"] is None  # not scheduled

    # A success ends the streak; the hour's errors stay.
    assert await run(b, failing, fail=False) == "ok"
    found = await eventually(
        lambda: status(a), lambda s: s["instances"][1]["consecutive_errors"] == 0
    )
    assert found["instances"][1]["consecutive_errors"] == 0
    assert found["instances"][1]["errors_last_hour"] == 2


async def test_status_is_the_callers_tenant_alone(harness_factory: Any) -> None:
    h: Harness = await harness_factory(**SETTINGS)
    await install(h)
    await run(h, await instance(h, "mine"), fail=True)
    other = (await h.create_tenant("beta"))["admin_key"]
    assert (await status(h, key=other))["instances"] == []
    mine = await status(h)
    assert [i["name"] for i in mine["instances"]] == ["mine"]


async def test_status_of_an_unknown_plugin_is_a_404(harness: Harness) -> None:
    response = await harness.client.get(
        "/api/v1/plugins/com.example.nothing/status", headers=harness.auth()
    )
    problem(response, 404, "not-found")


async def test_status_of_a_plugin_the_tenant_may_not_use_is_a_404(harness_factory: Any) -> None:
    h: Harness = await harness_factory(**SETTINGS)
    await install(h)
    beta = await h.create_tenant("beta")
    only_operator = {"all_tenants": False, "tenants": [h.fc.operator_tenant_id]}
    await ok(
        h.client.put(f"/api/v1/plugins/{PLUGIN}/availability", json=only_operator, headers=h.auth())
    )
    response = await h.client.get(
        f"/api/v1/plugins/{PLUGIN}/status", headers=h.auth(beta["admin_key"])
    )
    problem(response, 404, "not-found")
    categories = await ok(
        h.client.get("/api/v1/plugins/categories", headers=h.auth(beta["admin_key"]))
    )
    assert "testing" not in [c["category"] for c in categories["items"]]


# -- categories ------------------------------------------------------------------------------


async def test_categories_count_the_plugins_in_each(harness_factory: Any) -> None:
    h: Harness = await harness_factory(**SETTINGS)
    before = await ok(h.client.get("/api/v1/plugins/categories", headers=h.auth()))
    counts = {c["category"]: c["plugins"] for c in before["items"]}
    assert counts.get("monitoring", 0) >= 1
    assert "testing" not in counts
    names = [c["category"] for c in before["items"] if c["category"] is not None]
    assert names == sorted(names)

    await install(h)
    after = await ok(h.client.get("/api/v1/plugins/categories", headers=h.auth()))
    assert {c["category"]: c["plugins"] for c in after["items"]} == {**counts, "testing": 1}
