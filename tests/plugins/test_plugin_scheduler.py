"""Background plugin work: collectors on their schedule, the built-ins installed on first
start, and development folders reloaded when edited."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from plugin_support import (
    execute,
    executions,
    files,
    install,
    instance,
    start,
    wait_until,
    write_folder,
)
from sqlalchemy import func, select, update

from conftest import Harness
from forecourt import principal
from forecourt.core import Forecourt
from forecourt.db.base import utcnow
from forecourt.plugins.models import Plugin, PluginInstance

COLLECTOR = """
import time

import forecourt_plugin


def collect(payload):
    forecourt_plugin.metric("queue.depth", 7, {"queue": "mail"})
    time.sleep(float(forecourt_plugin.config().get("sleep_s", 0)))
    return {"metrics": [{"name": "queue.oldest_s", "value": 1.5}]}
"""
COLLECTOR_SCHEMA = {"type": "object", "properties": {"sleep_s": {"type": "number"}}}


def collector(**fields: Any) -> dict[str, str]:
    return files(
        COLLECTOR,
        id="com.example.queues",
        type="collector",
        entry_point="plugin:collect",
        permissions={"schedule_interval_s": 5, "metrics": ["queue.depth", "queue.oldest_s"]},
        config_schema=COLLECTOR_SCHEMA,
        **fields,
    )


async def due_now(h: Harness, instance_id: str) -> None:
    """Make the instance's first run due now instead of one interval after its creation."""
    async with h.fc.sessionmaker() as session, session.begin():
        await session.execute(
            update(PluginInstance)
            .where(PluginInstance.id == instance_id)
            .values(next_run_at=utcnow() - timedelta(seconds=1))
        )


async def test_a_collector_runs_every_interval(harness_factory: Any) -> None:
    h = await start(harness_factory)
    await install(h, collector())
    created = await instance(h, plugin_id="com.example.queues", name="queues")
    assert created["next_run_at"] is not None  # one interval after creation
    await due_now(h, created["id"])

    async def two() -> list[dict[str, Any]]:
        found = await executions(h, "com.example.queues")
        return found if len(found) >= 2 else []

    second, first = await wait_until(two, timeout_s=15)
    assert first["trigger"] == second["trigger"] == "schedule"
    assert first["status"] == "ok", first
    assert {m["name"]: m["value"] for m in first["metrics"]} == {
        "queue.oldest_s": 1.5,
        "queue.depth": 7,
    }
    # Never before the interval is over (a longer gap is the machine's, not the schedule's:
    # an interval much longer than 5 s would not have given two runs within the wait).
    gap = _seconds(second["started_at"]) - _seconds(first["started_at"])
    assert gap >= 4.5
    # Successful scheduled runs are recorded but not announced as events by default.
    completed = await h.client.get(
        "/api/v1/events", params={"type": "plugin.execution_completed"}, headers=h.auth()
    )
    assert completed.json()["items"] == []


# One backend: the claim it relies on runs on both in test_a_collector_runs_every_interval.
@pytest.mark.parametrize("backend", ["sqlite"])
async def test_overlapping_runs_are_skipped(harness_factory: Any) -> None:
    h = await start(harness_factory)
    await install(h, collector(resources={"timeout_s": 20}))
    created = await instance(
        h, plugin_id="com.example.queues", name="slow", config={"sleep_s": 5.3}
    )
    await due_now(h, created["id"])

    async def two() -> list[dict[str, Any]]:
        found = await executions(h, "com.example.queues")
        return found if len(found) >= 2 else []

    second, first = await wait_until(two, timeout_s=25)
    # The run took longer than the interval: the next began when it ended, not during it.
    ended = _seconds(first["started_at"]) + first["duration_ms"] / 1000
    assert _seconds(second["started_at"]) >= ended - 0.05


async def test_builtins_are_installed_on_first_start(harness_factory: Any) -> None:
    h = await start(harness_factory)
    listed = await h.client.get("/api/v1/plugins", headers=h.auth())
    builtins = {p["id"]: p for p in listed.json()["items"]}
    assert len(builtins) == 8 and all(p["trust"] == "builtin" for p in builtins.values())
    assert [i for i, p in builtins.items() if p["enabled"]] == ["forecourt.system-info"]
    found = await h.client.get("/api/v1/plugin-instances/system-info", headers=h.auth())
    assert found.status_code == 200
    system_info = found.json()
    assert system_info["enabled"] is True and system_info["plugin_type"] == "collector"
    assert system_info["next_run_at"] is not None
    # Installed lazily: nothing is unpacked before a run needs it.
    assert not (h.fc.settings.plugins_dir / "forecourt.system-info").exists()

    # Its executions show in the API (run now rather than waiting for the schedule).
    result = await execute(h, system_info["id"], {"interval_s": 30})
    assert result["plugin_id"] == "forecourt.system-info"
    # The sandbox shows it the host's statistics: its manifest asks for host_metrics.
    assert result["status"] == "ok", result
    measured = {metric["name"] for metric in result["metrics"]}
    assert {"system.cpu.percent", "system.memory.used_bytes", "system.load.1m"} <= measured
    assert "system.network.bytes_received" in measured
    # Unconfigured, the disk figures are those of the filesystem Forecourt's Python is on.
    [disk] = [m for m in result["metrics"] if m["name"] == "system.disk.total_bytes"]
    stdlib = os.path.dirname(os.__file__)
    assert disk["labels"] == {"path": stdlib}
    assert disk["value"] == os.statvfs(stdlib).f_blocks * os.statvfs(stdlib).f_frsize
    assert builtins["forecourt.system-info"]["permissions"]["host_metrics"] is True
    docker = builtins["forecourt.docker-monitor"]["permissions"]
    assert docker["unix_sockets"] == ["/var/run/docker.sock"]
    assert (
        h.fc.settings.plugins_dir / "forecourt.system-info" / "1.1.0" / "site" / "psutil"
    ).is_dir()
    assert [e["id"] for e in await executions(h, "forecourt.system-info")] == [result["id"]]

    # A second start (another node, or a restart) installs nothing more.
    again = Forecourt(h.fc.settings)
    await again.start(run_workers=False)
    try:
        async with again.sessionmaker() as session:
            versions = await session.scalar(select(func.count()).select_from(Plugin))
            instances = await session.scalar(select(func.count()).select_from(PluginInstance))
        assert versions == 8 and instances == 1
    finally:
        await again.stop()


async def test_editing_a_development_folder_reloads_it(
    harness_factory: Any, tmp_path: Path
) -> None:
    h = await start(harness_factory)
    folder = write_folder(tmp_path / "upper", files())
    me = await h.client.get("/api/v1/auth/me", headers=h.auth())
    async with h.fc.sessionmaker() as session:
        await h.fc.plugins(session).install(
            principal.system(me.json()["tenant_id"]), folder, dev=True
        )
    created = await instance(h)
    before = await execute(h, created["id"], {"records": [{"w": "a"}]})
    assert before["output"] == {"records": [{"w": "A"}]}

    code = (folder / "plugin.py").read_text()
    (folder / "plugin.py").write_text(code.replace("v.upper() + suffix", "v.upper() + '+'"))

    async def reloaded() -> bool:
        result = await execute(h, created["id"], {"records": [{"w": "a"}]})
        return bool(result["output"] == {"records": [{"w": "A+"}]})

    await wait_until(reloaded, timeout_s=15, interval_s=0.3)

    (folder / "forecourt-plugin.toml").write_text('id = "broken"\n')

    async def invalid() -> dict[str, Any] | None:
        got = await h.client.get("/api/v1/plugins/com.example.upper", headers=h.auth())
        detail: dict[str, Any] = got.json()["version_details"][0]
        return detail if detail["status"] == "invalid" else None

    detail = await wait_until(invalid, timeout_s=15, interval_s=0.2)
    assert detail is not None and "name" in (detail["status_detail"] or "")
    still = await execute(h, created["id"], {"records": [{"w": "b"}]})
    assert still["output"] == {"records": [{"w": "B+"}]}  # the last good files keep running


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
