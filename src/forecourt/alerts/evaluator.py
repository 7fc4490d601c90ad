"""The alert rule evaluator: a background job on nodes that run workers.

Each pass claims the enabled rules not evaluated in the last half interval, with
``FOR UPDATE SKIP LOCKED`` inside one transaction: a rule is evaluated by one node at a time,
and its new state, the alert it opens or resolves and the ``alert.triggered`` /
``alert.resolved`` events commit together (a node that dies mid-pass changes nothing, and its
locks go with its connection). On SQLite the one process's write gate serializes passes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forecourt.alerts import rules
from forecourt.alerts.models import AlertRule
from forecourt.alerts.service import AlertHooks, AlertService, NewAlert
from forecourt.db.base import utcnow
from forecourt.db.gate import WriteGate

log = logging.getLogger("forecourt.alerts")

CLAIM_BATCH = 50
RULE_SOURCE = "alert-rule"


def alert_for(rule: AlertRule, reading: rules.Reading) -> NewAlert:
    """The alert a firing rule opens: one per rule (its id is among the labels)."""
    if rule.condition == "absent":
        kind = "metric.absent"
        message = f"{rule.name}: no point of {rule.metric} in the last {rule.window_s} s"
    else:
        kind = "metric.threshold"
        message = (
            f"{rule.name}: {rule.aggregation} of {rule.metric} over {rule.window_s} s is "
            f"{reading.value:g}, {rule.condition} {rule.threshold:g}, for {rule.for_s} s"
        )
    return NewAlert(
        type=kind,
        severity=rule.severity,
        message=message,
        source=RULE_SOURCE,
        labels={"rule_id": rule.id, "rule": rule.name[:256], "metric": rule.metric},
        rule_id=rule.id,
    )


class RuleEvaluator:
    """Evaluates due alert rules (``run_once``), or every ``interval_s`` (``run``)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        gate: WriteGate,
        hooks: AlertHooks,
        interval_s: float,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.gate = gate
        self.hooks = hooks
        self.interval_s = interval_s
        # Called with the ids of a claimed batch while their locks are held (tests).
        self.after_claim: Callable[[list[str]], Awaitable[None]] | None = None

    async def run(self) -> None:
        """Evaluate every ``interval_s`` until cancelled; a failed pass is logged."""
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("alerts: a rule evaluation pass failed")
            await asyncio.sleep(self.interval_s)

    async def run_once(self, now: datetime | None = None) -> int:
        """Evaluate every due rule at ``now`` (default: the clock); how many."""
        now = now or utcnow()
        done = 0
        while True:
            claimed = await self._pass(now)
            done += claimed
            if claimed < CLAIM_BATCH:
                return done

    async def _pass(self, now: datetime) -> int:
        # Not evaluated in the last half interval: two nodes' passes a moment apart do not
        # both evaluate a rule, and an explicit evaluation at a later ``now`` always does.
        due_before = now - timedelta(seconds=self.interval_s / 2)
        async with self.gate, self.sessionmaker() as session:
            claimed = list(
                (
                    await session.scalars(
                        select(AlertRule)
                        .where(
                            AlertRule.enabled.is_(True),
                            or_(
                                AlertRule.evaluated_at.is_(None),
                                AlertRule.evaluated_at < due_before,
                            ),
                        )
                        .order_by(AlertRule.id)
                        .limit(CLAIM_BATCH)
                        .with_for_update(skip_locked=True)
                        .execution_options(populate_existing=True)
                    )
                ).all()
            )
            if not claimed:
                return 0
            if self.after_claim is not None:
                await self.after_claim([r.id for r in claimed])
            alerts = AlertService(session, self.hooks)
            for rule in claimed:
                await self._evaluate(session, alerts, rule, now)
            await alerts.commit()
            return len(claimed)

    async def _evaluate(
        self, session: AsyncSession, alerts: AlertService, rule: AlertRule, now: datetime
    ) -> None:
        reading = await rules.read(session, rule, now)
        holding = rules.holds(rule.condition, rule.threshold, reading)
        decided = rules.step(holding, rule.pending_since, rule.firing, rule.for_s, now)
        rule.evaluated_at = now
        rule.last_value = reading.value
        rule.pending_since = decided.pending_since
        if decided.fire:
            alert, _ = await alerts.open(rule.tenant_id, alert_for(rule, reading), now=now)
            rule.firing, rule.alert_id = True, alert.id
        elif decided.resolve:
            if rule.alert_id:
                await alerts.close(rule.tenant_id, rule.alert_id, by=rule.id, now=now)
            rule.firing, rule.alert_id = False, None
