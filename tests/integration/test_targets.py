"""Endpoints read as delivery targets hold what the endpoint rows hold, on SQLite and on
PostgreSQL: the same values the ORM reads, JSON decoded, read-only, nothing of other tenants
or of disabled endpoints."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from conftest import Harness
from forecourt import principal as principals
from forecourt.db.base import utcnow
from forecourt.tenants import service as tenants
from forecourt.webhooks import fanout, targets
from forecourt.webhooks.models import Endpoint
from forecourt.webhooks.schemas import EndpointCreate

WEBHOOKS = "/api/v1/webhooks"
LOOPBACK_CIDR = "127.0.0.0/8"
FIELDS = (
    "id",
    "tenant_id",
    "url",
    "timeout_s",
    "rate_limit_per_s",
    "secret_encrypted",
    "previous_secret_encrypted",
    "previous_secret_expires_at",
    "enabled",
)


@pytest.fixture
async def wh(harness_factory: Any) -> Harness:
    return await harness_factory(webhook_allow_private=LOOPBACK_CIDR)


async def create(h: Harness, path: str, **fields: Any) -> str:
    response = await h.client.post(
        WEBHOOKS, json={"url": f"http://127.0.0.1:9/{path}", **fields}, headers=h.auth()
    )
    assert response.status_code == 201, response.text
    endpoint_id: str = response.json()["id"]
    return endpoint_id


async def rows(h: Harness) -> dict[str, Endpoint]:
    async with h.fc.sessionmaker() as session:
        return {e.id: e for e in await session.scalars(select(Endpoint))}


def assert_same(target: targets.Target, endpoint: Endpoint) -> None:
    for name in FIELDS:
        assert getattr(target, name) == getattr(endpoint, name), name
    assert list(target.event_types) == endpoint.event_types
    assert dict(target.headers) == endpoint.headers
    assert dict(target.retry_policy) == endpoint.retry_policy


async def test_targets_hold_what_the_rows_hold(wh: Harness) -> None:
    plain = await create(wh, "plain")
    full = await create(
        wh,
        "full",
        event_types=["dashboard.*", "alert.triggered"],
        headers={"X-Team": "ops", "X-Env": "prod"},
        timeout_s=2.5,
        retry_policy={"kind": "linear", "max_attempts": 3, "interval_s": 30},
        rate_limit_per_s=7,
        metadata={"owner": "ops"},
    )
    rotated = await create(wh, "rotated")
    response = await wh.client.post(
        f"{WEBHOOKS}/{rotated}/secret/rotate", json={"overlap_s": 600}, headers=wh.auth()
    )
    assert response.status_code == 200, response.text
    disabled = await create(wh, "disabled", enabled=False)
    stored = await rows(wh)

    async with wh.fc.engine.connect() as conn:
        found = await targets.by_id(conn, [plain, full, rotated, disabled, "we_missing"])
        tenant = stored[plain].tenant_id
        enabled = await targets.enabled_of_tenant(conn, tenant)

    assert set(found) == {plain, full, rotated, disabled}
    for endpoint_id, target in found.items():
        assert_same(target, stored[endpoint_id])
    assert found[rotated].previous_secret_encrypted is not None
    expires = found[rotated].previous_secret_expires_at
    assert expires is not None and expires.utcoffset() == timedelta(0)
    assert expires > utcnow()
    assert {t.id for t in enabled} == {plain, full, rotated}
    assert found[full].event_types == ("alert.triggered", "dashboard.*")  # stored sorted


async def test_decoded_json_is_shared_and_read_only(wh: Harness) -> None:
    first = await create(wh, "a", headers={"X-Team": "ops"})
    second = await create(wh, "b", headers={"X-Team": "ops"})
    async with wh.fc.engine.connect() as conn:
        found = await targets.by_id(conn, [first, second])
    a, b = found[first], found[second]
    assert a.headers is b.headers  # decoded once for both
    with pytest.raises(TypeError):
        a.headers["X-Team"] = "someone else"  # type: ignore[index]
    with pytest.raises(TypeError):
        a.retry_policy["max_attempts"] = 1  # type: ignore[index]
    assert dict(b.headers) == {"X-Team": "ops"}


async def test_matching_takes_the_filters_and_only_this_tenant(wh: Harness) -> None:
    every = await create(wh, "every")
    dashboards = await create(wh, "dashboards", event_types=["dashboard.*"])
    await create(wh, "alerts", event_types=["alert.triggered"])
    await create(wh, "off", enabled=False)
    async with wh.fc.sessionmaker() as session:
        other = await tenants.ensure(session, "tenant-b", "Tenant B")
        await session.commit()
        await wh.fc.webhooks(session).create(
            principals.system(other.id),
            EndpointCreate(url="http://127.0.0.1:9/other"),
        )
        await session.commit()
    stored = await rows(wh)
    tenant = stored[every].tenant_id

    async with wh.fc.sessionmaker() as session:
        matched = await fanout.matching_endpoints(session, tenant, "dashboard.created")
    assert {t.id for t in matched} == {every, dashboards}


def test_an_equal_text_of_another_kind_is_decoded_for_its_own_kind() -> None:
    """``null`` as a filter is no filter (a tuple); as headers or a policy, an empty mapping."""
    headers = targets._frozen("null", targets._mapping)
    filters = targets._frozen("null", targets._types)
    assert isinstance(headers, Mapping) and dict(headers) == {}
    assert filters == ()
    assert targets._frozen(None, targets._types) == ()
