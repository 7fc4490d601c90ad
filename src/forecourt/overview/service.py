"""A tenant's overview, read in one session: the summary of what it holds and how busy it
was in the last hour, each plugin's health, and the categories of the plugins it may use."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import distinct, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from forecourt.alerts.models import RESOLVED, SEVERITIES, Alert
from forecourt.db.base import utcnow
from forecourt.events.models import Event
from forecourt.metrics.models import MetricPoint, MetricSeries
from forecourt.plugins import policy
from forecourt.plugins.executions import STATUSES
from forecourt.plugins.manifest import semver_key
from forecourt.plugins.models import Plugin, PluginExecution, PluginInstance
from forecourt.principal import Principal
from forecourt.scopes import SYSTEM_ADMIN
from forecourt.webhooks.models import DELIVERING, FAILED, PENDING, RETRYING, SUCCEEDED, Delivery

RECENT = timedelta(hours=1)
DELIVERY_STATUSES = (PENDING, DELIVERING, RETRYING, SUCCEEDED, FAILED)
UNCATEGORISED = None


async def _counts(session: AsyncSession, column: Any, *where: Any) -> dict[str, int]:
    rows = await session.execute(select(column, func.count()).where(*where).group_by(column))
    return {str(key): int(n) for key, n in rows.all()}


async def summary(session: AsyncSession, tenant_id: str) -> dict[str, Any]:
    """What the tenant holds and did in the last hour (see docs/api.md, /stats/summary)."""
    now = utcnow()
    since = now - RECENT
    visible = policy.visible_clause(tenant_id)
    installed = await session.scalar(select(func.count(distinct(Plugin.plugin_id))).where(visible))
    enabled = await session.scalar(
        select(func.count(distinct(Plugin.plugin_id))).where(
            visible, policy.enabled_clause(tenant_id)
        )
    )
    instances = await _counts(
        session, PluginInstance.enabled, PluginInstance.tenant_id == tenant_id
    )
    series = await session.scalar(
        select(func.count()).select_from(MetricSeries).where(MetricSeries.tenant_id == tenant_id)
    )
    points = await session.scalar(
        select(func.count())
        .select_from(MetricPoint)
        .join(MetricSeries, MetricSeries.id == MetricPoint.series_id)
        .where(MetricSeries.tenant_id == tenant_id)
    )
    executions = await _counts(
        session,
        PluginExecution.status,
        PluginExecution.tenant_id == tenant_id,
        PluginExecution.started_at >= since,
    )
    events = await session.scalar(
        select(func.count())
        .select_from(Event)
        .where(Event.tenant_id == tenant_id, Event.created_at >= since)
    )
    deliveries = await _counts(session, Delivery.status, Delivery.tenant_id == tenant_id)
    alerts = await _counts(
        session, Alert.severity, Alert.tenant_id == tenant_id, Alert.state != RESOLVED
    )
    return {
        "generated_at": now,
        "plugins": {"installed": installed or 0, "enabled": enabled or 0},
        "instances": {
            "total": sum(instances.values()),
            "enabled": instances.get("True", 0),
        },
        "metrics": {"series": series or 0, "points": points or 0},
        "executions_last_hour": _by(STATUSES, executions),
        "events_last_hour": events or 0,
        "deliveries": _by(DELIVERY_STATUSES, deliveries),
        "open_alerts": _by(SEVERITIES, alerts),
    }


def _by(keys: tuple[str, ...], counts: dict[str, int]) -> dict[str, int]:
    """Every key, zero when absent, and the total."""
    out = {key: counts.get(key, 0) for key in keys}
    out["total"] = sum(counts.values())
    return out


async def plugin_status(
    session: AsyncSession, tenant_id: str, plugin_id: str
) -> list[dict[str, Any]]:
    """The health of each of the tenant's instances of ``plugin_id`` (the caller checked that
    the tenant may see the plugin)."""
    since = utcnow() - RECENT
    instances = (
        await session.scalars(
            select(PluginInstance)
            .where(PluginInstance.tenant_id == tenant_id, PluginInstance.plugin_id == plugin_id)
            .order_by(PluginInstance.name)
        )
    ).all()
    ran = PluginExecution.tenant_id == tenant_id, PluginExecution.plugin_id == plugin_id
    last_run = await _latest(session, ran)
    last_ok = await _latest(session, (*ran, PluginExecution.status == "ok"))
    recent = await _counts(
        session,
        PluginExecution.instance_id,
        *ran,
        PluginExecution.status != "ok",
        PluginExecution.started_at >= since,
    )
    # Failed runs after each instance's last success (all of them, without one): one query.
    success = (
        select(PluginExecution.instance_id, func.max(PluginExecution.started_at).label("at"))
        .where(*ran, PluginExecution.status == "ok")
        .group_by(PluginExecution.instance_id)
        .subquery()
    )
    rows = await session.execute(
        select(PluginExecution.instance_id, func.count())
        .outerjoin(success, success.c.instance_id == PluginExecution.instance_id)
        .where(
            *ran,
            PluginExecution.status != "ok",
            or_(success.c.at.is_(None), PluginExecution.started_at > success.c.at),
        )
        .group_by(PluginExecution.instance_id)
    )
    consecutive = {str(instance): int(n) for instance, n in rows.all()}
    return [
        {
            "instance_id": instance.id,
            "name": instance.name,
            "enabled": instance.enabled,
            "last_status": instance.last_status,
            "last_run_at": last_run.get(instance.id),
            "last_success_at": last_ok.get(instance.id),
            "consecutive_errors": consecutive.get(instance.id, 0),
            "errors_last_hour": recent.get(instance.id, 0),
            "next_run_at": instance.next_run_at if instance.enabled else None,
        }
        for instance in instances
    ]


async def _latest(session: AsyncSession, where: tuple[Any, ...]) -> dict[str, datetime]:
    rows = await session.execute(
        select(PluginExecution.instance_id, func.max(PluginExecution.started_at))
        .where(*where, PluginExecution.instance_id.is_not(None))
        .group_by(PluginExecution.instance_id)
    )
    return {str(instance): at for instance, at in rows.all()}


async def categories(session: AsyncSession, actor: Principal) -> list[dict[str, Any]]:
    """Categories of the plugins the caller's tenant may use (the operator: every plugin),
    each with how many plugins are in it, by each plugin's latest version; the count of those
    without one under ``None``."""
    stmt = select(Plugin.plugin_id, Plugin.version, Plugin.category)
    if SYSTEM_ADMIN not in actor.scopes:
        stmt = stmt.where(policy.visible_clause(actor.tenant_id))
    latest: dict[str, tuple[Any, str | None]] = {}
    for plugin_id, version, category in (await session.execute(stmt)).all():
        seen = latest.get(plugin_id)
        if seen is None or semver_key(version) > seen[0]:
            latest[plugin_id] = (semver_key(version), category)
    counts: dict[str | None, int] = {}
    for _, category in latest.values():
        counts[category] = counts.get(category, 0) + 1
    named = sorted((c, n) for c, n in counts.items() if c is not None)
    out = [{"category": c, "plugins": n} for c, n in named]
    if UNCATEGORISED in counts:
        out.append({"category": None, "plugins": counts[UNCATEGORISED]})
    return out
