"""REST /api/v1/events and /api/v1/event-types on SQLite and on PostgreSQL + Redis: the
envelope, fan-out in the publishing transaction, validation, deduplication, listing,
tenancy, scopes, the catalog, and retention."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

import receivers
from conftest import Harness
from forecourt import principal as principals
from forecourt.audit.models import AuditEntry
from forecourt.events import service as event_service
from forecourt.events.models import Event
from forecourt.keys.schemas import KeyCreate
from forecourt.tenants import service as tenants
from forecourt.tenants.models import DEFAULT_TENANT_SLUG, Tenant
from forecourt.webhooks import fanout
from forecourt.webhooks.models import Delivery

# Loopback with the SSRF guard on: nothing is ever sent there.
UNREACHABLE_URL = "http://127.0.0.1:9/hook"

EVENTS = "/api/v1/events"
TYPES = "/api/v1/event-types"
CE_ATTRIBUTES = {"specversion", "id", "source", "type", "time", "datacontenttype", "data"}
AMOUNT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["amount"],
    "properties": {
        "amount": {"type": "number", "minimum": 0},
        "lines": {"type": "array", "items": {"properties": {"sku": {"type": "string"}}}},
    },
}


# -- helpers ------------------------------------------------------------------------------


async def publish(
    h: Harness,
    body: dict[str, Any],
    key: str | None = None,
    idempotency_key: str | None = None,
    path: str = EVENTS,
) -> httpx.Response:
    headers = h.auth(key)
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return await h.client.post(path, json=body, headers=headers)


async def created(h: Harness, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    response = await publish(h, body, **kwargs)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def default_tenant(h: Harness) -> str:
    async with h.fc.sessionmaker() as session:
        tenant_id = await session.scalar(
            select(Tenant.id).where(Tenant.slug == DEFAULT_TENANT_SLUG)
        )
    assert tenant_id is not None
    return tenant_id


async def other_tenant_key(h: Harness, slug: str = "other") -> tuple[str, str]:
    """A second tenant and an admin key in it."""
    async with h.fc.sessionmaker() as session:
        tenant = await tenants.ensure(session, slug)
        await session.commit()
        _, raw = await h.fc.keys(session).create(
            principals.system(tenant.id),
            KeyCreate(name="other", scopes=["admin"], tier="enterprise"),
        )
    return tenant.id, raw


async def add_endpoint(
    h: Harness, tenant_id: str, event_types: list[str], enabled: bool = True
) -> str:
    # Loopback with the SSRF guard on: a running worker refuses it without sending.
    endpoint = await receivers.add_endpoint(
        h.fc,
        UNREACHABLE_URL,
        tenant_id=tenant_id,
        event_types=event_types,
        enabled=enabled,
        retry_policy={"kind": "exponential", "max_attempts": 8},
    )
    return endpoint.id


async def deliveries(h: Harness, event_id: str | None = None) -> list[Delivery]:
    stmt = select(Delivery)
    if event_id is not None:
        stmt = stmt.where(Delivery.event_id == event_id)
    async with h.fc.sessionmaker() as session:
        return list((await session.scalars(stmt)).all())


async def count_events(h: Harness) -> int:
    """Events published by the tests; Forecourt's own (key.created when a test makes a key)
    are not counted."""
    async with h.fc.sessionmaker() as session:
        stmt = select(func.count()).select_from(Event).where(Event.type.not_like("key.%"))
        return int(await session.scalar(stmt) or 0)


def published(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A listing without Forecourt's own key events."""
    return [e for e in items if not e["type"].startswith("key.")]


def problem_field(response: httpx.Response) -> str:
    body = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    field: str = body["errors"][0]["field"]
    return field


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# -- publish ------------------------------------------------------------------------------


async def test_publish_returns_the_cloudevents_envelope(harness: Harness) -> None:
    tenant_id = await default_tenant(harness)
    before = datetime.now(UTC)
    response = await publish(
        harness,
        {
            "type": "dashboard.created",
            "data": {"dashboard_id": "d-42", "title": "Sales"},
            "subject": "dashboards/d-42",
            "severity": "warning",
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert CE_ATTRIBUTES | {"subject", "tenant", "severity", "event_id", "created_at"} == set(body)
    assert body["specversion"] == "1.0"
    assert body["event_id"].startswith("evt_")
    assert body["id"] == body["event_id"]
    assert body["source"] == f"/forecourt/{tenant_id}"
    assert body["type"] == "dashboard.created"
    assert body["datacontenttype"] == "application/json"
    assert body["data"] == {"dashboard_id": "d-42", "title": "Sales"}
    assert body["subject"] == "dashboards/d-42"
    assert body["tenant"] == tenant_id
    assert body["severity"] == "warning"
    assert body["time"].endswith("Z")
    assert before - timedelta(seconds=1) <= parse_time(body["time"]) <= datetime.now(UTC)

    got = await harness.client.get(f"{EVENTS}/{body['event_id']}", headers=harness.auth())
    assert got.status_code == 200
    assert got.json() == body


async def test_publish_keeps_the_publishers_id_source_and_time(harness: Harness) -> None:
    body = await created(
        harness,
        {
            "type": "alert.triggered",
            "data": None,
            "id": "alerts/cpu/2026-01-01",
            "source": "urn:monitor:eu-1",
            "time": "2026-01-01T12:00:00Z",
            "specversion": "1.0",
            "datacontenttype": "application/json",
        },
    )
    assert body["id"] == "alerts/cpu/2026-01-01"
    assert body["event_id"] != body["id"]
    assert body["source"] == "urn:monitor:eu-1"
    assert parse_time(body["time"]) == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert body["severity"] == "info"
    assert body["data"] is None
    assert "subject" not in body
    # The CloudEvents id, slashes and all, finds it too.
    got = await harness.client.get(f"{EVENTS}/{body['id']}", headers=harness.auth())
    assert got.status_code == 200
    assert got.json()["event_id"] == body["event_id"]
    missing = await harness.client.get(f"{EVENTS}/evt_nothing", headers=harness.auth())
    assert missing.status_code == 404


async def test_deliveries_go_to_matching_enabled_endpoints_only(harness: Harness) -> None:
    tenant_id = await default_tenant(harness)
    exact = await add_endpoint(harness, tenant_id, ["dashboard.created"])
    wildcard = await add_endpoint(harness, tenant_id, ["dashboard.*"])
    everything = await add_endpoint(harness, tenant_id, [])
    await add_endpoint(harness, tenant_id, ["query.created", "alert.*"])
    await add_endpoint(harness, tenant_id, [], enabled=False)
    other_tenant, _ = await other_tenant_key(harness)
    await add_endpoint(harness, other_tenant, [])

    event = await created(harness, {"type": "dashboard.created", "data": {"n": 1}})
    rows = await deliveries(harness, event["event_id"])
    assert {d.endpoint_id for d in rows} == {exact, wildcard, everything}
    for row in rows:
        assert row.event_type == "dashboard.created"
        assert row.tenant_id == tenant_id

    viewed = await created(harness, {"type": "dashboard.viewed", "data": {}})
    assert {d.endpoint_id for d in await deliveries(harness, viewed["event_id"])} == {
        wildcard,
        everything,
    }
    executed = await created(harness, {"type": "query.executed", "data": {}})
    assert {d.endpoint_id for d in await deliveries(harness, executed["event_id"])} == {everything}


async def test_event_and_deliveries_are_one_transaction(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_id = await default_tenant(harness)
    await add_endpoint(harness, tenant_id, [])

    async def broken(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("the queue is broken")

    monkeypatch.setattr(fanout, "insert_deliveries", broken)
    response = await publish(harness, {"type": "dashboard.created", "data": {}})
    assert response.status_code == 500
    assert "the queue is broken" not in response.text
    assert await count_events(harness) == 0
    assert await deliveries(harness) == []

    monkeypatch.undo()
    event = await created(harness, {"type": "dashboard.created", "data": {}})
    assert await count_events(harness) == 1
    assert len(await deliveries(harness, event["event_id"])) == 1


async def test_unknown_type_is_422_naming_type(harness: Harness) -> None:
    response = await publish(harness, {"type": "nothing.here", "data": {}})
    assert response.status_code == 422
    assert problem_field(response) == "type"
    missing = await publish(harness, {"data": {}})
    assert missing.status_code == 422
    assert problem_field(missing) == "type"
    extra = await publish(harness, {"type": "dashboard.created", "data": {}, "colour": "red"})
    assert extra.status_code == 422
    assert problem_field(extra) == "colour"
    loud = await publish(harness, {"type": "dashboard.created", "data": {}, "severity": "loud"})
    assert loud.status_code == 422
    assert problem_field(loud) == "severity"
    assert await count_events(harness) == 0


@pytest.mark.parametrize("field", ["subject", "source", "id"])
async def test_a_nul_character_in_a_text_attribute_is_422(harness: Harness, field: str) -> None:
    """PostgreSQL's text cannot hold U+0000: refused up front, the same on every database,
    alone and in a batch. In data it is plain JSON and kept."""
    response = await publish(harness, {"type": "dashboard.created", field: "a\u0000b"})
    assert response.status_code == 422
    assert problem_field(response) == field
    batch = await harness.client.post(
        "/api/v1/events/batch",
        json={"events": [{"type": "dashboard.created", field: "x\u0000"}]},
        headers=harness.auth(),
    )
    assert batch.status_code == 422
    assert await count_events(harness) == 0
    kept = await publish(harness, {"type": "dashboard.created", "data": {"t": "a\u0000b"}})
    assert kept.status_code == 201
    assert kept.json()["data"] == {"t": "a\u0000b"}


async def test_data_must_match_the_types_schema(harness: Harness) -> None:
    response = await harness.client.post(
        TYPES,
        json={"name": "invoice.paid", "schema": AMOUNT_SCHEMA},
        headers=harness.auth(),
    )
    assert response.status_code == 201, response.text

    negative = await publish(harness, {"type": "invoice.paid", "data": {"amount": -1}})
    assert negative.status_code == 422
    assert problem_field(negative) == "data.amount"
    assert negative.json()["json_path"] == "$.amount"
    nested = await publish(
        harness, {"type": "invoice.paid", "data": {"amount": 1, "lines": [{"sku": 5}]}}
    )
    assert nested.status_code == 422
    assert problem_field(nested) == "data.lines.0.sku"
    missing = await publish(harness, {"type": "invoice.paid", "data": {}})
    assert missing.status_code == 422
    assert problem_field(missing) == "data"
    assert await count_events(harness) == 0

    await created(harness, {"type": "invoice.paid", "data": {"amount": 12.5}})


async def test_events_over_the_size_cap_are_413(harness_factory: Any) -> None:
    h: Harness = await harness_factory(max_event_bytes=1024)
    response = await publish(h, {"type": "export.completed", "data": {"blob": "x" * 2000}})
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["max_event_bytes"] == 1024
    assert await count_events(h) == 0
    await created(h, {"type": "export.completed", "data": {"blob": "x" * 100}})


# -- deduplication --------------------------------------------------------------------------


async def test_a_repeated_idempotency_key_returns_the_original(harness: Harness) -> None:
    tenant_id = await default_tenant(harness)
    await add_endpoint(harness, tenant_id, [])
    body = {"type": "user.created", "data": {"user": "u-1"}, "subject": "users/u-1"}
    first = await publish(harness, body, idempotency_key="req-1")
    assert first.status_code == 201, first.text
    again = await publish(harness, body, idempotency_key="req-1")
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert await count_events(harness) == 1
    assert len(await deliveries(harness)) == 1

    # Without the key, or with another, it is a new event.
    assert (await publish(harness, body, idempotency_key="req-2")).status_code == 201
    assert (await publish(harness, body)).status_code == 201
    assert await count_events(harness) == 3


async def test_a_reused_idempotency_key_with_another_body_is_409(harness: Harness) -> None:
    first = await created(
        harness, {"type": "user.created", "data": {"user": "u-1"}}, idempotency_key="k"
    )
    for changed in (
        {"type": "user.created", "data": {"user": "u-2"}},
        {"type": "user.updated", "data": {"user": "u-1"}},
        {"type": "user.created", "data": {"user": "u-1"}, "severity": "error"},
        {"type": "user.created", "data": {"user": "u-1"}, "id": "mine"},
    ):
        response = await publish(harness, changed, idempotency_key="k")
        assert response.status_code == 409, response.text
        assert response.json()["event_id"] == first["event_id"]
    assert await count_events(harness) == 1
    too_long = await publish(
        harness, {"type": "user.created", "data": {}}, idempotency_key="k" * 201
    )
    assert too_long.status_code == 422
    assert problem_field(too_long) == "Idempotency-Key"


async def test_an_expired_idempotency_key_names_a_new_event(harness: Harness) -> None:
    body = {"type": "user.created", "data": {"user": "u-1"}}
    first = await created(harness, body, idempotency_key="old")
    async with harness.fc.sessionmaker() as session:
        await session.execute(
            update(Event)
            .where(Event.id == first["event_id"])
            .values(created_at=datetime.now(UTC) - timedelta(days=2))
        )
        await session.commit()
    second = await created(harness, {**body, "data": {"user": "u-2"}}, idempotency_key="old")
    assert second["event_id"] != first["event_id"]
    assert await count_events(harness) == 2


async def test_a_repeated_event_id_returns_the_original(harness: Harness) -> None:
    tenant_id = await default_tenant(harness)
    await add_endpoint(harness, tenant_id, ["query.*"])
    first = await created(harness, {"type": "query.executed", "id": "run-7", "data": {"ms": 5}})
    again = await publish(harness, {"type": "query.executed", "id": "run-7", "data": {"ms": 5}})
    assert again.status_code == 200
    assert again.json() == first
    # Same id, other data: still the same event (CloudEvents), the original is returned.
    changed = await publish(harness, {"type": "query.executed", "id": "run-7", "data": {"ms": 9}})
    assert changed.status_code == 200
    assert changed.json()["data"] == {"ms": 5}
    assert await count_events(harness) == 1
    assert len(await deliveries(harness)) == 1


@pytest.mark.parametrize("by", ["idempotency-key", "event-id"])
async def test_concurrent_duplicates_store_one_event(harness: Harness, by: str) -> None:
    tenant_id = await default_tenant(harness)
    endpoints = {await add_endpoint(harness, tenant_id, []) for _ in range(2)}
    body: dict[str, Any] = {"type": "export.completed", "data": {"file": "a.csv"}}
    key = None
    if by == "idempotency-key":
        key = "same-key"
    else:
        body["id"] = "export-1"
    responses = await asyncio.gather(
        *(publish(harness, body, idempotency_key=key) for _ in range(10))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 9 + [201], [r.text for r in responses]
    assert len({r.json()["event_id"] for r in responses}) == 1
    assert await count_events(harness) == 1
    rows = await deliveries(harness)
    assert sorted(d.endpoint_id for d in rows) == sorted(endpoints)


# -- batch --------------------------------------------------------------------------------


async def test_batch_publish_stores_all(harness: Harness) -> None:
    tenant_id = await default_tenant(harness)
    await add_endpoint(harness, tenant_id, ["dashboard.*"])
    items = [
        {"type": "dashboard.created", "data": {"i": 0}},
        {"type": "dashboard.viewed", "data": {"i": 1}, "subject": "d/1"},
        {"type": "alert.resolved", "data": {"i": 2}, "id": "a-2"},
    ]
    response = await publish(harness, {"events": items}, path=f"{EVENTS}/batch")
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["created"], body["duplicates"]) == (3, 0)
    assert [e["type"] for e in body["events"]] == [i["type"] for i in items]
    assert [e["data"] for e in body["events"]] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert not any(e["duplicate"] for e in body["events"])
    assert body["events"][2]["id"] == "a-2"
    assert "subject" not in body["events"][0]
    assert await count_events(harness) == 3
    assert len(await deliveries(harness)) == 2

    # A repeat of one item's id: that item is the original, the others are new.
    mixed = await publish(
        harness,
        {"events": [{"type": "alert.resolved", "id": "a-2"}, {"type": "user.deleted"}]},
        path=f"{EVENTS}/batch",
    )
    assert mixed.status_code == 201
    assert [e["duplicate"] for e in mixed.json()["events"]] == [True, False]
    assert mixed.json()["events"][0]["event_id"] == body["events"][2]["event_id"]


async def test_batch_publish_is_all_or_nothing(harness: Harness) -> None:
    await harness.client.post(
        TYPES, json={"name": "invoice.paid", "schema": AMOUNT_SCHEMA}, headers=harness.auth()
    )
    good = {"type": "dashboard.created", "data": {}}
    cases: list[tuple[list[dict[str, Any]], str]] = [
        ([good, {"type": "nothing.here", "data": {}}], "events.1.type"),
        ([good, good, {"type": "invoice.paid", "data": {"amount": "x"}}], "events.2.data.amount"),
        ([{**good, "id": "x"}, {**good, "id": "x"}], "events.1.id"),
        ([good, {**good, "severity": "loud"}], "events.1.severity"),
        ([good] * 101, "events"),
        ([], "events"),
    ]
    for items, field in cases:
        response = await publish(harness, {"events": items}, path=f"{EVENTS}/batch")
        assert response.status_code == 422, response.text
        assert problem_field(response) == field
    assert await count_events(harness) == 0


async def test_batch_size_cap_and_idempotency(harness_factory: Any) -> None:
    h: Harness = await harness_factory(max_event_bytes=1024)
    small = {"type": "export.completed", "data": {"blob": "x"}}
    large = {"type": "export.completed", "data": {"blob": "x" * 2000}}
    too_big = await publish(h, {"events": [small, large]}, path=f"{EVENTS}/batch")
    assert too_big.status_code == 413
    assert too_big.json()["index"] == 1
    assert await count_events(h) == 0

    batch = {"events": [small, {**small, "subject": "s"}]}
    first = await publish(h, batch, idempotency_key="b-1", path=f"{EVENTS}/batch")
    assert first.status_code == 201
    again = await publish(h, batch, idempotency_key="b-1", path=f"{EVENTS}/batch")
    assert again.status_code == 200
    assert again.json()["duplicates"] == 2
    assert [e["event_id"] for e in again.json()["events"]] == [
        e["event_id"] for e in first.json()["events"]
    ]
    changed = {"events": [small, {**small, "subject": "t"}]}
    conflict = await publish(h, changed, idempotency_key="b-1", path=f"{EVENTS}/batch")
    assert conflict.status_code == 409
    assert await count_events(h) == 2


# -- reading ------------------------------------------------------------------------------


async def test_list_filters_and_pages_newest_first(harness: Harness) -> None:
    published: list[dict[str, Any]] = []
    for i, event_type in enumerate(
        [
            "dashboard.created",
            "dashboard.viewed",
            "query.executed",
            "dashboard.viewed",
            "alert.triggered",
            "data_source.created",
            "dashboard.deleted",
        ]
    ):
        subject = "d/1" if event_type.startswith("dashboard") and i < 4 else None
        body: dict[str, Any] = {"type": event_type, "data": {"i": i}}
        if subject:
            body["subject"] = subject
        published.append(await created(harness, body))
        await asyncio.sleep(0.002)  # ids order by millisecond

    async def listed(**params: Any) -> list[str]:
        ids: list[str] = []
        cursor = None
        while True:
            query = {**params, **({"cursor": cursor} if cursor else {})}
            response = await harness.client.get(EVENTS, params=query, headers=harness.auth())
            assert response.status_code == 200, response.text
            page = response.json()
            ids.extend(e["event_id"] for e in page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                return ids

    newest_first = [e["event_id"] for e in reversed(published)]
    assert await listed(limit=3) == newest_first
    first_page = await harness.client.get(EVENTS, params={"limit": 3}, headers=harness.auth())
    assert len(first_page.json()["items"]) == 3
    assert first_page.json()["items"][0] == published[-1]

    def ids_of(pred: Any) -> list[str]:
        return [e["event_id"] for e in reversed(published) if pred(e)]

    assert await listed(type="dashboard.viewed") == ids_of(
        lambda e: e["type"] == "dashboard.viewed"
    )
    assert await listed(type="dashboard.*", limit=2) == ids_of(
        lambda e: e["type"].startswith("dashboard.")
    )
    # "_" in a prefix is literal, not a LIKE wildcard.
    assert await listed(type="data_source.*") == ids_of(
        lambda e: e["type"] == "data_source.created"
    )
    assert await listed(type="*") == newest_first
    assert await listed(subject="d/1") == ids_of(lambda e: e.get("subject") == "d/1")

    middle = parse_time(published[3]["created_at"])
    since = await listed(since=middle.isoformat())
    assert since == newest_first[:4]
    until = await listed(until=middle.isoformat())
    assert until == newest_first[4:]
    naive = await harness.client.get(
        EVENTS, params={"since": "2026-01-01T00:00:00"}, headers=harness.auth()
    )
    assert naive.status_code == 422
    assert problem_field(naive) == "since"
    bad_cursor = await harness.client.get(EVENTS, params={"cursor": "!!"}, headers=harness.auth())
    assert bad_cursor.status_code == 422


async def test_another_tenant_never_sees_the_events(harness: Harness) -> None:
    tenant_id = await default_tenant(harness)
    mine = await created(harness, {"type": "user.created", "data": {"secret": 1}, "id": "u-1"})
    endpoint = await add_endpoint(harness, tenant_id, [])
    _, other_key = await other_tenant_key(harness)

    listed = await harness.client.get(EVENTS, headers=harness.auth(other_key))
    assert listed.status_code == 200
    assert published(listed.json()["items"]) == []
    assert all(e["tenant"] != tenant_id for e in listed.json()["items"])
    for ref in (mine["event_id"], mine["id"]):
        got = await harness.client.get(f"{EVENTS}/{ref}", headers=harness.auth(other_key))
        assert got.status_code == 404

    # The same CloudEvents id is a different event in another tenant; no delivery crosses.
    theirs = await created(
        harness, {"type": "user.created", "data": {"other": 1}, "id": "u-1"}, key=other_key
    )
    assert theirs["event_id"] != mine["event_id"]
    assert theirs["tenant"] != tenant_id
    assert await deliveries(harness, theirs["event_id"]) == []
    assert endpoint not in {d.endpoint_id for d in await deliveries(harness)}
    mine_listed = await harness.client.get(EVENTS, headers=harness.auth())
    assert [e["event_id"] for e in published(mine_listed.json()["items"])] == [mine["event_id"]]


async def test_scopes(harness: Harness) -> None:
    publisher = (await harness.create_key(["events:publish"]))["key"]
    reader = (await harness.create_key(["events:read"]))["key"]
    types_reader = (await harness.create_key(["event-types:read"]))["key"]
    body = {"type": "dashboard.created", "data": {}}

    assert (await publish(harness, body, key=publisher)).status_code == 201
    assert (await harness.client.get(EVENTS, headers=harness.auth(publisher))).status_code == 403
    forbidden = await publish(harness, body, key=reader)
    assert forbidden.status_code == 403
    assert forbidden.json()["required_scope"] == "events:publish"
    batch = await publish(harness, {"events": [body]}, key=reader, path=f"{EVENTS}/batch")
    assert batch.status_code == 403
    assert (await harness.client.get(EVENTS, headers=harness.auth(reader))).status_code == 200

    assert (await publish(harness, body, key="fck_live_not_a_real_key")).status_code == 401
    anonymous = await harness.client.post(EVENTS, json=body)
    assert anonymous.status_code == 401
    assert await count_events(harness) == 1

    assert (await harness.client.get(TYPES, headers=harness.auth(types_reader))).status_code == 200
    assert (await harness.client.get(TYPES, headers=harness.auth(publisher))).status_code == 403
    create = await harness.client.post(
        TYPES, json={"name": "a.b"}, headers=harness.auth(types_reader)
    )
    assert create.status_code == 403
    assert create.json()["required_scope"] == "event-types:write"


# -- the catalog ----------------------------------------------------------------------------


async def audit_actions(h: Harness) -> list[tuple[str, str | None]]:
    async with h.fc.sessionmaker() as session:
        rows = await session.scalars(
            select(AuditEntry).where(AuditEntry.target_type == "event_type").order_by(AuditEntry.id)
        )
        return [(r.action, r.actor_id) for r in rows]


async def test_event_type_catalog_lifecycle(harness: Harness) -> None:
    auth = harness.auth()
    catalog = await harness.client.get(TYPES, headers=auth)
    assert catalog.status_code == 200
    categories = catalog.json()["categories"]
    assert [c["name"] for c in categories] == [
        "data_source",
        "query",
        "dashboard",
        "alert",
        "export",
        "user",
        "forecourt",
    ]
    dashboard = next(c for c in categories if c["name"] == "dashboard")
    assert [t["name"] for t in dashboard["types"]] == [
        "dashboard.created",
        "dashboard.deleted",
        "dashboard.updated",
        "dashboard.viewed",
    ]
    assert all(t["builtin"] and t["description"] for t in dashboard["types"])
    assert dashboard["types"][0]["schema"] is None

    made = await harness.client.post(
        TYPES,
        json={"name": "invoice.paid", "description": "Paid.", "schema": AMOUNT_SCHEMA},
        headers=auth,
    )
    assert made.status_code == 201, made.text
    invoice = made.json()
    assert invoice["category"] == "invoice"
    assert invoice["schema"] == AMOUNT_SCHEMA
    assert not invoice["builtin"]
    assert invoice["archived_at"] is None
    shared = await harness.client.post(
        TYPES, json={"name": "dashboard.shared", "category": "dashboard"}, headers=auth
    )
    assert shared.status_code == 201

    grouped = (await harness.client.get(TYPES, headers=auth)).json()["categories"]
    names = [c["name"] for c in grouped]
    assert names[-1] == "invoice"
    assert "dashboard.shared" in [
        t["name"] for t in next(c for c in grouped if c["name"] == "dashboard")["types"]
    ]
    got = await harness.client.get(f"{TYPES}/invoice.paid", headers=auth)
    assert got.json() == invoice
    builtin = await harness.client.get(f"{TYPES}/key.created", headers=auth)
    assert builtin.json()["category"] == "forecourt"
    assert (await harness.client.get(f"{TYPES}/no.such", headers=auth)).status_code == 404

    refusals: list[tuple[dict[str, Any], int, str | None]] = [
        ({"name": "invoice.paid"}, 409, None),
        ({"name": "dashboard.created"}, 409, None),
        ({"name": "Invoice"}, 422, "name"),
        ({"name": "invoice.void", "schema": {"type": "nope"}}, 422, "schema"),
        ({"name": "invoice.void", "category": "forecourt"}, 422, "category"),
        ({"name": "invoice.void", "colour": "red"}, 422, "colour"),
    ]
    for body, status, field in refusals:
        response = await harness.client.post(TYPES, json=body, headers=auth)
        assert response.status_code == status, (body, response.text)
        if field:
            assert problem_field(response) == field

    patched = await harness.client.patch(
        f"{TYPES}/invoice.paid",
        json={"description": "An invoice was paid.", "schema": None, "category": "billing"},
        headers=auth,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["description"] == "An invoice was paid."
    assert patched.json()["schema"] is None
    assert patched.json()["category"] == "billing"
    await created(harness, {"type": "invoice.paid", "data": "no schema any more"})
    bad_patch = await harness.client.patch(
        f"{TYPES}/invoice.paid", json={"schema": {"type": 5}}, headers=auth
    )
    assert bad_patch.status_code == 422
    assert problem_field(bad_patch) == "schema"
    fixed = await harness.client.patch(f"{TYPES}/dashboard.created", json={}, headers=auth)
    assert fixed.status_code == 409
    assert (await harness.client.delete(f"{TYPES}/key.created", headers=auth)).status_code == 409
    assert (await harness.client.delete(f"{TYPES}/no.such", headers=auth)).status_code == 404

    archived = await harness.client.delete(f"{TYPES}/invoice.paid", headers=auth)
    assert archived.status_code == 200
    assert archived.json()["archived_at"] is not None
    listed = (await harness.client.get(TYPES, headers=auth)).json()["categories"]
    billing = next(c for c in listed if c["name"] == "billing")
    assert billing["types"][0]["archived_at"] is not None
    refused = await publish(harness, {"type": "invoice.paid", "data": {}})
    assert refused.status_code == 422
    assert problem_field(refused) == "type"
    again = await harness.client.post(TYPES, json={"name": "invoice.paid"}, headers=auth)
    assert again.status_code == 409
    restored = await harness.client.patch(
        f"{TYPES}/invoice.paid", json={"archived": False}, headers=auth
    )
    assert restored.json()["archived_at"] is None
    await created(harness, {"type": "invoice.paid", "data": {}})

    owner = (await harness.client.get("/api/v1/auth/me", headers=auth)).json()
    actions = await audit_actions(harness)
    assert [a for a, _ in actions] == [
        "event_type.created",
        "event_type.created",
        "event_type.updated",
        "event_type.archived",
        "event_type.updated",
    ]
    assert {actor for _, actor in actions} == {owner["actor_id"]}


async def test_custom_types_are_per_tenant(harness: Harness) -> None:
    _, other_key = await other_tenant_key(harness)
    response = await harness.client.post(
        TYPES, json={"name": "invoice.paid"}, headers=harness.auth(other_key)
    )
    assert response.status_code == 201
    mine = await harness.client.get(f"{TYPES}/invoice.paid", headers=harness.auth())
    assert mine.status_code == 404
    assert (await publish(harness, {"type": "invoice.paid", "data": {}})).status_code == 422
    ok = await publish(harness, {"type": "invoice.paid", "data": {}}, key=other_key)
    assert ok.status_code == 201
    # The same name is free in this tenant.
    own = await harness.client.post(TYPES, json={"name": "invoice.paid"}, headers=harness.auth())
    assert own.status_code == 201


# -- retention ----------------------------------------------------------------------------


async def age(h: Harness, event_ids: list[str], days: int) -> None:
    then = datetime.now(UTC) - timedelta(days=days)
    async with h.fc.sessionmaker() as session:
        await session.execute(
            update(Event).where(Event.id.in_(event_ids)).values(created_at=then, time=then)
        )
        await session.commit()


async def test_prune_deletes_old_events_and_their_deliveries(harness: Harness) -> None:
    tenant_id = await default_tenant(harness)
    await add_endpoint(harness, tenant_id, [])
    events = [await created(harness, {"type": "user.updated", "data": {"i": i}}) for i in range(5)]
    old = [e["event_id"] for e in events[:3]]
    await age(harness, old, days=31)
    cutoff = datetime.now(UTC) - timedelta(days=30)
    async with harness.fc.sessionmaker() as session:
        assert await event_service.prune(session, cutoff, batch=2) == 3
    async with harness.fc.sessionmaker() as session:
        left = set((await session.scalars(select(Event.id))).all())
    assert left == {e["event_id"] for e in events[3:]}
    assert {d.event_id for d in await deliveries(harness)} == left
    async with harness.fc.sessionmaker() as session:
        assert await event_service.prune(session, cutoff) == 0


async def test_the_retention_loop_prunes_by_the_setting(harness_factory: Any) -> None:
    h: Harness = await harness_factory(event_retention_days=2)
    old = await created(h, {"type": "user.deleted", "data": {}})
    recent = await created(h, {"type": "user.deleted", "data": {}})
    await age(h, [old["event_id"]], days=3)
    await age(h, [recent["event_id"]], days=1)
    task = asyncio.create_task(event_service.run_retention(h.fc, interval_s=0.05))
    try:
        for _ in range(200):
            if await count_events(h) == 1:
                break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    async with h.fc.sessionmaker() as session:
        assert list((await session.scalars(select(Event.id))).all()) == [recent["event_id"]]


async def test_event_types_appear_in_the_openapi_document(harness: Harness) -> None:
    spec = (await harness.client.get("/openapi.json")).json()
    for path in (EVENTS, f"{EVENTS}/batch", TYPES, f"{TYPES}/{{name}}"):
        assert path in spec["paths"], path


async def test_concurrent_publishes_share_commits_and_a_refusal_fails_only_its_own(
    harness: Harness,
) -> None:
    from sqlalchemy import event as sa_event

    commits = 0

    def counted(*_: Any) -> None:
        nonlocal commits
        commits += 1

    await created(harness, {"type": "dashboard.created", "data": {"n": -1}}, idempotency_key="k")
    sa_event.listen(harness.fc.engine.sync_engine, "commit", counted)
    try:
        bodies = [{"type": "dashboard.created", "data": {"n": n}} for n in range(40)]
        # The same Idempotency-Key with another body: refused, in the middle of the crowd.
        conflicting = publish(
            harness, {"type": "dashboard.created", "data": {"n": 99}}, idempotency_key="k"
        )
        responses = await asyncio.gather(
            *(publish(harness, b) for b in bodies[:20]),
            conflicting,
            *(publish(harness, b) for b in bodies[20:]),
        )
    finally:
        sa_event.remove(harness.fc.engine.sync_engine, "commit", counted)

    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 40 and statuses[20] == 409
    assert await count_events(harness) == 41  # the 40 and the first "k"; nothing of the 409
    # Group commit: 41 requests in a handful of transactions (any other write of the app
    # during the test, e.g. usage counters, counts too).
    assert commits <= 10, commits
