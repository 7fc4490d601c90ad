"""The record of plugin runs: a tenant's executions of a plugin, and their statistics."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from forecourt.db.base import utcnow
from forecourt.errors import InvalidInput
from forecourt.pagination import next_cursor, paginate
from forecourt.plugins.models import PluginExecution
from forecourt.stats import STATS_WINDOWS, percentile

STATUSES = ("ok", "error", "timeout", "killed", "refused")


async def page(
    session: AsyncSession,
    tenant_id: str,
    plugin_id: str,
    status: str | None,
    instance_id: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[PluginExecution], str | None]:
    """The tenant's runs of ``plugin_id``, newest first."""
    stmt = select(PluginExecution).where(
        PluginExecution.tenant_id == tenant_id, PluginExecution.plugin_id == plugin_id
    )
    if status is not None:
        if status not in STATUSES:
            raise InvalidInput(f"Status is one of {', '.join(STATUSES)}.", field="status")
        stmt = stmt.where(PluginExecution.status == status)
    if instance_id is not None:
        stmt = stmt.where(PluginExecution.instance_id == instance_id)
    rows = (await session.scalars(paginate(stmt, PluginExecution.id, cursor, limit))).all()
    return next_cursor(rows, limit)


async def stats(session: AsyncSession, tenant_id: str, plugin_id: str) -> dict[str, Any]:
    """The tenant's runs of ``plugin_id`` in each of :data:`STATS_WINDOWS`."""
    now = utcnow()
    rows = (
        await session.execute(
            select(
                PluginExecution.status, PluginExecution.duration_ms, PluginExecution.started_at
            ).where(
                PluginExecution.tenant_id == tenant_id,
                PluginExecution.plugin_id == plugin_id,
                PluginExecution.started_at >= now - max(STATS_WINDOWS.values()),
            )
        )
    ).all()
    windows = {
        name: window_stats([(s, d, t) for s, d, t in rows if t >= now - length])
        for name, length in STATS_WINDOWS.items()
    }
    return {"plugin_id": plugin_id, "windows": windows}


def window_stats(rows: Sequence[tuple[str, float, datetime]]) -> dict[str, Any]:
    durations = sorted(duration for _, duration, _ in rows)
    ok = [at for status, _, at in rows if status == "ok"]
    bad = [at for status, _, at in rows if status != "ok"]
    by_status = {status: sum(1 for s, _, _ in rows if s == status) for status in STATUSES}
    return {
        "executions": len(rows),
        "ok": len(ok),
        "failed": len(bad),
        "error_rate": len(bad) / len(rows) if rows else None,
        "p50_ms": percentile(durations, 0.50),
        "p95_ms": percentile(durations, 0.95),
        "by_status": by_status,
        "last_success_at": max(ok) if ok else None,
        "last_failure_at": max(bad) if bad else None,
    }
