"""REST /api/v1/webhooks and /api/v1/deliveries, on SQLite and on PostgreSQL + Redis.

Endpoints (fields, defaults, validation, the SSRF guard at create and update), secrets
(reveal, rotation with overlap), the attempts log (listing with filters, one delivery with its
attempts, retry, recover), statistics, tenancy, scopes, the audit trail and the OpenAPI document.

Nothing here delivers: the queue and the attempts log are written directly, and the delivery
worker (when the node runs one) is stopped first so it cannot change them behind the tests.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import socket
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from conftest import Harness, free_port
from forecourt import principal as principals
from forecourt.events.models import Event
from forecourt.ids import new_id
from forecourt.keys.schemas import KeyCreate
from forecourt.tenants import service as tenants
from forecourt.webhooks import fanout
from forecourt.webhooks.models import (
    DELIVERING,
    FAILED,
    PENDING,
    RETRYING,
    SUCCEEDED,
    Attempt,
    Delivery,
    Endpoint,
)

WEBHOOKS = "/api/v1/webhooks"
DELIVERIES = "/api/v1/deliveries"
AUDIT = "/api/v1/audit-log"
PROBLEM = "application/problem+json"
LOOPBACK_CIDR = "127.0.0.0/8"
PUBLIC_IP = "93.184.216.34"
DAY = timedelta(days=1)
CLOSE = timedelta(seconds=30)  # how far "now" on the server may be from "now" in the test


# -- helpers -----------------------------------------------------------------------------


async def quiesce(h: Harness) -> Harness:
    """Stop the node's delivery worker, if it runs one, so queue rows stay as written."""
    worker = getattr(h.fc, "worker", None)
    if worker is not None:
        await worker.stop(0)
        h.fc.worker = None
    return h


@pytest.fixture
async def wh(harness_factory: Any) -> Harness:
    """A node whose SSRF guard lets 127.0.0.0/8 through (nothing listens: no delivery)."""
    return await quiesce(await harness_factory(webhook_allow_private=LOOPBACK_CIDR))


@pytest.fixture
def port() -> int:
    return free_port()


def url(port: int, path: str = "hook") -> str:
    return f"http://127.0.0.1:{port}/{path}"


def when(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def near(value: str | None, expected: datetime, slack: timedelta = CLOSE) -> bool:
    parsed = when(value)
    return parsed is not None and abs(parsed - expected) <= slack


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:forecourt:problem:")
    assert "Traceback" not in response.text
    return body


def bad_fields(response: httpx.Response) -> list[str]:
    body = assert_problem(response, 422)
    return [e["field"] for e in body["errors"]]


async def create(h: Harness, port: int, key: str | None = None, **fields: Any) -> dict[str, Any]:
    body = {"url": url(port), **fields}
    response = await h.client.post(WEBHOOKS, json=body, headers=h.auth(key))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def get(h: Harness, endpoint_id: str, key: str | None = None) -> dict[str, Any]:
    response = await h.client.get(f"{WEBHOOKS}/{endpoint_id}", headers=h.auth(key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def all_endpoints(h: Harness, key: str | None = None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        response = await h.client.get(WEBHOOKS, params=params, headers=h.auth(key))
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def audit_entries(h: Harness, **params: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {**params, "limit": 200, **({"cursor": cursor} if cursor else {})}
        response = await h.client.get(AUDIT, params=query, headers=h.auth())
        assert response.status_code == 200, response.text
        page = response.json()
        found.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return found


def secret_key_bytes(secret: str) -> bytes:
    assert secret.startswith("whsec_"), secret
    return base64.b64decode(secret[len("whsec_") :], validate=True)


def make_secret(n: int, fill: int = 7) -> str:
    return "whsec_" + base64.b64encode(bytes([fill]) * n).decode()


@dataclasses.dataclass(frozen=True)
class Row:
    """A delivery to write directly into the queue."""

    event_type: str
    status: str = PENDING
    age: timedelta = timedelta(0)  # created this long before now


async def add_deliveries(h: Harness, endpoint_id: str, rows: Sequence[Row]) -> list[str]:
    """One stored event and one delivery (through ``fanout.enqueue``) per row; their ids."""
    now = datetime.now(UTC)
    ids: list[str] = []
    async with h.fc.sessionmaker() as session:
        endpoint = await session.get(Endpoint, endpoint_id)
        assert endpoint is not None
        for row in rows:
            created = now - row.age
            event_id = new_id("evt")
            session.add(
                Event(
                    id=event_id,
                    tenant_id=endpoint.tenant_id,
                    ce_id=event_id,
                    source="/tests",
                    type=row.event_type,
                    time=created,
                    data={"n": len(ids)},
                    severity="info",
                    size_bytes=8,
                    created_at=created,
                )
            )
            [delivery] = fanout.enqueue(
                session, endpoint.tenant_id, event_id, row.event_type, [endpoint], now=created
            )
            delivery.status = row.status
            if row.status in (SUCCEEDED, FAILED):
                delivery.attempts = 1 if row.status == SUCCEEDED else 8
                delivery.next_attempt_at = None
                delivery.finished_at = created + timedelta(seconds=1)
                delivery.last_status_code = 200 if row.status == SUCCEEDED else 500
            elif row.status == RETRYING:
                delivery.attempts = 2
                delivery.next_attempt_at = now + timedelta(hours=1)
                delivery.last_status_code = 503
            elif row.status == DELIVERING:
                delivery.attempts = 1
                delivery.lease_owner = "another-worker"
                delivery.lease_expires_at = now + timedelta(minutes=5)
            ids.append(delivery.id)
        await session.commit()
    return ids


@dataclasses.dataclass(frozen=True)
class Try:
    """An attempt to write directly into the attempts log."""

    attempt_no: int
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error_class: str | None = None


async def add_attempts(h: Harness, delivery_id: str, tries: Sequence[Try]) -> list[str]:
    ids: list[str] = []
    async with h.fc.sessionmaker() as session:
        delivery = await session.get(Delivery, delivery_id)
        assert delivery is not None
        for t in tries:
            attempt_id = new_id("att")
            session.add(
                Attempt(
                    id=attempt_id,
                    tenant_id=delivery.tenant_id,
                    delivery_id=delivery.id,
                    endpoint_id=delivery.endpoint_id,
                    attempt_no=t.attempt_no,
                    started_at=t.started_at,
                    duration_ms=t.duration_ms,
                    status_code=t.status_code,
                    response_excerpt=None if t.status_code is None else f"answer {t.attempt_no}",
                    error_class=t.error_class,
                    error_message=None if t.error_class is None else f"{t.error_class} happened",
                    worker_id="test",
                )
            )
            ids.append(attempt_id)
        await session.commit()
    return ids


async def delivery_ids(
    h: Harness, endpoint_id: str, key: str | None = None, **params: Any
) -> set[str]:
    """Every delivery of the endpoint the listing returns for ``params`` (all pages)."""
    found: list[str] = []
    cursor: str | None = None
    while True:
        query = {**params, "limit": 200, **({"cursor": cursor} if cursor else {})}
        response = await h.client.get(
            f"{WEBHOOKS}/{endpoint_id}/deliveries", params=query, headers=h.auth(key)
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert all(item["endpoint_id"] == endpoint_id for item in page["items"])
        found.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(found) == len(set(found))
    return set(found)


async def make_other_tenant(h: Harness, slug: str = "tenant-b") -> str:
    """A second tenant with an admin key of its own; the raw key."""
    async with h.fc.sessionmaker() as session:
        tenant = await tenants.ensure(session, slug, "Tenant B")
        await session.commit()
        _, raw = await h.fc.keys(session).create(
            principals.system(tenant.id), KeyCreate(name="b-owner", scopes=["admin"])
        )
    return raw


class FakeResolver:
    """Host names resolved from a table; unknown names do not resolve."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        try:
            return list(self.table[host])
        except KeyError:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} is not known") from None


# -- create --------------------------------------------------------------------------------


async def test_create_returns_the_secret_and_the_defaults(wh: Harness, port: int) -> None:
    before = datetime.now(UTC)
    response = await wh.client.post(WEBHOOKS, json={"url": url(port)}, headers=wh.auth())
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["id"].startswith("ep_")
    assert len(secret_key_bytes(created["secret"])) == 32
    assert created["url"] == url(port)
    assert created["description"] == ""
    assert created["event_types"] == []
    assert created["headers"] == {}
    assert created["timeout_s"] == 15
    assert created["retry_policy"]["kind"] == "exponential"
    assert created["retry_policy"]["max_attempts"] == 8
    assert created["rate_limit_per_s"] is None
    assert created["metadata"] == {}
    assert created["enabled"] is True
    assert created["disabled_reason"] is None
    assert created["disabled_at"] is None
    assert created["previous_secret_expires_at"] is None
    assert near(created["created_at"], before)
    assert created["created_at"] == created["updated_at"]

    # Each endpoint gets a secret of its own; the secret is never shown by get or list.
    other = await create(wh, port)
    assert other["secret"] != created["secret"]
    got = await get(wh, created["id"])
    assert "secret" not in got
    assert got == {k: v for k, v in created.items() if k != "secret"}
    listed = await wh.client.get(WEBHOOKS, headers=wh.auth())
    assert "whsec_" not in listed.text
    assert created["id"] in [e["id"] for e in listed.json()["items"]]


async def test_create_with_every_field(wh: Harness, port: int) -> None:
    fields = {
        "url": url(port, "all/fields?x=1"),
        "description": "the billing receiver",
        "event_types": ["dashboard.created"],
        "headers": {"X-Team": "billing", "Authorization": "Bearer receiver-token"},
        "timeout_s": 2.5,
        "retry_policy": {"kind": "linear", "max_attempts": 3, "interval_s": 30},
        "rate_limit_per_s": 20,
        "metadata": {"owner": "team-a", "tags": ["x", 1]},
        "enabled": False,
    }
    response = await wh.client.post(WEBHOOKS, json=fields, headers=wh.auth())
    assert response.status_code == 201, response.text
    created = response.json()
    for name, value in fields.items():
        assert created[name] == value, name
    assert created["disabled_at"] is not None
    assert created["disabled_reason"]


async def test_event_type_filters(wh: Harness, port: int) -> None:
    exact = await create(wh, port, event_types=["dashboard.created", "alert.triggered"])
    assert sorted(exact["event_types"]) == ["alert.triggered", "dashboard.created"]
    wildcard = await create(wh, port, event_types=["dashboard.*", "data_source.created"])
    assert sorted(wildcard["event_types"]) == ["dashboard.*", "data_source.created"]
    everything = await create(wh, port, event_types=[])
    assert everything["event_types"] == []
    star = await create(wh, port, event_types=["*"])
    assert star["event_types"] == ["*"]
    repeated = await create(wh, port, event_types=["query.executed", "query.executed"])
    assert repeated["event_types"] == ["query.executed"]

    count = len(await all_endpoints(wh))
    invalid = [
        "Dashboard.Created",
        "dashboard.",
        ".created",
        "*.created",
        "dashboard.*.created",
        "dashboard..created",
        "dash board.created",
        "dashboard.created;drop",
        "",
    ]
    for pattern in invalid:
        response = await wh.client.post(
            WEBHOOKS,
            json={"url": url(port), "event_types": ["dashboard.created", pattern]},
            headers=wh.auth(),
        )
        assert bad_fields(response) == ["event_types.1"], pattern
    response = await wh.client.post(
        WEBHOOKS, json={"url": url(port), "event_types": "dashboard.*"}, headers=wh.auth()
    )
    assert bad_fields(response) == ["event_types"]
    assert len(await all_endpoints(wh)) == count


async def test_custom_headers_but_not_the_ones_forecourt_sets(wh: Harness, port: int) -> None:
    created = await create(wh, port, headers={"X-Api-Key": "abc", "authorization": "Bearer t"})
    assert created["headers"] == {"X-Api-Key": "abc", "authorization": "Bearer t"}

    count = len(await all_endpoints(wh))
    reserved = [
        "webhook-signature",
        "Webhook-Signature",
        "webhook-id",
        "WEBHOOK-TIMESTAMP",
        "Content-Type",
        "content-type",
        "User-Agent",
        "svix-signature",
        "Host",
        "Content-Length",
        "Transfer-Encoding",
    ]
    for name in reserved:
        response = await wh.client.post(
            WEBHOOKS,
            json={"url": url(port), "headers": {"X-Ok": "1", name: "mine"}},
            headers=wh.auth(),
        )
        assert bad_fields(response) == [f"headers.{name}"], name
    for name, value in (
        ("Bad Name", "x"),
        ("X-Split", "a\r\nInjected: 1"),
        ("X-Nul", "a\u0000b"),
        ("X-Bell", "\u0007"),
        ("X-Long", "v" * 5000),
    ):
        response = await wh.client.post(
            WEBHOOKS, json={"url": url(port), "headers": {name: value}}, headers=wh.auth()
        )
        assert bad_fields(response) == [f"headers.{name}"], name
    assert len(await all_endpoints(wh)) == count


async def test_timeout_bounds(wh: Harness, port: int) -> None:
    assert (await create(wh, port, timeout_s=60))["timeout_s"] == 60
    assert (await create(wh, port, timeout_s=0.5))["timeout_s"] == 0.5
    for value in (60.5, 61, 3600, 0, -1):
        response = await wh.client.post(
            WEBHOOKS, json={"url": url(port), "timeout_s": value}, headers=wh.auth()
        )
        assert bad_fields(response) == ["timeout_s"], value


async def test_retry_policies(wh: Harness, port: int) -> None:
    linear = await create(
        wh, port, retry_policy={"kind": "linear", "max_attempts": 5, "interval_s": 10}
    )
    assert linear["retry_policy"] == {"kind": "linear", "max_attempts": 5, "interval_s": 10}
    none = await create(wh, port, retry_policy={"kind": "none", "max_attempts": 1})
    assert none["retry_policy"]["kind"] == "none"
    assert none["retry_policy"]["max_attempts"] == 1
    most = await create(wh, port, retry_policy={"kind": "exponential", "max_attempts": 20})
    assert most["retry_policy"]["max_attempts"] == 20
    assert (await create(wh, port, retry_policy={}))["retry_policy"]["max_attempts"] == 8

    cases = [
        ({"kind": "fibonacci"}, "retry_policy.kind"),
        ({"kind": "linear", "max_attempts": 0}, "retry_policy.max_attempts"),
        ({"kind": "exponential", "max_attempts": 21}, "retry_policy.max_attempts"),
        ({"kind": "linear", "max_attempts": "3"}, "retry_policy.max_attempts"),
        ({"kind": "linear", "interval_s": 0}, "retry_policy.interval_s"),
        ({"kind": "linear", "jitter": True}, "retry_policy.jitter"),
    ]
    for policy, field in cases:
        response = await wh.client.post(
            WEBHOOKS, json={"url": url(port), "retry_policy": policy}, headers=wh.auth()
        )
        assert bad_fields(response) == [field], policy


async def test_supplied_secret(wh: Harness, port: int) -> None:
    supplied = make_secret(32, fill=9)
    created = await create(wh, port, secret=supplied)
    assert created["secret"] is None  # a secret the caller gave is never echoed
    revealed = await wh.client.get(f"{WEBHOOKS}/{created['id']}/secret", headers=wh.auth())
    assert revealed.json()["secret"] == supplied
    # Without its padding it is the same key, accepted as given.
    unpadded = make_secret(32, fill=3).rstrip("=")
    created = await create(wh, port, secret=unpadded)
    revealed = await wh.client.get(f"{WEBHOOKS}/{created['id']}/secret", headers=wh.auth())
    assert revealed.json()["secret"] == unpadded

    count = len(await all_endpoints(wh))
    malformed = [
        "",
        "not-a-secret",
        "whsec_",
        "whsec_!!!!",
        "WHSEC_" + make_secret(32)[6:],
        make_secret(16),  # too short
        make_secret(65),  # too long
        "whsec_" + base64.urlsafe_b64encode(b"\xfb" * 32).decode(),  # base64url, not base64
    ]
    for secret in malformed:
        response = await wh.client.post(
            WEBHOOKS, json={"url": url(port), "secret": secret}, headers=wh.auth()
        )
        assert bad_fields(response) == ["secret"], secret
    assert len(await all_endpoints(wh)) == count


# -- the SSRF guard ----------------------------------------------------------------------------


async def test_the_ssrf_guard_refuses_private_targets_by_default(harness: Harness) -> None:
    await quiesce(harness)
    audit_before = await audit_entries(harness)
    refused = [
        "http://127.0.0.1/",
        "http://127.0.0.1:8000/hook",
        "http://localhost./hook",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://2130706433/",
        "http://0x7f000001/",
        "ftp://x",
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "gopher://example.com/",
        "http://user:pass@example.com/hook",
        "http://user@example.com/hook",
        "https:///no-host",
        "not a url",
    ]
    for target in refused:
        response = await harness.client.post(WEBHOOKS, json={"url": target}, headers=harness.auth())
        assert bad_fields(response) == ["url"], target
    assert await all_endpoints(harness) == []
    assert await audit_entries(harness) == audit_before


async def test_an_allowlist_lets_only_its_networks_through(wh: Harness, port: int) -> None:
    assert (await create(wh, port))["url"] == url(port)
    assert (await create(wh, port, url=f"http://127.0.0.2:{port}/x"))["enabled"]
    for target in ("http://10.0.0.1/", "http://169.254.169.254/", "http://192.168.0.1/"):
        response = await wh.client.post(WEBHOOKS, json={"url": target}, headers=wh.auth())
        assert bad_fields(response) == ["url"], target


async def test_host_names_are_resolved_and_every_address_checked(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolver = FakeResolver(
        {
            "hooks.example.com": [PUBLIC_IP],
            "two.example.com": [PUBLIC_IP, "2606:2800:220:1:248:1893:25c8:1946"],
            "loopback.example.com": ["127.0.0.1"],
            "rebind.example.com": [PUBLIC_IP, "127.0.0.1"],
            "internal.example.com": ["10.1.2.3"],
            "metadata.example.com": ["169.254.169.254"],
            "mapped.example.com": ["::ffff:127.0.0.1"],
        }
    )
    config = dataclasses.replace(harness.fc.webhook_config, resolver=resolver)
    monkeypatch.setattr(harness.fc, "webhook_config", config)

    for host in ("hooks.example.com", "two.example.com"):
        response = await harness.client.post(
            WEBHOOKS, json={"url": f"https://{host}/hook"}, headers=harness.auth()
        )
        assert response.status_code == 201, response.text
    assert resolver.asked == ["hooks.example.com", "two.example.com"]
    for host in (
        "loopback.example.com",
        "rebind.example.com",
        "internal.example.com",
        "metadata.example.com",
        "mapped.example.com",
        "unknown.example.com",
    ):
        response = await harness.client.post(
            WEBHOOKS, json={"url": f"https://{host}/hook"}, headers=harness.auth()
        )
        assert bad_fields(response) == ["url"], host
    assert len(await all_endpoints(harness)) == 2

    # An update is checked the same way.
    endpoint = (await all_endpoints(harness))[0]
    for target in ("https://loopback.example.com/", "http://10.0.0.1/"):
        response = await harness.client.patch(
            f"{WEBHOOKS}/{endpoint['id']}", json={"url": target}, headers=harness.auth()
        )
        assert bad_fields(response) == ["url"], target
    assert (await get(harness, endpoint["id"]))["url"] == endpoint["url"]
    response = await harness.client.patch(
        f"{WEBHOOKS}/{endpoint['id']}",
        json={"url": "https://hooks.example.com/moved"},
        headers=harness.auth(),
    )
    assert response.status_code == 200, response.text
    assert response.json()["url"] == "https://hooks.example.com/moved"


# -- list, get, update, enable/disable, delete -------------------------------------------------


async def test_list_pages_with_a_cursor(wh: Harness, port: int) -> None:
    created = [(await create(wh, port, description=f"e{i}"))["id"] for i in range(5)]
    seen: list[str] = []
    sizes: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        response = await wh.client.get(WEBHOOKS, params=params, headers=wh.auth())
        assert response.status_code == 200, response.text
        page = response.json()
        sizes.append(len(page["items"]))
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sizes == [2, 2, 1]
    assert sorted(seen) == sorted(created)
    assert seen == sorted(seen, reverse=True)  # newest first
    response = await wh.client.get(WEBHOOKS, params={"cursor": "%%%"}, headers=wh.auth())
    assert bad_fields(response) == ["cursor"]
    response = await wh.client.get(WEBHOOKS, params={"limit": 0}, headers=wh.auth())
    assert bad_fields(response) == ["limit"]


async def test_get_unknown_is_404(wh: Harness) -> None:
    response = await wh.client.get(f"{WEBHOOKS}/ep_doesnotexist", headers=wh.auth())
    assert_problem(response, 404)


async def test_patch_changes_only_the_fields_given(wh: Harness, port: int) -> None:
    created = await create(
        wh,
        port,
        description="before",
        event_types=["dashboard.*"],
        headers={"X-A": "1"},
        rate_limit_per_s=5,
        metadata={"k": "v"},
    )
    endpoint_id = created["id"]
    path = f"{WEBHOOKS}/{endpoint_id}"
    original = {k: v for k, v in created.items() if k != "secret"}

    response = await wh.client.patch(path, json={"description": "after"}, headers=wh.auth())
    assert response.status_code == 200, response.text
    body = response.json()
    assert "secret" not in body
    assert body["description"] == "after"
    unchanged = {k: v for k, v in body.items() if k not in {"description", "updated_at"}}
    assert unchanged == {
        k: v for k, v in original.items() if k not in {"description", "updated_at"}
    }
    assert when(body["updated_at"]) >= when(created["updated_at"])  # type: ignore[operator]

    changes: dict[str, Any] = {
        "url": url(port, "moved"),
        "event_types": ["alert.*", "query.executed"],
        "headers": {"X-B": "2"},
        "timeout_s": 30,
        "retry_policy": {"kind": "none", "max_attempts": 1, "interval_s": 60},
        "metadata": {"new": True},
    }
    for name, value in changes.items():
        response = await wh.client.patch(path, json={name: value}, headers=wh.auth())
        assert response.status_code == 200, response.text
        assert response.json()[name] == value, name
    got = await get(wh, endpoint_id)
    for name, value in changes.items():
        assert got[name] == value, name
    assert got["description"] == "after"
    assert got["rate_limit_per_s"] == 5

    # rate_limit_per_s may be cleared with null; the other fields may not.
    response = await wh.client.patch(path, json={"rate_limit_per_s": None}, headers=wh.auth())
    assert response.status_code == 200, response.text
    assert response.json()["rate_limit_per_s"] is None

    before = await get(wh, endpoint_id)
    bad: list[tuple[dict[str, Any], str]] = [
        ({"url": None}, "url"),
        ({"event_types": None}, "event_types"),
        ({"url": "http://10.0.0.1/"}, "url"),
        ({"url": "http://169.254.169.254/"}, "url"),
        ({"url": "ftp://x"}, "url"),
        ({"event_types": ["ok.type", "Not OK"]}, "event_types.1"),
        ({"headers": {"webhook-signature": "v1,forged"}}, "headers.webhook-signature"),
        ({"timeout_s": 61}, "timeout_s"),
        ({"retry_policy": {"kind": "none", "max_attempts": 0}}, "retry_policy.max_attempts"),
        ({"secret": make_secret(32)}, "secret"),
        ({"unknown": 1}, "unknown"),
    ]
    for patch, field in bad:
        response = await wh.client.patch(path, json=patch, headers=wh.auth())
        assert bad_fields(response) == [field], patch
    # A refused change in a body with valid ones changes nothing at all.
    response = await wh.client.patch(
        path, json={"description": "half", "url": "http://10.0.0.1/"}, headers=wh.auth()
    )
    assert bad_fields(response) == ["url"]
    assert await get(wh, endpoint_id) == before

    response = await wh.client.patch(
        f"{WEBHOOKS}/ep_doesnotexist", json={"description": "x"}, headers=wh.auth()
    )
    assert_problem(response, 404)


async def test_enable_and_disable(wh: Harness, port: int) -> None:
    created = await create(wh, port)
    path = f"{WEBHOOKS}/{created['id']}"

    response = await wh.client.post(f"{path}/disable", headers=wh.auth())
    assert response.status_code == 200, response.text
    disabled = response.json()
    assert disabled["enabled"] is False
    assert near(disabled["disabled_at"], datetime.now(UTC))
    assert disabled["disabled_reason"]
    assert (await get(wh, created["id"]))["enabled"] is False
    # Disabling twice is no change.
    again = await wh.client.post(f"{path}/disable", headers=wh.auth())
    assert again.status_code == 200
    assert again.json()["disabled_at"] == disabled["disabled_at"]

    response = await wh.client.post(f"{path}/enable", headers=wh.auth())
    assert response.status_code == 200, response.text
    enabled = response.json()
    assert enabled["enabled"] is True
    assert enabled["disabled_at"] is None
    assert enabled["disabled_reason"] is None
    assert (await get(wh, created["id"]))["enabled"] is True

    # PATCH can do the same.
    response = await wh.client.patch(path, json={"enabled": False}, headers=wh.auth())
    assert response.json()["enabled"] is False
    response = await wh.client.patch(path, json={"enabled": True}, headers=wh.auth())
    assert response.json()["enabled"] is True

    actions = [e["action"] for e in await audit_entries(wh, target_id=created["id"])]
    assert actions.count("endpoint.disabled") == 1
    assert actions.count("endpoint.enabled") == 1

    for action in ("enable", "disable"):
        response = await wh.client.post(f"{WEBHOOKS}/ep_nope/{action}", headers=wh.auth())
        assert_problem(response, 404)


async def test_delete_removes_the_endpoint_its_deliveries_and_attempts(
    wh: Harness, port: int
) -> None:
    doomed = await create(wh, port)
    kept = await create(wh, port)
    [delivery] = await add_deliveries(wh, doomed["id"], [Row("dashboard.created", FAILED)])
    await add_attempts(wh, delivery, [Try(1, datetime.now(UTC), 12, 500)])
    [kept_delivery] = await add_deliveries(wh, kept["id"], [Row("dashboard.created", FAILED)])

    response = await wh.client.delete(f"{WEBHOOKS}/{doomed['id']}", headers=wh.auth())
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert_problem(await wh.client.get(f"{WEBHOOKS}/{doomed['id']}", headers=wh.auth()), 404)
    assert_problem(await wh.client.delete(f"{WEBHOOKS}/{doomed['id']}", headers=wh.auth()), 404)
    assert_problem(await wh.client.get(f"{DELIVERIES}/{delivery}", headers=wh.auth()), 404)
    assert [e["id"] for e in await all_endpoints(wh)] == [kept["id"]]
    async with wh.fc.sessionmaker() as session:
        assert (await session.scalars(select(Delivery.id))).all() == [kept_delivery]
        assert (await session.scalars(select(Attempt.id))).all() == []


# -- secrets -------------------------------------------------------------------------------


async def test_reveal_needs_admin_and_returns_the_current_secret(wh: Harness, port: int) -> None:
    created = await create(wh, port)
    path = f"{WEBHOOKS}/{created['id']}/secret"

    writer = await wh.create_key(["webhooks:write", "deliveries:write"])
    body = assert_problem(await wh.client.get(path, headers=wh.auth(writer["key"])), 403)
    assert "webhooks:secrets" in body["detail"]

    admin = await wh.create_key(["admin"])
    for key in (None, admin["key"]):
        response = await wh.client.get(path, headers=wh.auth(key))
        assert response.status_code == 200, response.text
        assert response.json() == {
            "secret": created["secret"],
            "previous_secret_expires_at": None,
        }
    assert_problem(await wh.client.get(f"{WEBHOOKS}/ep_nope/secret", headers=wh.auth()), 404)
    revealed = [
        e
        for e in await audit_entries(wh, target_id=created["id"])
        if e["action"] == "endpoint.secret_revealed"
    ]
    assert len(revealed) == 2


async def test_rotation_keeps_the_old_secret_signing_for_the_overlap(
    wh: Harness, port: int
) -> None:
    created = await create(wh, port)
    endpoint_id, first = created["id"], created["secret"]
    path = f"{WEBHOOKS}/{endpoint_id}/secret/rotate"

    # Rotation needs webhooks:secrets, not admin.
    writer = await wh.create_key(["webhooks:secrets"])
    rotated_at = datetime.now(UTC)
    response = await wh.client.post(path, headers=wh.auth(writer["key"]))
    assert response.status_code == 200, response.text
    rotated = response.json()
    second = rotated["secret"]
    assert second != first
    assert len(secret_key_bytes(second)) == 32
    assert near(rotated["previous_secret_expires_at"], rotated_at + DAY)

    got = await get(wh, endpoint_id)
    assert got["previous_secret_expires_at"] == rotated["previous_secret_expires_at"]
    assert "whsec_" not in str(got)
    revealed = await wh.client.get(f"{WEBHOOKS}/{endpoint_id}/secret", headers=wh.auth())
    assert revealed.json()["secret"] == second

    async with wh.fc.sessionmaker() as session:
        service = wh.fc.webhooks(session)
        endpoint = await session.get(Endpoint, endpoint_id)
        assert endpoint is not None
        assert service.secrets(endpoint) == [second, first]
        # After the overlap only the current secret signs.
        later = rotated_at + DAY + timedelta(minutes=5)
        assert service.secrets(endpoint, now=later) == [second]
        # The secrets are stored encrypted.
        assert first not in endpoint.secret_encrypted + (endpoint.previous_secret_encrypted or "")
        assert second not in endpoint.secret_encrypted

    # A chosen overlap, a supplied secret.
    supplied = make_secret(32, fill=5)
    response = await wh.client.post(
        path, json={"secret": supplied, "overlap_s": 600}, headers=wh.auth()
    )
    assert response.status_code == 200, response.text
    assert response.json()["secret"] is None  # a secret the caller gave is never echoed
    assert near(
        response.json()["previous_secret_expires_at"], datetime.now(UTC) + timedelta(seconds=600)
    )
    async with wh.fc.sessionmaker() as session:
        endpoint = await session.get(Endpoint, endpoint_id)
        assert endpoint is not None
        assert wh.fc.webhooks(session).secrets(endpoint) == [supplied, second]

    # No overlap: the old secret stops at once.
    response = await wh.client.post(path, json={"overlap_s": 0}, headers=wh.auth())
    assert response.status_code == 200, response.text
    third = response.json()["secret"]
    assert response.json()["previous_secret_expires_at"] is None
    assert (await get(wh, endpoint_id))["previous_secret_expires_at"] is None
    async with wh.fc.sessionmaker() as session:
        endpoint = await session.get(Endpoint, endpoint_id)
        assert endpoint is not None
        assert wh.fc.webhooks(session).secrets(endpoint) == [third]

    for body, field in (
        ({"secret": "whsec_short"}, "secret"),
        ({"secret": "nope"}, "secret"),
        ({"overlap_s": -1}, "overlap_s"),
        ({"overlap_s": 8 * 86_400}, "overlap_s"),
        ({"overlap": 5}, "overlap"),
    ):
        response = await wh.client.post(path, json=body, headers=wh.auth())
        assert bad_fields(response) == [field], body
    revealed = await wh.client.get(f"{WEBHOOKS}/{endpoint_id}/secret", headers=wh.auth())
    assert revealed.json()["secret"] == third
    assert_problem(
        await wh.client.post(f"{WEBHOOKS}/ep_nope/secret/rotate", headers=wh.auth()), 404
    )


# -- the attempts log ------------------------------------------------------------------------


async def test_deliveries_listing_filters_and_pages(wh: Harness, port: int) -> None:
    endpoint = (await create(wh, port))["id"]
    other = (await create(wh, port))["id"]
    m = timedelta(minutes=1)
    d = await add_deliveries(
        wh,
        endpoint,
        [
            Row("dashboard.created", SUCCEEDED, 180 * m),  # 0
            Row("dashboard.updated", FAILED, 120 * m),  # 1
            Row("alert.triggered", FAILED, 90 * m),  # 2
            Row("dashboards.created", PENDING, 60 * m),  # 3
            Row("data_source.created", RETRYING, 30 * m),  # 4
            Row("dataxsource.created", PENDING, 20 * m),  # 5
            Row("dashboard.created", PENDING, 10 * m),  # 6
        ],
    )
    await add_deliveries(wh, other, [Row("dashboard.created", FAILED, 5 * m)])
    now = datetime.now(UTC)

    def pick(*indexes: int) -> set[str]:
        return {d[i] for i in indexes}

    assert await delivery_ids(wh, endpoint) == set(d)
    assert await delivery_ids(wh, endpoint, status="failed") == pick(1, 2)
    assert await delivery_ids(wh, endpoint, status="pending") == pick(3, 5, 6)
    assert await delivery_ids(wh, endpoint, status="succeeded") == pick(0)
    assert await delivery_ids(wh, endpoint, status="delivering") == set()
    assert await delivery_ids(wh, endpoint, event_type="dashboard.created") == pick(0, 6)
    assert await delivery_ids(wh, endpoint, event_type="dashboard.*") == pick(0, 1, 6)
    assert await delivery_ids(wh, endpoint, event_type="data_source.*") == pick(4)
    assert await delivery_ids(wh, endpoint, event_type="%.*") == set()
    assert await delivery_ids(wh, endpoint, event_type="dashboard") == set()
    assert await delivery_ids(wh, endpoint, since=iso(now - 100 * m)) == pick(2, 3, 4, 5, 6)
    assert await delivery_ids(wh, endpoint, until=iso(now - 100 * m)) == pick(0, 1)
    assert await delivery_ids(
        wh, endpoint, since=iso(now - 100 * m), until=iso(now - 25 * m)
    ) == pick(2, 3, 4)
    assert await delivery_ids(
        wh, endpoint, status="pending", event_type="dashboard.*", since=iso(now - 100 * m)
    ) == pick(6)
    # An offset other than UTC means the same instant.
    plus_two = (now - 100 * m).astimezone(timezone(timedelta(hours=2))).isoformat()
    assert await delivery_ids(wh, endpoint, since=plus_two) == pick(2, 3, 4, 5, 6)

    # Pages of three, newest id first, every delivery once.
    seen: list[str] = []
    sizes: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        response = await wh.client.get(
            f"{WEBHOOKS}/{endpoint}/deliveries", params=params, headers=wh.auth()
        )
        assert response.status_code == 200, response.text
        page = response.json()
        sizes.append(len(page["items"]))
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sizes == [3, 3, 1]
    assert sorted(seen) == sorted(d)
    assert seen == sorted(seen, reverse=True)

    listing = await wh.client.get(f"{WEBHOOKS}/{endpoint}/deliveries", headers=wh.auth())
    item = {i["id"]: i for i in listing.json()["items"]}[d[1]]
    assert item["event_type"] == "dashboard.updated"
    assert item["status"] == "failed"
    assert item["endpoint_id"] == endpoint
    assert item["last_status_code"] == 500
    assert near(item["created_at"], now - 120 * m)

    for params, field in (
        ({"status": "lost"}, "status"),
        ({"since": "2026-01-01T00:00:00"}, "since"),
        ({"until": "2026-01-01T00:00:00"}, "until"),
        ({"since": "yesterday"}, "since"),
        ({"limit": 500}, "limit"),
    ):
        response = await wh.client.get(
            f"{WEBHOOKS}/{endpoint}/deliveries", params=params, headers=wh.auth()
        )
        assert bad_fields(response) == [field], params
    response = await wh.client.get(f"{WEBHOOKS}/ep_nope/deliveries", headers=wh.auth())
    assert_problem(response, 404)


async def test_a_delivery_shows_its_attempts_in_order(wh: Harness, port: int) -> None:
    endpoint = (await create(wh, port))["id"]
    [delivery] = await add_deliveries(wh, endpoint, [Row("alert.triggered", RETRYING)])
    start = datetime.now(UTC) - timedelta(minutes=10)
    # Written out of order: the log is ordered by attempt number.
    await add_attempts(
        wh,
        delivery,
        [
            Try(3, start + timedelta(minutes=6), 40, 503),
            Try(1, start, 1500, None, "ConnectTimeout"),
            Try(2, start + timedelta(minutes=1), 25, 500),
        ],
    )
    response = await wh.client.get(f"{DELIVERIES}/{delivery}", headers=wh.auth())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == delivery
    assert body["endpoint_id"] == endpoint
    assert body["event_type"] == "alert.triggered"
    assert body["status"] == "retrying"
    log = body["attempt_log"]
    assert [a["attempt_no"] for a in log] == [1, 2, 3]
    assert [a["status_code"] for a in log] == [None, 500, 503]
    assert [a["duration_ms"] for a in log] == [1500, 25, 40]
    assert log[0]["error_class"] == "ConnectTimeout"
    assert log[0]["error_message"] == "ConnectTimeout happened"
    assert log[0]["response_excerpt"] is None
    assert log[1]["response_excerpt"] == "answer 2"
    assert log[1]["error_class"] is None
    assert when(log[0]["started_at"]) == start
    assert when(log[2]["started_at"]) == start + timedelta(minutes=6)

    [quiet] = await add_deliveries(wh, endpoint, [Row("alert.triggered")])
    response = await wh.client.get(f"{DELIVERIES}/{quiet}", headers=wh.auth())
    assert response.json()["attempt_log"] == []
    assert_problem(await wh.client.get(f"{DELIVERIES}/dlv_nope", headers=wh.auth()), 404)


async def test_retry_queues_the_delivery_again_now(wh: Harness, port: int) -> None:
    endpoint = (await create(wh, port))["id"]
    failed, succeeded, busy = await add_deliveries(
        wh,
        endpoint,
        [
            Row("dashboard.created", FAILED, timedelta(hours=2)),
            Row("dashboard.created", SUCCEEDED, timedelta(hours=1)),
            Row("dashboard.created", DELIVERING),
        ],
    )
    for delivery in (failed, succeeded):
        response = await wh.client.post(f"{DELIVERIES}/{delivery}/retry", headers=wh.auth())
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["id"] == delivery  # the same delivery: the same webhook-id
        assert body["status"] == "pending"
        assert near(body["next_attempt_at"], datetime.now(UTC), timedelta(seconds=10))
        assert body["finished_at"] is None
        got = (await wh.client.get(f"{DELIVERIES}/{delivery}", headers=wh.auth())).json()
        assert got["status"] == "pending"
        assert got["next_attempt_at"] == body["next_attempt_at"]

    before = (await wh.client.get(f"{DELIVERIES}/{busy}", headers=wh.auth())).json()
    body = assert_problem(
        await wh.client.post(f"{DELIVERIES}/{busy}/retry", headers=wh.auth()), 409
    )
    assert body["type"] == "urn:forecourt:problem:conflict"
    assert (await wh.client.get(f"{DELIVERIES}/{busy}", headers=wh.auth())).json() == before
    assert_problem(await wh.client.post(f"{DELIVERIES}/dlv_nope/retry", headers=wh.auth()), 404)


async def test_recover_requeues_failed_deliveries_since_a_time(wh: Harness, port: int) -> None:
    endpoint = (await create(wh, port))["id"]
    other = (await create(wh, port))["id"]
    m = timedelta(minutes=1)
    old, recent, newest, done, waiting = await add_deliveries(
        wh,
        endpoint,
        [
            Row("dashboard.created", FAILED, 180 * m),
            Row("dashboard.created", FAILED, 30 * m),
            Row("alert.triggered", FAILED, 5 * m),
            Row("dashboard.created", SUCCEEDED, 10 * m),
            Row("dashboard.created", RETRYING, 10 * m),
        ],
    )
    [elsewhere] = await add_deliveries(wh, other, [Row("dashboard.created", FAILED, 5 * m)])
    path = f"{WEBHOOKS}/{endpoint}/recover"

    for params, field in (
        ({}, "since"),
        ({"since": "2026-01-01T00:00:00"}, "since"),
        ({"since": "not a time"}, "since"),
    ):
        response = await wh.client.post(path, params=params, headers=wh.auth())
        assert bad_fields(response) == [field], params

    before = {
        i: (await wh.client.get(f"{DELIVERIES}/{i}", headers=wh.auth())).json()
        for i in (old, done, waiting, elsewhere)
    }
    since = datetime.now(UTC) - 60 * m
    response = await wh.client.post(path, params={"since": iso(since)}, headers=wh.auth())
    assert response.status_code == 200, response.text
    assert response.json() == {"requeued": 2}
    for delivery in (recent, newest):
        got = (await wh.client.get(f"{DELIVERIES}/{delivery}", headers=wh.auth())).json()
        assert got["status"] == "pending"
        assert got["finished_at"] is None
        assert near(got["next_attempt_at"], datetime.now(UTC), timedelta(seconds=10))
    for delivery, was in before.items():
        now_ = (await wh.client.get(f"{DELIVERIES}/{delivery}", headers=wh.auth())).json()
        assert now_ == was, delivery

    # Nothing failed is left since then.
    response = await wh.client.post(path, params={"since": iso(since)}, headers=wh.auth())
    assert response.json() == {"requeued": 0}
    recovered = [
        e
        for e in await audit_entries(wh, target_id=endpoint)
        if e["action"] == "endpoint.recovered"
    ]
    assert [e["after"]["requeued"] for e in recovered] == [0, 2]
    response = await wh.client.post(
        f"{WEBHOOKS}/ep_nope/recover", params={"since": iso(since)}, headers=wh.auth()
    )
    assert_problem(response, 404)


async def test_stats_per_window(wh: Harness, port: int) -> None:
    endpoint = (await create(wh, port))["id"]
    empty = await wh.client.get(f"{WEBHOOKS}/{endpoint}/stats", headers=wh.auth())
    assert empty.status_code == 200, empty.text
    assert empty.json()["pending"] == 0
    for window in empty.json()["windows"].values():
        assert window == {
            "attempts": 0,
            "succeeded": 0,
            "failed": 0,
            "success_rate": None,
            "p50_ms": None,
            "p95_ms": None,
            "last_success_at": None,
            "last_failure_at": None,
        }

    other = (await create(wh, port))["id"]
    a, b, c = await add_deliveries(
        wh,
        endpoint,
        [Row("x.a", SUCCEEDED), Row("x.b", FAILED), Row("x.c", RETRYING)],
    )
    await add_deliveries(wh, endpoint, [Row("x.d", PENDING)])
    [foreign] = await add_deliveries(wh, other, [Row("x.a", FAILED)])
    now = datetime.now(UTC)
    minute, hour = timedelta(minutes=1), timedelta(hours=1)
    # Last hour: ten successes of 10..100 ms, one a minute.
    last_hour = [Try(i + 1, now - (i + 1) * minute, 10 * (i + 1), 200 + i % 3) for i in range(10)]
    # 2 h ago and before: nine failures and one success, 110..200 ms.
    codes: list[int | None] = [500, 500, 503, 500, 502, None, None, None, 404, 204]
    last_day = [
        Try(i + 1, now - 2 * hour - i * minute, 110 + 10 * i, code, None if code else "Timeout")
        for i, code in enumerate(codes)
    ]
    # 2 days ago and before: two successes, three failures, 1000..5000 ms.
    last_week = [
        Try(i + 1, now - 2 * DAY - i * hour, 1000 * (i + 1), code)
        for i, code in enumerate([200, 500, 200, 500, 301])
    ]
    # Outside every window.
    ancient = [Try(1, now - 8 * DAY, 99_999, 500)]
    await add_attempts(wh, a, last_hour)
    await add_attempts(wh, b, last_day + ancient)
    await add_attempts(wh, c, last_week)
    await add_attempts(wh, foreign, [Try(1, now - minute, 7, 500)])

    response = await wh.client.get(f"{WEBHOOKS}/{endpoint}/stats", headers=wh.auth())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["endpoint_id"] == endpoint
    assert body["pending"] == 2  # retrying and pending
    windows = body["windows"]
    assert set(windows) == {"1h", "24h", "7d"}

    newest_success = now - minute
    newest_day_failure = now - 2 * hour
    newest_week_failure = now - 2 * DAY - hour

    one = windows["1h"]
    assert (one["attempts"], one["succeeded"], one["failed"]) == (10, 10, 0)
    assert one["success_rate"] == pytest.approx(1.0)
    assert (one["p50_ms"], one["p95_ms"]) == (50, 100)
    assert when(one["last_success_at"]) == newest_success
    assert one["last_failure_at"] is None

    day = windows["24h"]
    assert (day["attempts"], day["succeeded"], day["failed"]) == (20, 11, 9)
    assert day["success_rate"] == pytest.approx(11 / 20)
    assert (day["p50_ms"], day["p95_ms"]) == (100, 190)
    assert when(day["last_success_at"]) == newest_success
    assert when(day["last_failure_at"]) == newest_day_failure

    week = windows["7d"]
    assert (week["attempts"], week["succeeded"], week["failed"]) == (25, 13, 12)
    assert week["success_rate"] == pytest.approx(13 / 25)
    assert (week["p50_ms"], week["p95_ms"]) == (130, 4000)
    assert when(week["last_success_at"]) == newest_success
    assert when(week["last_failure_at"]) == newest_day_failure
    assert newest_week_failure < newest_day_failure

    # Attempts by clock hour over the last 24 hours: every hour listed, oldest first.
    hourly = body["hourly"]
    starts = [when(h["start"]) for h in hourly]
    assert len(starts) == 24
    assert all(later - earlier == hour for earlier, later in itertools.pairwise(starts))
    assert all((s.minute, s.second, s.microsecond) == (0, 0, 0) for s in starts)
    assert starts[-1] - hour <= now < starts[-1] + hour
    expected: dict[datetime, list[int]] = {s: [0, 0] for s in starts}
    for attempt in last_hour + last_day:
        ok = attempt.status_code is not None and 200 <= attempt.status_code < 300
        expected[attempt.started_at.replace(minute=0, second=0, microsecond=0)][0 if ok else 1] += 1
    assert {
        s: [h["succeeded"], h["failed"]] for s, h in zip(starts, hourly, strict=True)
    } == expected
    assert sum(h["succeeded"] for h in hourly) == 11
    assert sum(h["failed"] for h in hourly) == 9
    assert all(h["succeeded"] == h["failed"] == 0 for h in empty.json()["hourly"])
    assert len(empty.json()["hourly"]) == 24

    assert_problem(await wh.client.get(f"{WEBHOOKS}/ep_nope/stats", headers=wh.auth()), 404)


# -- tenancy, scopes, audit, OpenAPI ---------------------------------------------------------


async def test_another_tenants_ids_are_404_everywhere(wh: Harness, port: int) -> None:
    mine = await create(wh, port, description="mine")
    [delivery] = await add_deliveries(wh, mine["id"], [Row("dashboard.created", FAILED)])
    other = await make_other_tenant(wh)
    theirs = await create(wh, port, key=other, description="theirs")

    ep, dl = f"{WEBHOOKS}/{mine['id']}", f"{DELIVERIES}/{delivery}"
    since = {"since": iso(datetime.now(UTC) - DAY)}
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", ep, {}),
        ("PATCH", ep, {"json": {"description": "taken"}}),
        ("POST", f"{ep}/enable", {}),
        ("POST", f"{ep}/disable", {}),
        ("GET", f"{ep}/secret", {}),
        ("POST", f"{ep}/secret/rotate", {}),
        ("GET", f"{ep}/deliveries", {}),
        ("POST", f"{ep}/recover", {"params": since}),
        ("GET", f"{ep}/stats", {}),
        ("GET", dl, {}),
        ("POST", f"{dl}/retry", {}),
        ("DELETE", ep, {}),
    ]
    before_endpoint = await get(wh, mine["id"])
    before_delivery = (await wh.client.get(dl, headers=wh.auth())).json()
    for method, path, extra in calls:
        response = await wh.client.request(method, path, headers=wh.auth(other), **extra)
        assert_problem(response, 404)
        assert "whsec_" not in response.text
    assert await get(wh, mine["id"]) == before_endpoint
    assert (await wh.client.get(dl, headers=wh.auth())).json() == before_delivery

    assert [e["id"] for e in await all_endpoints(wh, other)] == [theirs["id"]]
    assert [e["id"] for e in await all_endpoints(wh)] == [mine["id"]]
    response = await wh.client.get(f"{WEBHOOKS}/{theirs['id']}", headers=wh.auth())
    assert_problem(response, 404)


async def test_scopes(wh: Harness, port: int) -> None:
    endpoint = (await create(wh, port))["id"]
    [delivery] = await add_deliveries(wh, endpoint, [Row("dashboard.created", FAILED)])
    ep, dl = f"{WEBHOOKS}/{endpoint}", f"{DELIVERIES}/{delivery}"
    since = {"since": iso(datetime.now(UTC) - DAY)}

    async def status(key: str, method: str, path: str, **extra: Any) -> int:
        response = await wh.client.request(method, path, headers=wh.auth(key), **extra)
        if response.status_code == 403:
            assert_problem(response, 403)
        return response.status_code

    reader = (await wh.create_key(["webhooks:read"]))["key"]
    assert await status(reader, "GET", WEBHOOKS) == 200
    assert await status(reader, "GET", ep) == 200
    assert await status(reader, "GET", f"{ep}/stats") == 200
    assert await status(reader, "POST", WEBHOOKS, json={"url": url(port)}) == 403
    assert await status(reader, "PATCH", ep, json={"description": "x"}) == 403
    assert await status(reader, "POST", f"{ep}/disable") == 403
    assert await status(reader, "POST", f"{ep}/secret/rotate") == 403
    assert await status(reader, "GET", f"{ep}/secret") == 403
    assert await status(reader, "GET", f"{ep}/deliveries") == 403
    assert await status(reader, "GET", dl) == 403
    assert await status(reader, "DELETE", ep) == 403

    writer = (await wh.create_key(["webhooks:write"]))["key"]
    assert await status(writer, "GET", ep) == 200  # write implies read
    assert await status(writer, "POST", WEBHOOKS, json={"url": url(port)}) == 201
    assert await status(writer, "POST", f"{dl}/retry") == 403
    assert await status(writer, "POST", f"{ep}/recover", params=since) == 403
    assert await status(writer, "GET", f"{ep}/secret") == 403

    watcher = (await wh.create_key(["deliveries:read"]))["key"]
    assert await status(watcher, "GET", f"{ep}/deliveries") == 200
    assert await status(watcher, "GET", dl) == 200
    assert await status(watcher, "POST", f"{dl}/retry") == 403
    assert await status(watcher, "POST", f"{ep}/recover", params=since) == 403

    # Nothing the refused calls asked for happened.
    got = (await wh.client.get(dl, headers=wh.auth())).json()
    assert got["status"] == "failed"
    assert (await get(wh, endpoint))["enabled"] is True

    operator = (await wh.create_key(["deliveries:write"]))["key"]
    assert await status(operator, "POST", f"{dl}/retry") == 200
    assert await status(operator, "POST", f"{ep}/recover", params=since) == 200
    assert await status(operator, "GET", f"{ep}/deliveries") == 200
    assert await status(operator, "POST", WEBHOOKS, json={"url": url(port)}) == 403

    # Without a key: 401.
    response = await wh.client.get(WEBHOOKS)
    assert_problem(response, 401)


async def test_every_change_is_audited_and_no_secret_is_in_the_log(wh: Harness, port: int) -> None:
    created = await create(
        wh, port, headers={"Authorization": "Bearer receiver-token-123"}, secret=make_secret(32, 1)
    )
    endpoint_id = created["id"]
    ep = f"{WEBHOOKS}/{endpoint_id}"
    secrets_seen = [make_secret(32, 1)]
    assert (await wh.client.patch(ep, json={"description": "d"}, headers=wh.auth())).is_success
    assert (await wh.client.post(f"{ep}/disable", headers=wh.auth())).is_success
    assert (await wh.client.post(f"{ep}/enable", headers=wh.auth())).is_success
    rotated = await wh.client.post(f"{ep}/secret/rotate", headers=wh.auth())
    secrets_seen.append(rotated.json()["secret"])
    supplied = make_secret(40, 2)
    rotated = await wh.client.post(
        f"{ep}/secret/rotate", json={"secret": supplied}, headers=wh.auth()
    )
    assert rotated.is_success
    secrets_seen.append(supplied)
    assert (await wh.client.get(f"{ep}/secret", headers=wh.auth())).is_success
    [delivery] = await add_deliveries(wh, endpoint_id, [Row("dashboard.created", FAILED)])
    assert (await wh.client.post(f"{DELIVERIES}/{delivery}/retry", headers=wh.auth())).is_success
    response = await wh.client.post(
        f"{ep}/recover", params={"since": iso(datetime.now(UTC) - DAY)}, headers=wh.auth()
    )
    assert response.is_success
    assert (await wh.client.delete(ep, headers=wh.auth())).status_code == 204

    entries = await audit_entries(wh, target_id=endpoint_id)
    actions = sorted(e["action"] for e in entries)
    assert actions == sorted(
        [
            "endpoint.created",
            "endpoint.updated",
            "endpoint.disabled",
            "endpoint.enabled",
            "endpoint.secret_rotated",
            "endpoint.secret_rotated",
            "endpoint.secret_revealed",
            "endpoint.recovered",
            "endpoint.deleted",
        ]
    )
    by_action = {e["action"]: e for e in entries}
    assert by_action["endpoint.created"]["after"]["url"] == created["url"]
    assert by_action["endpoint.updated"]["target_type"] == "endpoint"
    assert by_action["endpoint.deleted"]["before"]["url"] == created["url"]
    owner_id = by_action["endpoint.created"]["actor_id"]
    assert owner_id and all(e["actor_id"] == owner_id for e in entries)
    retried = await audit_entries(wh, target_id=delivery)
    assert [e["action"] for e in retried] == ["delivery.retried"]

    text = (await wh.client.get(AUDIT, params={"limit": 200}, headers=wh.auth())).text
    assert "whsec_" not in text
    for secret in secrets_seen:
        assert secret[len("whsec_") :].rstrip("=") not in text
    assert "receiver-token-123" not in text


async def test_the_endpoints_are_in_the_openapi_document(harness: Harness) -> None:
    response = await harness.client.get("/openapi.json")
    assert response.status_code == 200, response.text
    paths = response.json()["paths"]
    expected = {
        "/api/v1/webhooks": {"get", "post"},
        "/api/v1/webhooks/{endpoint_id}": {"get", "patch", "delete"},
        "/api/v1/webhooks/{endpoint_id}/enable": {"post"},
        "/api/v1/webhooks/{endpoint_id}/disable": {"post"},
        "/api/v1/webhooks/{endpoint_id}/secret": {"get"},
        "/api/v1/webhooks/{endpoint_id}/secret/rotate": {"post"},
        "/api/v1/webhooks/{endpoint_id}/deliveries": {"get"},
        "/api/v1/webhooks/{endpoint_id}/recover": {"post"},
        "/api/v1/webhooks/{endpoint_id}/stats": {"get"},
        "/api/v1/deliveries/{delivery_id}": {"get"},
        "/api/v1/deliveries/{delivery_id}/retry": {"post"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))
    create_op = paths["/api/v1/webhooks"]["post"]
    assert "201" in create_op["responses"]
