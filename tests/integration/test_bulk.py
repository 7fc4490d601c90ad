"""Bulk statements store exactly what SQLAlchemy's own inserts store, on SQLite and on
PostgreSQL, and update only the rows they are meant to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import pytest
from sqlalchemy import Table, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from conftest import Harness
from forecourt.db import bulk
from forecourt.events.models import Event
from forecourt.ids import new_id
from forecourt.tenants.models import DEFAULT_TENANT_SLUG, Tenant

EVENTS = cast(Table, Event.__table__)
CET = timezone(timedelta(hours=1))


async def tenant_id(h: Harness) -> str:
    async with h.fc.sessionmaker() as session:
        found = await session.scalar(select(Tenant.id).where(Tenant.slug == DEFAULT_TENANT_SLUG))
    assert found is not None
    return found


# Rows are stored as of an hour ago: within event retention, so the node's retention pass
# (run at its start) never prunes what a test just wrote.
RECENT = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=120_000)


def event_row(tenant: str, **values: Any) -> dict[str, Any]:
    at = RECENT
    row = {
        "id": new_id("evt"),
        "tenant_id": tenant,
        "ce_id": new_id("ce"),
        "idempotency_key": None,
        "source": "/bulk",
        "type": "dashboard.created",
        "subject": None,
        "time": at,
        "datacontenttype": "application/json",
        "data": {"title": "Zürich", "n": 1.5, "list": [1, None, True]},
        "severity": "info",
        "size_bytes": 10,
        "created_at": at,
    }
    return {**row, **values}


async def stored(h: Harness, event_id: str) -> tuple[Any, ...]:
    """The row as the database holds it: text for SQLite timestamps and JSON."""
    async with h.fc.engine.connect() as conn:
        result = await conn.execute(
            text("SELECT time, created_at, data, subject FROM events WHERE id = :id"),
            {"id": event_id},
        )
        return tuple(result.one())


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"data": None},  # a JSON null, as the JSON type stores it
        {"time": datetime(2026, 3, 1, 13, 30, 5, 0, tzinfo=CET), "subject": "s-1"},
        {"data": {"nested": {"deep": ["x"]}}, "time": datetime(1999, 12, 31, tzinfo=UTC)},
    ],
)
async def test_inserted_rows_are_stored_as_a_core_insert_stores_them(
    harness: Harness, values: dict[str, Any]
) -> None:
    tenant = await tenant_id(harness)
    ours, theirs = event_row(tenant, **values), event_row(tenant, **values)
    async with harness.fc.engine.begin() as conn:
        await bulk.insert_rows(conn, EVENTS, [ours])
        await conn.execute(insert(EVENTS), [theirs])

    assert await stored(harness, ours["id"]) == await stored(harness, theirs["id"])
    async with harness.fc.sessionmaker() as session:
        loaded = await session.get(Event, ours["id"])
    assert loaded is not None
    assert loaded.time == values.get("time", ours["time"])
    assert loaded.data == ours["data"]


async def test_many_rows_in_one_statement(harness: Harness) -> None:
    tenant = await tenant_id(harness)
    rows = [event_row(tenant, data={"seq": i}) for i in range(250)]
    async with harness.fc.engine.begin() as conn:
        await bulk.insert_rows(conn, EVENTS, rows)
    async with harness.fc.sessionmaker() as session:
        found = (await session.scalars(select(Event).where(Event.source == "/bulk"))).all()
    assert sorted(e.data["seq"] for e in found) == list(range(250))


async def test_a_duplicate_key_is_an_integrity_error_and_nothing_is_kept(
    harness: Harness,
) -> None:
    tenant = await tenant_id(harness)
    first = event_row(tenant)
    with pytest.raises(IntegrityError):
        async with harness.fc.engine.begin() as conn:
            await bulk.insert_rows(conn, EVENTS, [first, event_row(tenant), dict(first)])
    async with harness.fc.sessionmaker() as session:
        assert await session.get(Event, first["id"]) is None


async def test_a_naive_timestamp_is_refused(harness: Harness) -> None:
    tenant = await tenant_id(harness)
    row = event_row(tenant, time=datetime(2026, 1, 1))
    async with harness.fc.engine.begin() as conn:
        with pytest.raises(ValueError, match="naive"):
            await bulk.insert_rows(conn, EVENTS, [row])


async def test_a_column_with_a_default_must_be_given(harness: Harness) -> None:
    tenant = await tenant_id(harness)
    row = event_row(tenant)
    del row["severity"]
    async with harness.fc.engine.begin() as conn:
        with pytest.raises(ValueError, match="severity"):
            await bulk.insert_rows(conn, EVENTS, [row])


async def test_update_rows_sets_values_and_expressions_where_the_guard_holds(
    harness: Harness,
) -> None:
    tenant = await tenant_id(harness)
    rows = [event_row(tenant, severity="info", size_bytes=10) for _ in range(3)]
    rows[2]["severity"] = "error"  # the guard keeps this one as it is
    async with harness.fc.engine.begin() as conn:
        await bulk.insert_rows(conn, EVENTS, rows)
    later = (RECENT + timedelta(minutes=30)).replace(microsecond=0)
    async with harness.fc.engine.begin() as conn:
        updated = await bulk.update_rows(
            conn,
            EVENTS,
            [(row["id"], f"subject-{i}", later) for i, row in enumerate(rows)]
            + [("evt_missing", "nobody", later)],
            key="id",
            columns=("subject", "created_at"),
            fixed={"size_bytes": "size_bytes + 5", "idempotency_key": "NULL"},
            guard=("severity", "info"),
        )
    assert updated == 2
    async with harness.fc.sessionmaker() as session:
        found = {e.id: e for e in await session.scalars(select(Event))}
    for i, row in enumerate(rows[:2]):
        event = found[row["id"]]
        assert (event.subject, event.created_at, event.size_bytes) == (f"subject-{i}", later, 15)
    untouched = found[rows[2]["id"]]
    assert (untouched.subject, untouched.size_bytes) == (None, 10)
    assert untouched.created_at == rows[2]["created_at"]


async def test_a_value_too_long_for_its_column_fares_as_in_a_core_insert(
    harness: Harness,
) -> None:
    """PostgreSQL refuses it (never cut short); SQLite keeps it, as it does for Core."""
    tenant = await tenant_id(harness)
    outcomes = []
    for write in (
        lambda conn, row: bulk.insert_rows(conn, EVENTS, [row]),
        lambda conn, row: conn.execute(insert(EVENTS), [row]),
    ):
        row = event_row(tenant, source="/" + "x" * 600)
        try:
            async with harness.fc.engine.begin() as conn:
                await write(conn, row)
        except DBAPIError as exc:
            outcomes.append(type(exc))
        else:
            stored_source = await source_of(harness, row["id"])
            assert stored_source == row["source"]
            outcomes.append(None)
    assert outcomes[0] == outcomes[1]
    assert (outcomes[0] is None) == (harness.fc.settings.is_sqlite)


async def source_of(h: Harness, event_id: str) -> str | None:
    async with h.fc.sessionmaker() as session:
        return await session.scalar(select(Event.source).where(Event.id == event_id))


async def test_update_rows_with_a_condition_leaves_the_rows_it_excludes(
    harness: Harness,
) -> None:
    tenant = await tenant_id(harness)
    rows = [event_row(tenant, size_bytes=n) for n in (0, 7, 9)]
    async with harness.fc.engine.begin() as conn:
        await bulk.insert_rows(conn, EVENTS, rows)
        updated = await bulk.update_rows(
            conn,
            EVENTS,
            [(row["id"],) for row in rows],
            key="id",
            columns=(),
            fixed={"size_bytes": "0", "subject": "'reset'"},
            condition="size_bytes != 0 OR subject IS NOT NULL",
        )
    assert updated == 2
    async with harness.fc.sessionmaker() as session:
        found = {e.id: e for e in await session.scalars(select(Event))}
    assert [(found[r["id"]].size_bytes, found[r["id"]].subject) for r in rows] == [
        (0, None),
        (0, "reset"),
        (0, "reset"),
    ]
