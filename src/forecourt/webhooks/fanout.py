"""Which endpoints an event goes to, and the delivery rows that queue it for them.

``enqueue`` adds rows to the caller's session: the publisher writes the event and its
deliveries in one transaction, so an accepted event can never miss its deliveries.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from forecourt.db import bulk
from forecourt.db.base import utcnow
from forecourt.errors import InvalidInput
from forecourt.ids import new_id
from forecourt.webhooks import targets
from forecourt.webhooks.models import PENDING, Delivery, Endpoint
from forecourt.webhooks.targets import Target

_DELIVERIES = cast(Table, Delivery.__table__)

TYPE_PATTERN = re.compile(r"^(\*|[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?)$")
"""An event-type filter: a name (``dashboard.created``), a wildcard (``dashboard.*``) or ``*``."""


def type_matches(patterns: Sequence[str], event_type: str) -> bool:
    """An empty filter takes every type; ``a.*`` takes ``a.b`` and ``a.b.c``; ``*`` takes all."""
    if not patterns:
        return True
    for pattern in patterns:
        if pattern == "*" or pattern == event_type:
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


def checked_patterns(patterns: Sequence[str], example: str) -> list[str]:
    """``patterns`` sorted, without repeats; InvalidInput naming the first one that is not a
    filter (``example`` is a type name to suggest, such as ``dashboard.created``)."""
    for i, pattern in enumerate(patterns):
        if not TYPE_PATTERN.match(pattern):
            wildcard = example.rsplit(".", 1)[0] + ".*"
            raise InvalidInput(
                f"Use event type names such as {example}, or wildcards such as {wildcard}",
                field=f"event_types.{i}",
            )
    return sorted(set(patterns))


async def matching_endpoints(
    session: AsyncSession, tenant_id: str, event_type: str
) -> list[Target]:
    """The tenant's enabled endpoints whose filter takes ``event_type``."""
    enabled = await targets.enabled_of_tenant(await session.connection(), tenant_id)
    return [target for target in enabled if type_matches(target.event_types, event_type)]


def delivery_rows(
    tenant_id: str, event_id: str, event_type: str, endpoint_ids: Sequence[str], now: datetime
) -> list[dict[str, Any]]:
    """A pending delivery row, due ``now``, per endpoint."""
    return [
        {
            "id": new_id("dlv"),
            "tenant_id": tenant_id,
            "endpoint_id": endpoint_id,
            "event_id": event_id,
            "event_type": event_type,
            "status": PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "lease_owner": None,
            "lease_expires_at": None,
            "created_at": now,
            "updated_at": now,
        }
        for endpoint_id in endpoint_ids
    ]


async def insert_deliveries(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (of ``delivery_rows``) in ``session``'s transaction, one statement."""
    if rows:
        await bulk.insert_rows(await session.connection(), _DELIVERIES, rows)


def enqueue(
    session: AsyncSession,
    tenant_id: str,
    event_id: str,
    event_type: str,
    endpoints: Iterable[Endpoint],
    *,
    now: datetime | None = None,
) -> list[Delivery]:
    """A pending delivery, due now, per endpoint; added to ``session``, not committed."""
    ids = [endpoint.id for endpoint in endpoints]
    rows = delivery_rows(tenant_id, event_id, event_type, ids, now or utcnow())
    deliveries = [Delivery(**row) for row in rows]
    session.add_all(deliveries)
    return deliveries
