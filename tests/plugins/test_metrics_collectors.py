"""A collector's metrics go to the metrics store, as series of its instance: the plugin's
metrics paths answer its latest points and their history, while the execution record keeps
its summary. A run started through the API (``POST /api/v1/plugin-instances/{id}/execute``)
stores them exactly as a scheduled run does, with the scheduler standing still."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from plugin_support import execute, executions, files, install, instance, start, wait_until
from sqlalchemy import update

from conftest import Harness
from forecourt.db.base import utcnow
from forecourt.plugins.models import PluginInstance

PLUGIN = "com.example.gauges"
COLLECTOR = """
import forecourt_plugin


def collect(payload):
    forecourt_plugin.metric("queue.depth", 7, {"queue": "mail"})
    return {"metrics": [{"name": "queue.oldest_s", "value": 1.5}]}
"""


MANIFEST = {
    "id": PLUGIN,
    "type": "collector",
    "entry_point": "plugin:collect",
    "permissions": {"schedule_interval_s": 3600, "metrics": ["queue.depth", "queue.oldest_s"]},
}


async def test_a_scheduled_collector_writes_series_of_its_instance(harness_factory: Any) -> None:
    h: Harness = await start(harness_factory, metrics_flush_interval_s=0.05)
    await install(h, files(COLLECTOR, **MANIFEST))
    created = await instance(h, plugin_id=PLUGIN, name="gauges")
    async with h.fc.sessionmaker() as session, session.begin():
        await session.execute(
            update(PluginInstance)
            .where(PluginInstance.id == created["id"])
            .values(next_run_at=utcnow() - timedelta(seconds=1))
        )
    await series_of_its_instance(h, created["id"], trigger="schedule")
    missing = await h.client.get("/api/v1/plugins/com.example.none/metrics", headers=h.auth())
    assert missing.status_code == 404


async def test_a_collector_run_on_demand_writes_series_as_a_scheduled_one(
    harness_factory: Any,
) -> None:
    h: Harness = await start(harness_factory, metrics_flush_interval_s=0.05)
    # The scheduler stands still: the run asked for is the only one there can be.
    assert h.fc.plugin_scheduler is not None
    await h.fc.plugin_scheduler.stop(0)
    await install(h, files(COLLECTOR, **MANIFEST))
    created = await instance(h, plugin_id=PLUGIN, name="gauges")
    result = await execute(h, created["id"], {"interval_s": 60})
    assert result["status"] == "ok", result
    await series_of_its_instance(h, created["id"], trigger="api")


async def test_a_collector_run_on_demand_on_an_api_only_node_writes_series_too(
    harness_factory: Any,
) -> None:
    h: Harness = await start(harness_factory, run_workers=False, metrics_flush_interval_s=0.05)
    assert h.fc.plugin_scheduler is None
    await install(h, files(COLLECTOR, **MANIFEST))
    created = await instance(h, plugin_id=PLUGIN, name="gauges")
    result = await execute(h, created["id"], {"interval_s": 60})
    assert result["status"] == "ok", result
    await series_of_its_instance(h, created["id"], trigger="api")


async def series_of_its_instance(h: Harness, instance_id: str, trigger: str) -> None:
    """The instance's one run (started by ``trigger``) wrote both metrics as its series."""

    async def latest() -> list[dict[str, Any]]:
        response = await h.client.get(f"/api/v1/plugins/{PLUGIN}/metrics", headers=h.auth())
        assert response.status_code == 200, response.text
        points: list[dict[str, Any]] = response.json()["points"]
        return points if len(points) == 2 else []

    points = await wait_until(latest, timeout_s=30)
    assert {(p["name"], p["value"], tuple(p["labels"].items())) for p in points} == {
        ("queue.depth", 7.0, (("queue", "mail"),)),
        ("queue.oldest_s", 1.5, ()),
    }
    assert {p["instance_id"] for p in points} == {instance_id}
    [run] = await executions(h, PLUGIN)
    assert run["trigger"] == trigger
    assert {m["name"] for m in run["metrics"]} == {"queue.depth", "queue.oldest_s"}
    # At the run's start, like every collector's point.
    started = datetime.fromisoformat(run["started_at"])
    at = started.replace(microsecond=started.microsecond // 1000 * 1000)  # stored to the ms
    assert {datetime.fromisoformat(p["time"]) for p in points} == {at}

    await h.fc.metrics.roll_up()
    history = await h.client.get(
        f"/api/v1/plugins/{PLUGIN}/metrics/history",
        params={"metric_name": "queue.depth", "hours": 1, "step": 60},
        headers=h.auth(),
    )
    assert history.status_code == 200, history.text
    [series] = history.json()["series"]
    assert series["source"] == instance_id
    assert [v for _, v in series["points"]] == [7.0]

    listed = await h.client.get("/api/v1/metrics", params={"source": instance_id}, headers=h.auth())
    assert {s["name"] for s in listed.json()["items"]} == {"queue.depth", "queue.oldest_s"}
