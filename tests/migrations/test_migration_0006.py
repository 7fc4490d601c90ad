"""Migration 0006 (event ids unique per tenant, source and id) keeps every row written at
0005 (events with their deliveries and attempts) through the upgrade and the downgrade, on
SQLite (which rebuilds the events table: with foreign keys on, dropping the old table would
cascade into the deliveries and attempts) and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from test_migrations import empty_engine

from forecourt.db import migrate

__all__ = ["empty_engine"]  # the fixture, shared with test_migrations

# The tables as they are at 0005, only the columns written here.
META = MetaData()
TENANTS = Table(
    "tenants",
    META,
    Column("id", String),
    Column("slug", String),
    Column("name", String),
    Column("created_at", DateTime(timezone=True)),
)
EVENTS = Table(
    "events",
    META,
    Column("id", String),
    Column("tenant_id", String),
    Column("ce_id", String),
    Column("source", String),
    Column("type", String),
    Column("time", DateTime(timezone=True)),
    Column("datacontenttype", String),
    Column("data", JSON),
    Column("severity", String),
    Column("size_bytes", Integer),
    Column("created_at", DateTime(timezone=True)),
)
ENDPOINTS = Table(
    "webhook_endpoints",
    META,
    Column("id", String),
    Column("tenant_id", String),
    Column("url", String),
    Column("description", Text),
    Column("event_types", JSON),
    Column("headers", JSON),
    Column("timeout_s", Float),
    Column("retry_policy", JSON),
    Column("metadata", JSON),
    Column("secret_encrypted", Text),
    Column("enabled", Boolean),
    Column("consecutive_failures", Integer),
    Column("created_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True)),
)
DELIVERIES = Table(
    "webhook_deliveries",
    META,
    Column("id", String),
    Column("tenant_id", String),
    Column("endpoint_id", String),
    Column("event_id", String),
    Column("event_type", String),
    Column("status", String),
    Column("attempts", Integer),
    Column("created_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True)),
)
ATTEMPTS = Table(
    "webhook_attempts",
    META,
    Column("id", String),
    Column("tenant_id", String),
    Column("delivery_id", String),
    Column("endpoint_id", String),
    Column("attempt_no", Integer),
    Column("started_at", DateTime(timezone=True)),
    Column("duration_ms", Integer),
    Column("status_code", Integer),
)
TABLES = (TENANTS, EVENTS, ENDPOINTS, DELIVERIES, ATTEMPTS)
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(empty_engine: AsyncEngine) -> AsyncEngine:
    """An engine on an empty database of its own (test_migrations.empty_engine)."""
    return empty_engine


def event(n: int, source: str, ce_id: str, data: Any) -> dict[str, Any]:
    return {
        "id": f"evt_{n}",
        "tenant_id": "ten_1",
        "ce_id": ce_id,
        "source": source,
        "type": "order.created",
        "time": NOW,
        "datacontenttype": "application/json",
        "data": data,
        "severity": "info",
        "size_bytes": 10,
        "created_at": NOW + timedelta(seconds=n),
    }


async def seed(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            TENANTS.insert(), [{"id": "ten_1", "slug": "t1", "name": "T", "created_at": NOW}]
        )
        await conn.execute(
            EVENTS.insert(),
            [
                event(1, "/a", "order-1", {"n": 1}),
                event(2, "/b", "order-2", [1, 2]),
                event(3, "/a", "evt_3", 42),
            ],
        )
        await conn.execute(
            ENDPOINTS.insert(),
            [
                {
                    "id": "ep_1",
                    "tenant_id": "ten_1",
                    "url": "https://example.com/h",
                    "description": "",
                    "event_types": ["order.*"],
                    "headers": {"X-A": "1"},
                    "timeout_s": 5.0,
                    "retry_policy": {"kind": "exponential"},
                    "metadata": {"team": "x"},
                    "secret_encrypted": "sealed",
                    "enabled": True,
                    "consecutive_failures": 0,
                    "created_at": NOW,
                    "updated_at": NOW,
                }
            ],
        )
        await conn.execute(
            DELIVERIES.insert(),
            [
                {
                    "id": f"dlv_{n}",
                    "tenant_id": "ten_1",
                    "endpoint_id": "ep_1",
                    "event_id": f"evt_{n}",
                    "event_type": "order.created",
                    "status": "retrying",
                    "attempts": 2,
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for n in (1, 2, 3)
            ],
        )
        await conn.execute(
            ATTEMPTS.insert(),
            [
                {
                    "id": f"att_{n}_{k}",
                    "tenant_id": "ten_1",
                    "delivery_id": f"dlv_{n}",
                    "endpoint_id": "ep_1",
                    "attempt_no": k,
                    "started_at": NOW,
                    "duration_ms": 12,
                    "status_code": 503,
                }
                for n in (1, 2, 3)
                for k in (1, 2)
            ],
        )


async def snapshot(engine: AsyncEngine) -> dict[str, Any]:
    """Every row of the tables written here, and the names of all tables."""
    async with engine.connect() as conn:
        found: dict[str, Any] = {
            table.name: [tuple(row) for row in await conn.execute(select(table).order_by("id"))]
            for table in TABLES
        }
        found["tables"] = sorted(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
    return found


async def test_rows_written_at_0005_survive_the_upgrade_and_the_downgrade(
    engine: AsyncEngine,
) -> None:
    await migrate.upgrade(engine, "0005")
    await seed(engine)
    before = await snapshot(engine)
    assert len(before["webhook_attempts"]) == 6 and "events" in before["tables"]

    await migrate.upgrade(engine, "0006")
    assert await snapshot(engine) == before
    # At 0006 another source may use an id; the same source may not.
    async with engine.begin() as conn:
        await conn.execute(EVENTS.insert(), [event(4, "/b", "order-1", None)])
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(EVENTS.insert(), [event(5, "/a", "order-1", None)])
    async with engine.begin() as conn:
        await conn.execute(EVENTS.delete().where(EVENTS.c.id == "evt_4"))
    assert await snapshot(engine) == before

    await migrate.downgrade(engine, "0005")
    assert await snapshot(engine) == before
    # At 0005 ids are unique per tenant again.
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(EVENTS.insert(), [event(6, "/c", "order-1", None)])
    # The references still hold: deleting an event removes its deliveries and attempts.
    async with engine.begin() as conn:
        await conn.execute(EVENTS.delete().where(EVENTS.c.id == "evt_1"))
    after = await snapshot(engine)
    assert [r[0] for r in after["webhook_deliveries"]] == ["dlv_2", "dlv_3"]
    assert len(after["webhook_attempts"]) == 4


async def test_the_downgrade_refuses_ids_that_two_sources_share(engine: AsyncEngine) -> None:
    await migrate.upgrade(engine, "0006")
    await seed(engine)
    async with engine.begin() as conn:
        await conn.execute(EVENTS.insert(), [event(4, "/b", "order-1", None)])
    before = await snapshot(engine)
    with pytest.raises(IntegrityError):
        await migrate.downgrade(engine, "0005")
    assert await snapshot(engine) == before  # nothing dropped
