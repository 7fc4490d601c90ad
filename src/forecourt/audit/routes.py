"""REST: /api/v1/audit-log (read-only: the log cannot be edited or deleted)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from forecourt.audit import service
from forecourt.audit.schemas import AuditEntryOut
from forecourt.errors import InvalidInput
from forecourt.http.deps import DbSession, Paging, require
from forecourt.http.guard import GuardedRoute
from forecourt.principal import Principal
from forecourt.schemas import Page, Timestamp

AuditLogRead = Annotated[Principal, Depends(require("audit-log:read"))]

router = APIRouter(route_class=GuardedRoute, prefix="/api/v1/audit-log", tags=["audit-log"])


@router.get("", response_model=Page[AuditEntryOut])
async def list_audit_log(
    actor: AuditLogRead,
    session: DbSession,
    page: Paging,
    actor_id: Annotated[str | None, Query(description="Key or user id.")] = None,
    action: Annotated[str | None, Query(description="e.g. key.created, or key.* ")] = None,
    target_id: str | None = None,
    target_type: str | None = None,
    since: Annotated[Timestamp | None, Query(description="ISO 8601, inclusive.")] = None,
    until: Annotated[Timestamp | None, Query(description="ISO 8601, exclusive.")] = None,
) -> Page[AuditEntryOut]:
    """Every change in the tenant, newest first."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise InvalidInput("Give a time zone, e.g. 2026-01-01T00:00:00Z.", field=name)
    filters = service.AuditFilter(actor_id, action, target_id, target_type, since, until)
    rows, cursor = await service.list_entries(
        session, actor.tenant_id, filters, page.cursor, page.limit
    )
    return Page[AuditEntryOut](
        items=[AuditEntryOut.model_validate(r) for r in rows], next_cursor=cursor
    )
