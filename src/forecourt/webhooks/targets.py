"""An endpoint as a delivery needs it, read as a plain row.

Publishing one event to 1,000 endpoints, or claiming 500 deliveries, reads that many
endpoints. As ORM objects (identity map, instrumented attributes, every JSON column decoded
for each) they made planning a 1,000-endpoint publish take 20 to 28 ms; as targets the match
takes 8 ms. A ``Target`` holds only what matching and sending need, and its JSON fields are
decoded once per distinct text: most endpoints share theirs (``[]``, ``{}``, the default
retry policy).

Targets are snapshots: they are read in the transaction that queues or claims the deliveries
and are never written back.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any, cast

import orjson
from sqlalchemy import ColumnElement, Table, Text, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.ext.asyncio import AsyncConnection

from forecourt.db import bulk
from forecourt.webhooks.models import Endpoint

_DECODED_MAX = 4_096  # distinct JSON texts kept decoded

_ENDPOINTS = cast(Table, Endpoint.__table__)


@dataclass(frozen=True, slots=True)
class Target:
    """What matching an event and sending it to an endpoint read of the endpoint."""

    id: str
    tenant_id: str
    url: str
    event_types: tuple[str, ...]
    headers: Mapping[str, str]
    timeout_s: float
    retry_policy: Mapping[str, Any]
    rate_limit_per_s: int | None
    secret_encrypted: str
    previous_secret_encrypted: str | None
    previous_secret_expires_at: datetime | None
    enabled: bool


_C = _ENDPOINTS.c
# JSON as its stored text, decoded here once per distinct text.
_COLUMNS: list[ColumnElement[Any]] = [
    _C.id,
    _C.tenant_id,
    _C.url,
    sql_cast(_C.event_types, Text),
    sql_cast(_C.headers, Text),
    _C.timeout_s,
    sql_cast(_C.retry_policy, Text),
    _C.rate_limit_per_s,
    _C.secret_encrypted,
    _C.previous_secret_encrypted,
    _C.previous_secret_expires_at,
    _C.enabled,
]


@functools.lru_cache(maxsize=_DECODED_MAX)
def _frozen(text: str | None, freeze: Callable[[Any], Any]) -> Any:
    """The JSON ``text`` decoded and made read-only by ``freeze``; shared by equal texts of
    the same kind."""
    return freeze(orjson.loads(text or "null"))


def _types(value: Any) -> tuple[str, ...]:
    return tuple(value) if isinstance(value, list) else ()


def _mapping(value: Any) -> Mapping[str, Any]:
    return MappingProxyType(value if isinstance(value, dict) else {})


def _target(row: Any) -> Target:
    return Target(
        row[0],
        row[1],
        row[2],
        _frozen(row[3], _types),
        _frozen(row[4], _mapping),
        row[5],
        _frozen(row[6], _mapping),
        row[7],
        row[8],
        row[9],
        row[10],
        row[11],
    )


async def enabled_of_tenant(conn: AsyncConnection, tenant_id: str) -> list[Target]:
    """Every enabled endpoint of the tenant."""
    c = _ENDPOINTS.c
    statement = select(*_COLUMNS).where(c.tenant_id == tenant_id, c.enabled.is_(True))
    return [_target(row) for row in await conn.execute(statement)]


async def by_id_checked(
    conn: AsyncConnection, ids: Iterable[str]
) -> tuple[dict[str, Target], dict[str, str]]:
    """The endpoints of ``ids`` that exist, by id; and why those that cannot be read
    (their stored JSON does not decode) could not, by id."""
    found: dict[str, Target] = {}
    broken: dict[str, str] = {}
    for chunk in bulk.chunks(sorted(set(ids))):
        statement = select(*_COLUMNS).where(_ENDPOINTS.c.id.in_(chunk))
        for row in await conn.execute(statement):
            try:
                target = _target(row)
            except Exception as exc:
                broken[row[0]] = f"the endpoint cannot be read: {type(exc).__name__}: {exc}"
                continue
            found[target.id] = target
    return found, broken


async def by_id(conn: AsyncConnection, ids: Iterable[str]) -> dict[str, Target]:
    """The endpoints of ``ids`` that exist and can be read, by id."""
    found, _ = await by_id_checked(conn, ids)
    return found
