"""REST: /api/v1/alerts and /api/v1/alert-rules."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from forecourt.alerts.rules import rule_out
from forecourt.alerts.schemas import (
    AlertOut,
    AlertRuleCreate,
    AlertRuleOut,
    AlertRuleUpdate,
    AlertSummary,
    AlertTrigger,
    Severity,
    State,
)
from forecourt.alerts.service import AlertFilter, NewAlert
from forecourt.http.deps import DbSession, ForecourtDep, Paging, require
from forecourt.http.guard import GuardedRoute
from forecourt.http.times import aware
from forecourt.principal import Principal
from forecourt.schemas import Page, Timestamp

AlertsRead = Annotated[Principal, Depends(require("alerts:read"))]
AlertsWrite = Annotated[Principal, Depends(require("alerts:write"))]

alerts = APIRouter(route_class=GuardedRoute, prefix="/api/v1/alerts", tags=["alerts"])
rules = APIRouter(route_class=GuardedRoute, prefix="/api/v1/alert-rules", tags=["alerts"])

Since = Annotated[
    Timestamp | None, Query(description="Alerts last seen at or after this time (RFC 3339).")
]
Until = Annotated[Timestamp | None, Query(description="Alerts first seen before this time.")]


@alerts.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=AlertOut,
    responses={200: {"description": "A repeat: the unresolved alert, its count increased."}},
)
async def trigger_alert(
    body: AlertTrigger, actor: AlertsWrite, fc: ForecourtDep, session: DbSession
) -> Response:
    """Trigger an alert. 201 with a new alert; 200 with the unresolved alert of the same
    type and labels, its ``count`` and ``last_seen_at`` moved on, when there is one."""
    new = NewAlert(body.type, body.severity, body.message, body.source, body.labels)
    alert, created = await fc.alerts(session).trigger(actor, new)
    return Response(
        AlertOut.model_validate(alert).model_dump_json(),
        status_code=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        media_type="application/json",
    )


@alerts.get("", response_model=Page[AlertOut])
async def list_alerts(
    actor: AlertsRead,
    fc: ForecourtDep,
    session: DbSession,
    page: Paging,
    severity: Severity | None = None,
    state: State | None = None,
    type: Annotated[str | None, Query(max_length=128, description="Exact type.")] = None,
    since: Since = None,
    until: Until = None,
) -> Page[AlertOut]:
    """Your tenant's alerts, newest first."""
    filters = AlertFilter(severity, state, type, aware(since, "since"), aware(until, "until"))
    rows, cursor = await fc.alerts(session).page(actor.tenant_id, filters, page.cursor, page.limit)
    return Page[AlertOut](items=[AlertOut.model_validate(r) for r in rows], next_cursor=cursor)


@alerts.get("/summary", response_model=AlertSummary)
async def alert_summary(
    actor: AlertsRead,
    fc: ForecourtDep,
    session: DbSession,
    since: Since = None,
    until: Until = None,
) -> AlertSummary:
    """How many alerts there are, by state, and by severity and state."""
    counts = await fc.alerts(session).summary(
        actor.tenant_id, AlertFilter(since=aware(since, "since"), until=aware(until, "until"))
    )
    return AlertSummary.model_validate(counts)


@alerts.get("/{alert_id}", response_model=AlertOut)
async def get_alert(
    alert_id: str, actor: AlertsRead, fc: ForecourtDep, session: DbSession
) -> AlertOut:
    return AlertOut.model_validate(await fc.alerts(session).get(actor.tenant_id, alert_id))


@alerts.post("/{alert_id}/acknowledge", response_model=AlertOut)
async def acknowledge_alert(
    alert_id: str, actor: AlertsWrite, fc: ForecourtDep, session: DbSession
) -> AlertOut:
    """Acknowledge an open alert; 409 if it is acknowledged or resolved already."""
    return AlertOut.model_validate(await fc.alerts(session).acknowledge(actor, alert_id))


@alerts.post("/{alert_id}/resolve", response_model=AlertOut)
async def resolve_alert(
    alert_id: str, actor: AlertsWrite, fc: ForecourtDep, session: DbSession
) -> AlertOut:
    """Resolve an open or acknowledged alert; 409 if it is resolved already. The next
    trigger of its type and labels opens a new alert."""
    return AlertOut.model_validate(await fc.alerts(session).resolve(actor, alert_id))


@rules.post("", status_code=status.HTTP_201_CREATED, response_model=AlertRuleOut)
async def create_rule(
    body: AlertRuleCreate, actor: AlertsWrite, fc: ForecourtDep, session: DbSession
) -> AlertRuleOut:
    """A rule: it opens an alert when its condition has held for ``for_s`` seconds and
    resolves it at the first evaluation where it no longer holds."""
    return rule_out(await fc.alert_rules(session).create(actor, body))


@rules.get("", response_model=Page[AlertRuleOut])
async def list_rules(
    actor: AlertsRead, fc: ForecourtDep, session: DbSession, page: Paging
) -> Page[AlertRuleOut]:
    """Your tenant's alert rules with their status, newest first."""
    rows, cursor = await fc.alert_rules(session).page(actor.tenant_id, page.cursor, page.limit)
    return Page[AlertRuleOut](items=[rule_out(r) for r in rows], next_cursor=cursor)


@rules.get("/{rule_id}", response_model=AlertRuleOut)
async def get_rule(
    rule_id: str, actor: AlertsRead, fc: ForecourtDep, session: DbSession
) -> AlertRuleOut:
    return rule_out(await fc.alert_rules(session).get(actor.tenant_id, rule_id))


@rules.patch("/{rule_id}", response_model=AlertRuleOut)
async def update_rule(
    rule_id: str, body: AlertRuleUpdate, actor: AlertsWrite, fc: ForecourtDep, session: DbSession
) -> AlertRuleOut:
    """Change the fields given. A changed definition starts the for-duration again;
    disabling a firing rule resolves its alert."""
    changes = body.model_dump(exclude_unset=True)
    changes = {k: v for k, v in changes.items() if v is not None or k == "threshold"}
    return rule_out(await fc.alert_rules(session).update(actor, rule_id, changes))


@rules.delete("/{rule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_rule(
    rule_id: str, actor: AlertsWrite, fc: ForecourtDep, session: DbSession
) -> None:
    """Delete the rule; its alert, if it is firing, is resolved."""
    await fc.alert_rules(session).delete(actor, rule_id)
