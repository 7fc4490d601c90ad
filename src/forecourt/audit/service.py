"""Record changes and read them back. Nothing here updates or deletes an entry."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from forecourt.audit.models import AuditEntry
from forecourt.ids import new_id
from forecourt.pagination import next_cursor, paginate
from forecourt.principal import Principal

SECRET_FIELDS = frozenset(
    {
        "key",
        "key_hash",
        "previous_key_hash",
        "password",
        "password_hash",
        "secret",
        "token",
        "token_hash",
        "csrf_token",
    }
)


def redact(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    """The summary without secrets, whatever the caller passed."""
    if summary is None:
        return None
    return {k: v for k, v in summary.items() if k not in SECRET_FIELDS}


def record(
    session: AsyncSession,
    actor: Principal,
    action: str,
    target_type: str,
    target_id: str | None,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    tenant_id: str | None = None,
) -> AuditEntry:
    """Add an entry to the caller's transaction, so it commits with the change or not at all."""
    entry = AuditEntry(
        id=new_id("aud"),
        tenant_id=tenant_id or actor.tenant_id,
        actor_type=actor.actor_type,
        actor_id=actor.actor_id,
        action=action,
        target_type=target_type,
        target_id=target_id,
        before=redact(before),
        after=redact(after),
        ip=actor.ip,
        request_id=actor.request_id,
    )
    session.add(entry)
    return entry


# The actor other tenants' logs name for a change the installation's operator made: never the
# operator's own key or user id, which belong to another tenant.
OPERATOR = "operator"


def record_operator(
    session: AsyncSession,
    action: str,
    target_type: str,
    target_id: str | None,
    tenant_ids: Iterable[str],
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    skip: str | None = None,
) -> int:
    """Add an entry naming the operator to the log of every tenant in ``tenant_ids`` (but
    ``skip``, the acting tenant, whose own entry names its key or user); how many."""
    count = 0
    for tenant_id in dict.fromkeys(tenant_ids):
        if tenant_id == skip:
            continue
        session.add(
            AuditEntry(
                id=new_id("aud"),
                tenant_id=tenant_id,
                actor_type=OPERATOR,
                actor_id=None,
                action=action,
                target_type=target_type,
                target_id=target_id,
                before=redact(before),
                after=redact(after),
                ip=None,
                request_id=None,
            )
        )
        count += 1
    return count


@dataclass(frozen=True, slots=True)
class AuditFilter:
    actor_id: str | None = None
    action: str | None = None
    target_id: str | None = None
    target_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def list_entries(
    session: AsyncSession,
    tenant_id: str,
    filters: AuditFilter,
    cursor: str | None,
    limit: int,
) -> tuple[list[AuditEntry], str | None]:
    stmt = select(AuditEntry).where(AuditEntry.tenant_id == tenant_id)
    if filters.actor_id:
        stmt = stmt.where(AuditEntry.actor_id == filters.actor_id)
    if filters.action:
        if filters.action.endswith(".*"):
            stmt = stmt.where(AuditEntry.action.startswith(filters.action[:-1], autoescape=True))
        else:
            stmt = stmt.where(AuditEntry.action == filters.action)
    if filters.target_id:
        stmt = stmt.where(AuditEntry.target_id == filters.target_id)
    if filters.target_type:
        stmt = stmt.where(AuditEntry.target_type == filters.target_type)
    if filters.since:
        stmt = stmt.where(AuditEntry.created_at >= filters.since)
    if filters.until:
        stmt = stmt.where(AuditEntry.created_at < filters.until)
    rows = (await session.scalars(paginate(stmt, AuditEntry.id, cursor, limit))).all()
    return next_cursor(rows, limit)
