"""Alerts: trigger (with repeats counted on the open alert), acknowledge, resolve, read.

``AlertService`` works in one session. Its writes are added to the session and committed by
``commit()``, which then hands each changed alert to ``AlertHooks.on_change`` (the live
streams); ``alert.triggered`` and ``alert.resolved`` are emitted as events in the same
transaction as the change, so webhooks and alert plugins get them exactly when it commits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from forecourt import codec
from forecourt.alerts.models import ACKNOWLEDGED, OPEN, RESOLVED, SEVERITIES, STATES, Alert
from forecourt.alerts.schemas import AlertOut
from forecourt.audit import service as audit
from forecourt.db.base import utcnow
from forecourt.errors import Conflict, InvalidInput, NotFound
from forecourt.events.service import emit
from forecourt.ids import new_id
from forecourt.pagination import next_cursor, paginate
from forecourt.principal import Principal

TRIGGERED = "alert.triggered"
RESOLVED_EVENT = "alert.resolved"
# An alert's severity as an event's.
EVENT_SEVERITY = {"critical": "critical", "high": "error", "medium": "warning", "low": "info"}


@dataclass(frozen=True, slots=True)
class AlertHooks:
    """What happens after a commit that changed alerts: ``on_change(tenant_id, alert)`` with
    the alert as the API shows it (the live streams)."""

    on_change: Callable[[str, dict[str, Any]], None] | None = None


@dataclass(frozen=True, slots=True)
class NewAlert:
    type: str
    severity: str
    message: str
    source: str
    labels: dict[str, str]
    rule_id: str | None = None


@dataclass(frozen=True, slots=True)
class AlertFilter:
    severity: str | None = None
    state: str | None = None
    type: str | None = None
    # Both with a time zone (the routes refuse a time without one).
    since: datetime | None = None  # last seen at or after
    until: datetime | None = None  # first seen before


def fingerprint(type: str, labels: dict[str, str]) -> str:
    """What repeats of one alert share: SHA-256 of its type and its labels in key order."""
    text = type.encode() + b"\n" + codec.dumps(labels, sort_keys=True)
    return hashlib.sha256(text).hexdigest()


def view(alert: Alert) -> dict[str, Any]:
    """The alert as the API shows it, as JSON values."""
    return AlertOut.model_validate(alert).model_dump(mode="json")


class AlertService:
    def __init__(self, session: AsyncSession, hooks: AlertHooks | None = None) -> None:
        self.session = session
        self.hooks = hooks or AlertHooks()
        self._changed: dict[str, Alert] = {}

    async def commit(self) -> None:
        """Commit, then hand every alert changed in the transaction to ``on_change``."""
        await self.session.commit()
        changed, self._changed = self._changed, {}
        if self.hooks.on_change is not None:
            for alert in changed.values():
                self.hooks.on_change(alert.tenant_id, view(alert))

    # -- writes ------------------------------------------------------------------------------

    async def trigger(
        self, actor: Principal, new: NewAlert, *, now: datetime | None = None
    ) -> tuple[Alert, bool]:
        """Open an alert, or count a repeat on the unresolved one of the same type and
        labels; the alert and whether it is new. Committed."""
        alert, created = await self.open(actor.tenant_id, new, now=now)
        if created:
            audit.record(
                self.session, actor, "alert.triggered", "alert", alert.id, after=view(alert)
            )
        await self.commit()
        return alert, created

    async def open(
        self, tenant_id: str, new: NewAlert, *, now: datetime | None = None
    ) -> tuple[Alert, bool]:
        """``trigger`` without the audit entry and the commit (the rule evaluator's)."""
        now = now or utcnow()
        key = fingerprint(new.type, new.labels)
        values = {
            "id": new_id("alr"),
            "tenant_id": tenant_id,
            "type": new.type,
            "severity": new.severity,
            "state": OPEN,
            "message": new.message,
            "source": new.source,
            "labels": new.labels,
            "fingerprint": key,
            "open_key": key,
            "count": 1,
            "rule_id": new.rule_id,
            "first_seen_at": now,
            "last_seen_at": now,
        }
        dialect = self.session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert(Alert).values(**values)
        # The unique (tenant_id, open_key) makes a concurrent repeat wait for the first
        # insert and then update it: one unresolved alert per fingerprint, counted.
        upsert = stmt.on_conflict_do_update(
            index_elements=["tenant_id", "open_key"],
            set_={
                "count": Alert.count + 1,
                "last_seen_at": stmt.excluded.last_seen_at,
                "severity": stmt.excluded.severity,
                "message": stmt.excluded.message,
            },
        ).returning(Alert)
        alert = (
            await self.session.scalars(upsert, execution_options={"populate_existing": True})
        ).one()
        created = alert.id == values["id"]
        if created:
            await self._emit(alert, TRIGGERED)
        self._changed[alert.id] = alert
        return alert, created

    async def acknowledge(self, actor: Principal, alert_id: str) -> Alert:
        """An open alert, acknowledged by ``actor``; 409 in any other state. Committed."""
        alert = await self._returned(
            update(Alert)
            .where(Alert.id == alert_id, Alert.tenant_id == actor.tenant_id, Alert.state == OPEN)
            .values(state=ACKNOWLEDGED, acknowledged_at=utcnow(), acknowledged_by=actor.actor_id)
        )
        if alert is None:
            alert = await self.get(actor.tenant_id, alert_id)
            raise Conflict(
                f"The alert is {alert.state}; only an open alert can be acknowledged.",
                state=alert.state,
            )
        audit.record(self.session, actor, "alert.acknowledged", "alert", alert.id)
        self._changed[alert.id] = alert
        await self.commit()
        return alert

    async def resolve(self, actor: Principal, alert_id: str) -> Alert:
        """An unresolved alert, resolved by ``actor``; 409 if already resolved. Committed."""
        alert = await self.close(actor.tenant_id, alert_id, by=actor.actor_id)
        if alert is None:
            alert = await self.get(actor.tenant_id, alert_id)
            raise Conflict("The alert is already resolved.", state=alert.state)
        audit.record(self.session, actor, "alert.resolved", "alert", alert.id)
        await self.commit()
        return alert

    async def close(
        self, tenant_id: str, alert_id: str, *, by: str | None, now: datetime | None = None
    ) -> Alert | None:
        """Resolve the alert if it is not (not committed); None if it was, or is not there."""
        alert = await self._returned(
            update(Alert)
            .where(Alert.id == alert_id, Alert.tenant_id == tenant_id, Alert.state != RESOLVED)
            .values(state=RESOLVED, open_key=None, resolved_at=now or utcnow(), resolved_by=by)
        )
        if alert is None:
            return None
        await self._emit(alert, RESOLVED_EVENT)
        self._changed[alert.id] = alert
        return alert

    async def _returned(self, stmt: Any) -> Alert | None:
        """The alert an UPDATE changed, as it now is; None if it changed none."""
        found = await self.session.scalars(
            stmt.returning(Alert), execution_options={"populate_existing": True}
        )
        return found.one_or_none()

    async def _emit(self, alert: Alert, type: str) -> None:
        await emit(
            self.session,
            alert.tenant_id,
            type,
            {"alert": view(alert)},
            subject=alert.id,
            severity=EVENT_SEVERITY.get(alert.severity, "info"),
        )

    # -- reads -------------------------------------------------------------------------------

    async def get(self, tenant_id: str, alert_id: str) -> Alert:
        alert = await self.session.scalar(
            select(Alert)
            .where(Alert.id == alert_id, Alert.tenant_id == tenant_id)
            .execution_options(populate_existing=True)
        )
        if alert is None:
            raise NotFound(f"No alert {alert_id!r}.")
        return alert

    async def page(
        self, tenant_id: str, filters: AlertFilter, cursor: str | None, limit: int
    ) -> tuple[list[Alert], str | None]:
        """The tenant's alerts, newest first."""
        stmt = _filtered(select(Alert), tenant_id, filters)
        rows = (await self.session.scalars(paginate(stmt, Alert.id, cursor, limit))).all()
        return next_cursor(rows, limit)

    async def summary(self, tenant_id: str, filters: AlertFilter) -> dict[str, Any]:
        """Counts by state, and by severity and state."""
        stmt = _filtered(
            select(Alert.severity, Alert.state, func.count()), tenant_id, filters
        ).group_by(Alert.severity, Alert.state)
        by_severity = {s: dict.fromkeys((*STATES, "total"), 0) for s in SEVERITIES}
        by_state = dict.fromkeys((*STATES, "total"), 0)
        for severity, state, count in (await self.session.execute(stmt)).all():
            if severity in by_severity and state in by_state:
                by_severity[severity][state] += count
                by_severity[severity]["total"] += count
                by_state[state] += count
                by_state["total"] += count
        return {"total": by_state["total"], "by_state": by_state, "by_severity": by_severity}


def _filtered(stmt: Any, tenant_id: str, filters: AlertFilter) -> Any:
    if filters.since and filters.until and filters.since >= filters.until:
        raise InvalidInput("since must be before until", field="since")
    stmt = stmt.where(Alert.tenant_id == tenant_id)
    if filters.severity:
        stmt = stmt.where(Alert.severity == filters.severity)
    if filters.state:
        stmt = stmt.where(Alert.state == filters.state)
    if filters.type:
        stmt = stmt.where(Alert.type == filters.type)
    if filters.since:
        stmt = stmt.where(Alert.last_seen_at >= filters.since)
    if filters.until:
        stmt = stmt.where(Alert.first_seen_at < filters.until)
    return stmt
