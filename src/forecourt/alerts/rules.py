"""Alert rules: their definitions (create, read, change, delete), the aggregate a rule reads
from the metrics store, and the step that decides a rule's next state.

The aggregate is read from the raw points of the last ``window_s`` seconds
(``metrics.service.aggregate_window``): a rule's window is short (at most a day, within raw
retention).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from forecourt.alerts.models import AlertRule
from forecourt.alerts.schemas import (
    AlertRuleCreate,
    AlertRuleOut,
    MetricQuery,
    ThresholdRuleCreate,
)
from forecourt.alerts.service import AlertHooks, AlertService
from forecourt.audit import service as audit
from forecourt.db.base import utcnow
from forecourt.errors import Conflict, NotFound
from forecourt.ids import new_id
from forecourt.metrics import service as metrics
from forecourt.pagination import next_cursor, paginate
from forecourt.principal import Principal

# Series a rule may aggregate over; more is refused when the rule is evaluated (counted as
# no data) and reported on its status as no value.
MAX_SERIES_PER_RULE = 200
# What a rule's fields change; the evaluator's state is the rest of the row.
DEFINITION = ("name", "description", "query", "condition", "threshold", "for_s", "severity")


@dataclass(frozen=True, slots=True)
class Reading:
    """A rule's aggregate over its window: the value (None: nothing to compare) and the
    number of points read."""

    value: float | None
    points: int


@dataclass(frozen=True, slots=True)
class Step:
    """What an evaluation decides: the new ``pending_since``, and whether to open (fire) or
    resolve the rule's alert."""

    pending_since: datetime | None
    fire: bool
    resolve: bool


def holds(condition: str, threshold: float | None, reading: Reading) -> bool:
    """Whether ``condition`` holds for ``reading``."""
    if condition == "absent":
        return reading.points == 0
    if reading.value is None or threshold is None:
        return False
    return reading.value > threshold if condition == "above" else reading.value < threshold


def step(
    holding: bool, pending_since: datetime | None, firing: bool, for_s: int, now: datetime
) -> Step:
    """The rule's next state: it fires once its condition has held for ``for_s`` seconds
    (measured from the first evaluation that saw it hold) and resolves at the first
    evaluation that does not."""
    if not holding:
        return Step(None, False, firing)
    since = pending_since if pending_since is not None and pending_since <= now else now
    due = (now - since).total_seconds() >= for_s
    return Step(since, due and not firing, False)


async def read(session: AsyncSession, rule: AlertRule, now: datetime) -> Reading:
    """The aggregate of the points in (now - window, now] of every series of the rule's
    metric whose labels include the rule's labels."""
    empty = Reading(0.0 if rule.aggregation in ("count", "sum") else None, 0)
    series = await metrics.matching_series(session, rule.tenant_id, rule.metric, rule.labels)
    if not series or len(series) > MAX_SERIES_PER_RULE:
        return empty
    end_ms = int(now.timestamp() * 1000)
    start_ms = end_ms - rule.window_s * 1000
    value, count = await metrics.aggregate_window(
        session, [s.id for s in series], start_ms, end_ms, rule.aggregation
    )
    return Reading(value, count) if count else empty


def rule_out(rule: AlertRule) -> AlertRuleOut:
    return AlertRuleOut.model_validate(
        {
            "id": rule.id,
            "name": rule.name,
            "description": rule.description,
            "query": {
                "metric": rule.metric,
                "labels": rule.labels,
                "aggregation": rule.aggregation,
                "window_s": rule.window_s,
            },
            "condition": rule.condition,
            "threshold": rule.threshold,
            "for_s": rule.for_s,
            "severity": rule.severity,
            "enabled": rule.enabled,
            "created_at": rule.created_at,
            "updated_at": rule.updated_at,
            "status": {
                "evaluated_at": rule.evaluated_at,
                "last_value": rule.last_value,
                "pending_since": rule.pending_since,
                "firing": rule.firing,
                "alert_id": rule.alert_id,
            },
        }
    )


def _definition(rule: AlertRule) -> dict[str, Any]:
    """The rule as the API shows it, without the evaluator's status: what the audit log keeps."""
    return rule_out(rule).model_dump(mode="json", exclude={"status"})


def _check_threshold(condition: str, threshold: float | None) -> None:
    """A change that would leave the rule's condition and threshold at odds: a conflict
    with the rule as it is (a new rule's body cannot be, by its schema)."""
    if condition == "absent" and threshold is not None:
        raise Conflict("An absent condition takes no threshold.", field="threshold")
    if condition != "absent" and threshold is None:
        raise Conflict(f"A condition {condition!r} needs a threshold.", field="threshold")


class RuleService:
    """The tenant's alert rules, in one session."""

    def __init__(self, session: AsyncSession, hooks: AlertHooks | None = None) -> None:
        self.session = session
        self.hooks = hooks or AlertHooks()

    async def create(self, actor: Principal, data: AlertRuleCreate) -> AlertRule:
        threshold = data.threshold if isinstance(data, ThresholdRuleCreate) else None
        now = utcnow()
        rule = AlertRule(
            id=new_id("arl"),
            tenant_id=actor.tenant_id,
            name=data.name,
            description=data.description,
            metric=data.query.metric,
            labels=data.query.labels,
            aggregation=data.query.aggregation,
            window_s=data.query.window_s,
            condition=data.condition,
            threshold=threshold,
            for_s=data.for_s,
            severity=data.severity,
            enabled=data.enabled,
            created_at=now,
            updated_at=now,
            firing=False,
        )
        await self._unique_name(actor.tenant_id, data.name, None)
        self.session.add(rule)
        audit.record(
            self.session,
            actor,
            "alert_rule.created",
            "alert_rule",
            rule.id,
            after=_definition(rule),
        )
        await self._commit()
        return rule

    async def get(self, tenant_id: str, rule_id: str) -> AlertRule:
        rule = await self.session.scalar(
            select(AlertRule)
            .where(AlertRule.id == rule_id, AlertRule.tenant_id == tenant_id)
            .execution_options(populate_existing=True)
        )
        if rule is None:
            raise NotFound(f"No alert rule {rule_id!r}.")
        return rule

    async def page(
        self, tenant_id: str, cursor: str | None, limit: int
    ) -> tuple[list[AlertRule], str | None]:
        stmt = select(AlertRule).where(AlertRule.tenant_id == tenant_id)
        rows = (await self.session.scalars(paginate(stmt, AlertRule.id, cursor, limit))).all()
        return next_cursor(rows, limit)

    async def update(self, actor: Principal, rule_id: str, changes: dict[str, Any]) -> AlertRule:
        """Change the fields in ``changes``. A changed definition restarts the for-duration;
        a rule disabled while firing resolves its alert."""
        rule = await self.get(actor.tenant_id, rule_id)
        before = _definition(rule)
        condition = changes.get("condition", rule.condition)
        if condition == "absent" and "threshold" not in changes:
            changes["threshold"] = None
        threshold = changes.get("threshold", rule.threshold)
        _check_threshold(condition, threshold)
        if "name" in changes and changes["name"] != rule.name:
            await self._unique_name(actor.tenant_id, changes["name"], rule.id)
        query = changes.pop("query", None)
        if query is not None:
            q = MetricQuery.model_validate(query)
            rule.metric, rule.labels = q.metric, q.labels
            rule.aggregation, rule.window_s = q.aggregation, q.window_s
        for name, value in changes.items():
            setattr(rule, name, value)
        if query is not None or set(changes) & set(DEFINITION):
            rule.pending_since = None
        rule.updated_at = utcnow()
        alerts = AlertService(self.session, self.hooks)
        if not rule.enabled:
            await self._stop_firing(alerts, rule)
        after = _definition(rule)
        audit.record(
            self.session,
            actor,
            "alert_rule.updated",
            "alert_rule",
            rule.id,
            before=before,
            after=after,
        )
        await self._commit(alerts)
        return rule

    async def delete(self, actor: Principal, rule_id: str) -> None:
        """Delete the rule; its alert, if it is firing, is resolved."""
        rule = await self.get(actor.tenant_id, rule_id)
        alerts = AlertService(self.session, self.hooks)
        await self._stop_firing(alerts, rule)
        audit.record(
            self.session,
            actor,
            "alert_rule.deleted",
            "alert_rule",
            rule.id,
            before=_definition(rule),
        )
        await self.session.delete(rule)
        await self._commit(alerts)

    async def _stop_firing(self, alerts: AlertService, rule: AlertRule) -> None:
        if rule.firing and rule.alert_id:
            await alerts.close(rule.tenant_id, rule.alert_id, by=rule.id)
        rule.firing, rule.alert_id, rule.pending_since = False, None, None

    async def _unique_name(self, tenant_id: str, name: str, other_than: str | None) -> None:
        found = await self.session.scalar(
            select(AlertRule.id).where(AlertRule.tenant_id == tenant_id, AlertRule.name == name)
        )
        if found is not None and found != other_than:
            raise Conflict(f"An alert rule named {name!r} exists.", field="name")

    async def _commit(self, alerts: AlertService | None = None) -> None:
        try:
            if alerts is not None:
                await alerts.commit()
            else:
                await self.session.commit()
        except IntegrityError:
            await self.session.rollback()
            raise Conflict("An alert rule of that name exists.", field="name") from None
