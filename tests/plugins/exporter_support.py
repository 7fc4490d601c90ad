"""What the metrics exporter tests share: points made and written through the API, an
instance's scheduled run made due and waited for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from plugin_support import executions, wait_until
from sqlalchemy import update

from conftest import Harness
from forecourt.db.base import utcnow
from forecourt.plugins.models import PluginInstance

RUN_WAIT_S = 60.0  # only catches a hang


async def write_points(
    h: Harness, points: list[dict[str, Any]], source: str = "app", key: str | None = None
) -> None:
    """Write ``points`` through the API (as ``key``'s tenant, the owner's by default) and wait
    until the store holds them."""
    response = await h.client.post(
        "/api/v1/metrics", json={"points": points, "source": source}, headers=h.auth(key)
    )
    assert response.status_code in (200, 202), response.text
    assert response.json()["refused"] == [], response.text
    await h.fc.metrics.flush()


def at(seconds_ago: float) -> str:
    """An RFC 3339 time ``seconds_ago`` seconds before now."""
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat()


def point(name: str, value: float, seconds_ago: float, **labels: str) -> dict[str, Any]:
    """A point some seconds ago: within the interval before the instance was made, where an
    exporter's first run starts, and older than what a run leaves for the next."""
    return {"name": name, "value": value, "labels": labels, "time": at(seconds_ago)}


async def run_once(h: Harness, instance: dict[str, Any], plugin_id: str) -> dict[str, Any]:
    """Make ``instance``'s next scheduled run due now; its execution record once it ended."""
    before = len(await executions(h, plugin_id, instance_id=instance["id"]))
    async with h.fc.sessionmaker() as session, session.begin():
        await session.execute(
            update(PluginInstance)
            .where(PluginInstance.id == instance["id"])
            .values(next_run_at=utcnow() - timedelta(seconds=1))
        )

    async def ended() -> list[dict[str, Any]]:
        found = await executions(h, plugin_id, instance_id=instance["id"])
        return found if len(found) > before else []

    newest = (await wait_until(ended, timeout_s=RUN_WAIT_S))[0]
    assert newest["trigger"] == "schedule", newest
    return newest
