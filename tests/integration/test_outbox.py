"""The transactional outbox and emit(): events and deliveries written in the caller's own
transaction commit with it or not at all, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import receivers
from conftest import Harness
from forecourt.db.engine import create_engine
from forecourt.errors import Conflict, InvalidInput, PayloadTooLarge
from forecourt.events import service as event_service
from forecourt.events.models import Event, EventType
from forecourt.events.outbox import EMITTED_HOOK, publish_in
from forecourt.events.service import EventConfig, EventService
from forecourt.ids import new_id
from forecourt.tenants import service as tenants
from forecourt.tenants.models import DEFAULT_TENANT_SLUG, Tenant
from forecourt.webhooks.models import Delivery

# Loopback with the SSRF guard on: nothing is ever sent there.
UNREACHABLE_URL = "http://127.0.0.1:9/hook"


class Recorder:
    """An after-commit hook that remembers its calls."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, deliveries: int) -> None:
        self.calls.append(deliveries)


@pytest.fixture
async def host(harness: Harness) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """The host application's own engine and sessions, on Forecourt's database."""
    engine = create_engine(harness.fc.settings.resolved_database_url)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


async def tenant_of(h: Harness) -> str:
    async with h.fc.sessionmaker() as session:
        tenant_id = await session.scalar(
            select(Tenant.id).where(Tenant.slug == DEFAULT_TENANT_SLUG)
        )
    assert tenant_id is not None
    return tenant_id


async def add_endpoints(h: Harness, tenant_id: str, filters: list[list[str]]) -> None:
    for event_types in filters:
        await receivers.add_endpoint(
            h.fc,
            UNREACHABLE_URL,
            tenant_id=tenant_id,
            event_types=event_types,
            retry_policy={"kind": "none", "max_attempts": 1},
        )


async def counts(h: Harness) -> tuple[int, int]:
    async with h.fc.sessionmaker() as session:
        events = await session.scalar(select(func.count()).select_from(Event))
        deliveries = await session.scalar(select(func.count()).select_from(Delivery))
    return int(events or 0), int(deliveries or 0)


async def test_committed_host_transaction_keeps_event_and_deliveries(
    harness: Harness, host: async_sessionmaker[AsyncSession]
) -> None:
    tenant_id = await tenant_of(harness)
    await add_endpoints(harness, tenant_id, [[], ["dashboard.*"], ["query.*"]])
    hook = Recorder()
    async with host() as session, session.begin():
        await tenants.ensure(session, "host-change")
        event = await publish_in(
            session,
            tenant_id=tenant_id,
            type="dashboard.created",
            data={"id": "d-1"},
            subject="dashboards/d-1",
            on_committed=hook,
        )
        assert hook.calls == []  # not before the commit
    assert hook.calls == [2]
    assert await counts(harness) == (1, 2)
    async with harness.fc.sessionmaker() as session:
        stored = await session.get(Event, event.id)
        assert stored is not None
        assert (stored.type, stored.data, stored.subject) == (
            "dashboard.created",
            {"id": "d-1"},
            "dashboards/d-1",
        )
        assert await session.scalar(select(Tenant).where(Tenant.slug == "host-change"))
    # It is in the API's log like any other event.
    listed = await harness.client.get("/api/v1/events", headers=harness.auth())
    assert [e["event_id"] for e in listed.json()["items"]] == [event.id]


async def test_rolled_back_host_transaction_leaves_nothing(
    harness: Harness, host: async_sessionmaker[AsyncSession]
) -> None:
    tenant_id = await tenant_of(harness)
    await add_endpoints(harness, tenant_id, [[]])
    hook = Recorder()

    class HostFailure(Exception):
        pass

    with pytest.raises(HostFailure):
        async with host() as session, session.begin():
            await tenants.ensure(session, "host-change")
            await publish_in(
                session, tenant_id=tenant_id, type="user.created", data={}, on_committed=hook
            )
            assert await session.scalar(select(func.count()).select_from(Delivery)) == 1
            raise HostFailure()
    assert await counts(harness) == (0, 0)
    assert hook.calls == []
    async with harness.fc.sessionmaker() as session:
        assert await session.scalar(select(Tenant).where(Tenant.slug == "host-change")) is None


async def test_outbox_validates_like_the_api(
    harness: Harness, host: async_sessionmaker[AsyncSession]
) -> None:
    tenant_id = await tenant_of(harness)
    async with harness.fc.sessionmaker() as session:
        session.add(
            EventType(
                id=new_id("etp"),
                tenant_id=tenant_id,
                name="invoice.paid",
                category="invoice",
                description="",
                schema={"type": "object", "required": ["amount"]},
                builtin=False,
            )
        )
        await session.commit()
    cases: list[tuple[dict[str, Any], type[Exception], str | None]] = [
        ({"type": "nothing.here", "data": {}}, InvalidInput, "type"),
        ({"type": "invoice.paid", "data": {}}, InvalidInput, "data"),
        ({"type": "user.created", "data": {}, "severity": "loud"}, InvalidInput, "severity"),
        ({"type": "user.created", "data": {"x": object()}}, InvalidInput, "data.x"),
        (
            {"type": "user.created", "data": {"blob": "x" * 2000}, "max_event_bytes": 1024},
            PayloadTooLarge,
            None,
        ),
    ]
    for kwargs, error, field in cases:
        async with host() as session, session.begin():
            with pytest.raises(error) as caught:
                await publish_in(session, tenant_id=tenant_id, **kwargs)
            if field is not None:
                assert isinstance(caught.value, InvalidInput)
                assert caught.value.field == field
    async with host() as session, session.begin():
        await publish_in(session, tenant_id=tenant_id, type="invoice.paid", data={"amount": 1})
    assert (await counts(harness))[0] == 1


async def test_outbox_deduplicates_by_id_and_idempotency_key(
    harness: Harness, host: async_sessionmaker[AsyncSession]
) -> None:
    tenant_id = await tenant_of(harness)
    await add_endpoints(harness, tenant_id, [[]])
    async with host() as session, session.begin():
        first = await publish_in(
            session, tenant_id=tenant_id, type="export.completed", data={"f": 1}, id="exp-1"
        )
        keyed = await publish_in(
            session,
            tenant_id=tenant_id,
            type="export.completed",
            data={"f": 2},
            idempotency_key="k-1",
        )
    hook = Recorder()
    async with host() as session, session.begin():
        again = await publish_in(
            session,
            tenant_id=tenant_id,
            type="export.completed",
            data={"f": 1},
            id="exp-1",
            on_committed=hook,
        )
        keyed_again = await publish_in(
            session,
            tenant_id=tenant_id,
            type="export.completed",
            data={"f": 2},
            idempotency_key="k-1",
        )
        with pytest.raises(Conflict):
            await publish_in(
                session,
                tenant_id=tenant_id,
                type="export.completed",
                data={"f": 3},
                idempotency_key="k-1",
            )
    assert (again.id, keyed_again.id) == (first.id, keyed.id)
    assert hook.calls == []
    assert await counts(harness) == (2, 2)


async def test_emit_writes_in_the_callers_transaction_and_calls_the_hook(
    harness: Harness,
) -> None:
    tenant_id = await tenant_of(harness)
    await add_endpoints(harness, tenant_id, [["endpoint.*"], ["key.*"], []])
    emitted = Recorder()
    async with harness.fc.sessionmaker() as session:
        session.info[EMITTED_HOOK] = emitted
        event = await event_service.emit(
            session,
            tenant_id,
            "endpoint.disabled",
            {"endpoint_id": "ep_1", "reason": "failing for 5 days"},
            subject="endpoints/ep_1",
            severity="warning",
        )
        assert emitted.calls == []
        await session.commit()
        assert emitted.calls == [2]
        assert event.type == "endpoint.disabled"
        assert event.severity == "warning"
        assert event.source == f"/forecourt/{tenant_id}"

        await event_service.emit(session, tenant_id, "key.created", {"key_id": "k"})
        await session.rollback()
        assert emitted.calls == [2]
        await session.commit()
        assert emitted.calls == [2]
    assert await counts(harness) == (1, 2)

    with pytest.raises(InvalidInput):
        async with harness.fc.sessionmaker() as session:
            await event_service.emit(session, tenant_id, "not.a_type", {})


async def test_service_emit_and_publish_call_on_published(harness: Harness) -> None:
    from forecourt.events.schemas import EventPublish
    from forecourt.principal import system

    tenant_id = await tenant_of(harness)
    await add_endpoints(harness, tenant_id, [[], ["plugin.*"]])
    published = Recorder()
    config = EventConfig(on_published=published)
    async with harness.fc.sessionmaker() as session:
        service = EventService(session, config)
        await service.emit(tenant_id, "plugin.failed", {"plugin": "p"}, severity="error")
        await session.commit()
        assert published.calls == [2]
        actor = system(tenant_id)
        _, created = await service.publish(actor, EventPublish(type="user.created"), "once")
        assert created
        assert published.calls == [2, 1]
        _, created = await service.publish(actor, EventPublish(type="user.created"), "once")
        assert not created
        assert published.calls == [2, 1]

        async def failing(_: int) -> None:
            raise RuntimeError("the worker is gone")

        # A failing hook never fails the publish: the event is committed already.
        failing_service = EventService(session, EventConfig(on_published=failing))
        _, created = await failing_service.publish(actor, EventPublish(type="user.updated"))
        assert created
    assert (await counts(harness))[0] == 3
