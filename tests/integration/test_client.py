"""The Python SDK against the real app, on SQLite and on PostgreSQL + Redis.

``AsyncClient`` talks to the ASGI app through ``httpx.ASGITransport``; ``Client`` (sync) talks
to the same app served by uvicorn on loopback from a thread of its own. Both cover keys,
webhook endpoints and deliveries, and how every problem the server answers becomes one
exception of the client's tree. ``verify_webhook`` is checked against signed requests.

Nothing here delivers: queue rows are written directly, the delivery worker (when the node
runs one) is stopped first, and endpoint URLs point at a loopback port nobody listens on.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

import forecourt.client
from conftest import Harness, free_port
from forecourt.app import create_app
from forecourt.client import (
    APIError,
    AsyncClient,
    AuthenticationError,
    Client,
    ConflictError,
    ForecourtClientError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDenied,
    RateLimitError,
    TransportError,
    ValidationError,
    WebhookVerificationError,
    verify_webhook,
)
from forecourt.core import Forecourt
from forecourt.events.models import Event
from forecourt.ids import new_id
from forecourt.settings import Settings
from forecourt.webhooks import fanout, signing
from forecourt.webhooks.models import (
    DELIVERING,
    FAILED,
    SUCCEEDED,
    Attempt,
    Delivery,
    Endpoint,
)
from served import serve

LOOPBACK_CIDR = "127.0.0.0/8"
CLOSE = timedelta(seconds=30)


# -- helpers -------------------------------------------------------------------------------


async def quiesce(fc: Forecourt) -> None:
    """Stop the node's delivery worker, if it runs one, so queue rows stay as written."""
    worker = getattr(fc, "worker", None)
    if worker is not None:
        await worker.stop(0)
        fc.worker = None


@pytest.fixture
async def wh(harness_factory: Any) -> Harness:
    """A node whose SSRF guard lets 127.0.0.0/8 through."""
    h: Harness = await harness_factory(webhook_allow_private=LOOPBACK_CIDR)
    await quiesce(h.fc)
    return h


def sdk(h: Harness, key: str | None = None) -> AsyncClient:
    """An AsyncClient on an ASGI app over the harness's (started) Forecourt."""
    app = create_app(h.fc.settings, forecourt=h.fc)
    transport = httpx.ASGITransport(
        app=app, raise_app_exceptions=False, client=("127.0.0.1", 50000)
    )
    return AsyncClient("http://testserver", key or h.owner_key, transport=transport)


def receiver(path: str = "hook") -> str:
    return f"http://127.0.0.1:{free_port()}/{path}"


def when(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


def near(value: str | None, expected: datetime, slack: timedelta = CLOSE) -> bool:
    parsed = when(value)
    return parsed is not None and abs(parsed - expected) <= slack


def make_secret(fill: int, n: int = 32) -> str:
    return "whsec_" + base64.b64encode(bytes([fill]) * n).decode()


async def add_deliveries(
    fc: Forecourt, endpoint_id: str, rows: Sequence[tuple[str, str, timedelta]]
) -> list[str]:
    """One stored event and one delivery per ``(event type, status, age)``; their ids."""
    now = datetime.now(UTC)
    ids: list[str] = []
    async with fc.sessionmaker() as session:
        endpoint = await session.get(Endpoint, endpoint_id)
        assert endpoint is not None
        for event_type, status, age in rows:
            created = now - age
            event_id = new_id("evt")
            session.add(
                Event(
                    id=event_id,
                    tenant_id=endpoint.tenant_id,
                    ce_id=event_id,
                    source="/tests",
                    type=event_type,
                    time=created,
                    data={},
                    severity="info",
                    size_bytes=2,
                    created_at=created,
                )
            )
            [delivery] = fanout.enqueue(
                session, endpoint.tenant_id, event_id, event_type, [endpoint], now=created
            )
            delivery.status = status
            if status in (SUCCEEDED, FAILED):
                delivery.next_attempt_at = None
                delivery.finished_at = created
                delivery.attempts = 1
                delivery.last_status_code = 200 if status == SUCCEEDED else 500
            elif status == DELIVERING:
                delivery.lease_owner = "another-worker"
                delivery.lease_expires_at = now + timedelta(minutes=5)
            ids.append(delivery.id)
        await session.commit()
    return ids


async def add_attempts(
    fc: Forecourt, delivery_id: str, attempts: Sequence[tuple[int, int, int | None]]
) -> None:
    """Attempts ``(attempt_no, duration_ms, status_code)``, a minute apart, ending now."""
    now = datetime.now(UTC)
    async with fc.sessionmaker() as session:
        delivery = await session.get(Delivery, delivery_id)
        assert delivery is not None
        for no, duration, code in attempts:
            session.add(
                Attempt(
                    id=new_id("att"),
                    tenant_id=delivery.tenant_id,
                    delivery_id=delivery.id,
                    endpoint_id=delivery.endpoint_id,
                    attempt_no=no,
                    started_at=now - timedelta(minutes=10 - no),
                    duration_ms=duration,
                    status_code=code,
                    response_excerpt="ok" if code == 200 else None,
                    error_class=None if code else "ConnectError",
                    error_message=None,
                    worker_id="test",
                )
            )
        await session.commit()


def assert_api_error(exc: APIError, status: int, slug: str) -> None:
    assert isinstance(exc, ForecourtClientError)
    assert exc.status == status
    assert exc.problem["status"] == status
    assert exc.problem["type"] == f"urn:forecourt:problem:{slug}"
    assert exc.title
    assert exc.detail
    assert str(status) in str(exc)


# -- AsyncClient over the ASGI app ------------------------------------------------------------


async def test_keys_create_list_revoke(harness: Harness) -> None:
    async with sdk(harness) as fc:
        created = await fc.keys.create("sdk", ["webhooks:read"], description="from the SDK")
        assert created["key"].startswith("fck_")
        assert created["scopes"] == ["webhooks:read"]
        assert created["description"] == "from the SDK"
        listed = await fc.keys.list(limit=200)
        assert created["id"] in [k["id"] for k in listed["items"]]
        assert "key" not in listed["items"][0]
        page = await fc.keys.list(limit=1)
        assert len(page["items"]) == 1
        assert page["next_cursor"]
        rest = await fc.keys.list(limit=200, cursor=page["next_cursor"])
        assert [k["id"] for k in page["items"] + rest["items"]] == [
            k["id"] for k in listed["items"]
        ]

        async with sdk(harness, created["key"]) as reader:
            assert (await reader.webhooks.list())["items"] == []
            revoked = await fc.keys.revoke(created["id"])
            assert revoked["status"] == "revoked"
            with pytest.raises(AuthenticationError) as caught:
                await reader.webhooks.list()
            assert_api_error(caught.value, 401, "unauthenticated")
        with pytest.raises(NotFoundError):
            await fc.keys.revoke("key_doesnotexist")


async def test_webhooks_through_the_async_client(wh: Harness) -> None:
    target = receiver()
    async with sdk(wh) as fc:
        endpoint = await fc.webhooks.create(
            target, ["dashboard.*"], description="sdk", headers={"X-Team": "a"}
        )
        endpoint_id = endpoint["id"]
        assert endpoint["secret"].startswith("whsec_")
        assert endpoint["event_types"] == ["dashboard.*"]
        assert endpoint["headers"] == {"X-Team": "a"}
        assert endpoint["timeout_s"] == 15

        got = await fc.webhooks.get(endpoint_id)
        assert got == {k: v for k, v in endpoint.items() if k != "secret"}
        listed = await fc.webhooks.list()
        assert [e["id"] for e in listed["items"]] == [endpoint_id]
        assert listed["next_cursor"] is None

        updated = await fc.webhooks.update(endpoint_id, description="changed", timeout_s=5)
        assert (updated["description"], updated["timeout_s"]) == ("changed", 5)
        assert updated["event_types"] == ["dashboard.*"]

        disabled = await fc.webhooks.disable(endpoint_id)
        assert disabled["enabled"] is False
        assert disabled["disabled_at"] is not None
        enabled = await fc.webhooks.enable(endpoint_id)
        assert enabled["enabled"] is True
        assert enabled["disabled_at"] is None

        rotated = await fc.webhooks.rotate_secret(endpoint_id)
        assert rotated["secret"] != endpoint["secret"]
        assert near(rotated["previous_secret_expires_at"], datetime.now(UTC) + timedelta(days=1))
        again = await fc.webhooks.rotate_secret(endpoint_id, overlap_s=0)
        assert again["secret"] not in (endpoint["secret"], rotated["secret"])
        assert again["previous_secret_expires_at"] is None

        stats = await fc.webhooks.stats(endpoint_id)
        assert stats["endpoint_id"] == endpoint_id
        assert set(stats["windows"]) == {"1h", "24h", "7d"}
        assert stats["windows"]["1h"]["attempts"] == 0

        assert (await fc.webhooks.deliveries(endpoint_id))["items"] == []
        assert await fc.webhooks.delete(endpoint_id) is None
        with pytest.raises(NotFoundError) as caught:
            await fc.webhooks.get(endpoint_id)
        assert_api_error(caught.value, 404, "not-found")
        assert (await fc.webhooks.list())["items"] == []


async def test_deliveries_through_the_async_client(wh: Harness) -> None:
    async with sdk(wh) as fc:
        endpoint_id = (await fc.webhooks.create(receiver()))["id"]
        hour = timedelta(hours=1)
        old, failed, done, busy = await add_deliveries(
            wh.fc,
            endpoint_id,
            [
                ("dashboard.created", FAILED, 3 * hour),
                ("dashboard.updated", FAILED, hour / 2),
                ("alert.triggered", SUCCEEDED, hour / 3),
                ("alert.resolved", DELIVERING, hour / 4),
            ],
        )
        await add_attempts(wh.fc, failed, [(2, 30, 500), (1, 1500, None)])

        listed = await fc.webhooks.deliveries(endpoint_id)
        assert {d["id"] for d in listed["items"]} == {old, failed, done, busy}
        only_failed = await fc.webhooks.deliveries(endpoint_id, status="failed")
        assert {d["id"] for d in only_failed["items"]} == {old, failed}
        dashboards = await fc.webhooks.deliveries(endpoint_id, event_type="dashboard.*")
        assert {d["id"] for d in dashboards["items"]} == {old, failed}
        recent = await fc.webhooks.deliveries(endpoint_id, since=datetime.now(UTC) - hour)
        assert {d["id"] for d in recent["items"]} == {failed, done, busy}
        older = await fc.webhooks.deliveries(endpoint_id, until=datetime.now(UTC) - hour)
        assert {d["id"] for d in older["items"]} == {old}
        first = await fc.webhooks.deliveries(endpoint_id, limit=3)
        second = await fc.webhooks.deliveries(endpoint_id, limit=3, cursor=first["next_cursor"])
        assert len(first["items"]) == 3
        assert second["next_cursor"] is None
        assert {d["id"] for d in first["items"] + second["items"]} == {old, failed, done, busy}

        detail = await fc.deliveries.get(failed)
        assert detail["status"] == "failed"
        assert [a["attempt_no"] for a in detail["attempt_log"]] == [1, 2]
        assert [a["status_code"] for a in detail["attempt_log"]] == [None, 500]
        assert detail["attempt_log"][0]["error_class"] == "ConnectError"

        stats = await fc.webhooks.stats(endpoint_id)
        assert stats["windows"]["1h"]["attempts"] == 2
        assert stats["windows"]["1h"]["success_rate"] == 0
        assert stats["pending"] == 1  # the one being delivered

        retried = await fc.deliveries.retry(done)
        assert retried["id"] == done
        assert retried["status"] == "pending"
        assert near(retried["next_attempt_at"], datetime.now(UTC), timedelta(seconds=10))
        with pytest.raises(ConflictError) as conflict:
            await fc.deliveries.retry(busy)
        assert_api_error(conflict.value, 409, "conflict")

        recovered = await fc.webhooks.recover(endpoint_id, datetime.now(UTC) - hour)
        assert recovered == {"requeued": 1}
        assert (await fc.deliveries.get(failed))["status"] == "pending"
        assert (await fc.deliveries.get(old))["status"] == "failed"

        with pytest.raises(ValidationError) as naive:
            await fc.webhooks.recover(endpoint_id, datetime(2026, 1, 1))
        assert [e["field"] for e in naive.value.errors] == ["since"]
        with pytest.raises(NotFoundError):
            await fc.deliveries.get("dlv_doesnotexist")
        with pytest.raises(NotFoundError):
            await fc.deliveries.retry("dlv_doesnotexist")


async def test_errors_map_to_the_exception_tree(wh: Harness) -> None:
    async with sdk(wh) as fc:
        endpoint_id = (await fc.webhooks.create(receiver()))["id"]
        reader = await fc.keys.create("reader", ["webhooks:read"])
        limited = await fc.keys.create("limited", ["webhooks:read"], rate_limits={"minute": 1})

        async with sdk(wh, "fck_live_" + "x" * 36) as stranger:
            with pytest.raises(AuthenticationError) as unauthenticated:
                await stranger.webhooks.list()
        assert_api_error(unauthenticated.value, 401, "unauthenticated")

        async with sdk(wh, reader["key"]) as weak:
            assert (await weak.webhooks.get(endpoint_id))["id"] == endpoint_id
            with pytest.raises(PermissionDenied) as denied:
                await weak.webhooks.create(receiver())
            assert_api_error(denied.value, 403, "forbidden")
            assert "webhooks:write" in denied.value.detail
            with pytest.raises(PermissionDenied):
                await weak.deliveries.retry("dlv_whatever")
            with pytest.raises(PermissionDenied):
                await weak.webhooks.delete(endpoint_id)
        assert (await fc.webhooks.get(endpoint_id))["id"] == endpoint_id

        with pytest.raises(NotFoundError) as missing:
            await fc.webhooks.get("ep_doesnotexist")
        assert_api_error(missing.value, 404, "not-found")

        cases: list[tuple[dict[str, Any], str]] = [
            ({"url": "http://10.0.0.1/"}, "url"),
            ({"url": "ftp://x"}, "url"),
            ({"url": receiver(), "timeout_s": 61}, "timeout_s"),
            ({"url": receiver(), "event_types": ["Not A Type"]}, "event_types.0"),
            (
                {"url": receiver(), "headers": {"webhook-signature": "x"}},
                "headers.webhook-signature",
            ),
            ({"url": receiver(), "secret": "whsec_short"}, "secret"),
        ]
        for fields, field in cases:
            url = fields.pop("url")
            with pytest.raises(ValidationError) as invalid:
                await fc.webhooks.create(url, **fields)
            assert_api_error(invalid.value, 422, "invalid-input")
            assert [e["field"] for e in invalid.value.errors] == [field], fields
            assert all(e["message"] for e in invalid.value.errors)
        with pytest.raises(ValidationError) as invalid:
            await fc.webhooks.update(endpoint_id, url="http://169.254.169.254/")
        assert [e["field"] for e in invalid.value.errors] == ["url"]

        async with sdk(wh, limited["key"]) as slow:
            await slow.webhooks.list()
            with pytest.raises(RateLimitError) as limited_error:
                await slow.webhooks.list()
        error = limited_error.value
        assert_api_error(error, 429, "rate-limited")
        assert error.retry_after is not None
        # A sliding minute: the next request may have to wait into the next window.
        assert 1 <= error.retry_after <= 120
        assert error.problem["policy"] == "minute"

    # Nothing answers: a TransportError, not an APIError.
    async with AsyncClient(f"http://127.0.0.1:{free_port()}", wh.owner_key, timeout=5) as down:
        with pytest.raises(TransportError) as unreachable:
            await down.webhooks.list()
    assert not isinstance(unreachable.value, APIError)
    assert isinstance(unreachable.value, ForecourtClientError)


async def test_payload_too_large(harness_factory: Any) -> None:
    h: Harness = await harness_factory(webhook_allow_private=LOOPBACK_CIDR, max_body_bytes=4096)
    await quiesce(h.fc)
    async with sdk(h) as fc:
        with pytest.raises(PayloadTooLargeError) as too_large:
            await fc.webhooks.create(receiver(), description="x" * 10_000)
        assert_api_error(too_large.value, 413, "payload-too-large")
        assert (await fc.webhooks.list())["items"] == []


async def test_events_publish_reaches_the_matching_endpoints(wh: Harness) -> None:
    paths = (await wh.client.get("/openapi.json")).json()["paths"]
    assert "post" in paths.get("/api/v1/events", {}), "POST /api/v1/events is not served"
    async with sdk(wh) as fc:
        dashboards = (await fc.webhooks.create(receiver(), ["dashboard.*"]))["id"]
        alerts = (await fc.webhooks.create(receiver(), ["alert.*"]))["id"]
        published = await fc.events.publish("dashboard.created", {"id": 42}, subject="d/42")
        assert published["type"] == "dashboard.created"
        assert published["data"] == {"id": 42}
        [delivery] = (await fc.webhooks.deliveries(dashboards))["items"]
        assert delivery["event_type"] == "dashboard.created"
        assert delivery["event_id"] == published["event_id"]
        assert (await fc.webhooks.deliveries(alerts))["items"] == []


# -- Client (sync) over a uvicorn server ---------------------------------------------------------


def test_sync_client_against_a_served_app(settings_factory: Any) -> None:
    settings: Settings = settings_factory(webhook_allow_private=LOOPBACK_CIDR)
    with serve(settings) as served, Client(served.url, served.owner_key) as fc:
        served.run(quiesce(served.fc))

        # Keys.
        reader = fc.keys.create("sync-reader", ["webhooks:read"])
        assert reader["key"].startswith("fck_")
        assert reader["id"] in [k["id"] for k in fc.keys.list(limit=200)["items"]]
        with Client(served.url, reader["key"]) as weak:
            assert weak.webhooks.list()["items"] == []
            with pytest.raises(PermissionDenied):
                weak.webhooks.create(receiver())
            assert fc.keys.revoke(reader["id"])["status"] == "revoked"
            with pytest.raises(AuthenticationError):
                weak.webhooks.list()

        # Endpoints.
        endpoint = fc.webhooks.create(receiver(), ["dashboard.*"], description="sync")
        endpoint_id = endpoint["id"]
        assert endpoint["secret"].startswith("whsec_")
        assert fc.webhooks.get(endpoint_id)["description"] == "sync"
        assert [e["id"] for e in fc.webhooks.list()["items"]] == [endpoint_id]
        assert fc.webhooks.update(endpoint_id, event_types=["alert.*"])["event_types"] == [
            "alert.*"
        ]
        assert fc.webhooks.disable(endpoint_id)["enabled"] is False
        assert fc.webhooks.enable(endpoint_id)["enabled"] is True
        rotated = fc.webhooks.rotate_secret(endpoint_id, overlap_s=60)
        assert rotated["secret"] != endpoint["secret"]
        assert near(
            rotated["previous_secret_expires_at"], datetime.now(UTC) + timedelta(seconds=60)
        )

        # Deliveries.
        hour = timedelta(hours=1)
        failed, done = served.run(
            add_deliveries(
                served.fc,
                endpoint_id,
                [("alert.triggered", FAILED, hour / 2), ("alert.resolved", SUCCEEDED, hour)],
            )
        )
        served.run(add_attempts(served.fc, failed, [(1, 20, 500), (2, 40, 200)]))
        listed = fc.webhooks.deliveries(endpoint_id, status="failed")
        assert [d["id"] for d in listed["items"]] == [failed]
        assert [a["attempt_no"] for a in fc.deliveries.get(failed)["attempt_log"]] == [1, 2]
        stats = fc.webhooks.stats(endpoint_id)["windows"]["1h"]
        assert (stats["attempts"], stats["succeeded"], stats["p95_ms"]) == (2, 1, 40)
        assert fc.webhooks.recover(endpoint_id, datetime.now(UTC) - hour) == {"requeued": 1}
        assert fc.deliveries.retry(done)["status"] == "pending"
        assert {d["status"] for d in fc.webhooks.deliveries(endpoint_id)["items"]} == {"pending"}

        # Errors.
        with pytest.raises(NotFoundError):
            fc.deliveries.get("dlv_doesnotexist")
        with pytest.raises(ValidationError) as invalid:
            fc.webhooks.create("http://169.254.169.254/latest/meta-data/")
        assert [e["field"] for e in invalid.value.errors] == ["url"]
        limited = fc.keys.create("sync-limited", ["webhooks:read"], rate_limits={"minute": 1})
        with Client(served.url, limited["key"]) as slow:
            slow.webhooks.list()
            with pytest.raises(RateLimitError) as too_many:
                slow.webhooks.list()
        assert too_many.value.retry_after is not None
        assert too_many.value.retry_after >= 1

        assert fc.webhooks.delete(endpoint_id) is None
        with pytest.raises(NotFoundError):
            fc.webhooks.get(endpoint_id)

    # The server is gone: the same client call cannot be answered.
    with Client(served.url, served.owner_key, timeout=5) as fc, pytest.raises(TransportError):
        fc.webhooks.list()


# -- verify_webhook ------------------------------------------------------------------------------

SECRET = make_secret(11)
OLD_SECRET = make_secret(22)
BODY = b'{"type":"dashboard.created","data":{"id":42}}'


def signed(
    body: bytes = BODY,
    secrets: Sequence[str] = (SECRET,),
    timestamp: int | None = None,
    msg_id: str = "dlv_01TEST",
) -> dict[str, str]:
    stamp = int(time.time()) if timestamp is None else timestamp
    return signing.build_headers(msg_id, stamp, body, list(secrets))


def test_verify_webhook_accepts_a_signed_body() -> None:
    headers = signed()
    verify_webhook(SECRET, BODY, headers)
    verify_webhook(SECRET, BODY.decode(), headers)
    verify_webhook(SECRET, BODY, {name.upper(): value for name, value in headers.items()})
    verify_webhook(SECRET, BODY, httpx.Headers(headers))
    # The padding of the secret is optional.
    verify_webhook(SECRET.rstrip("="), BODY, headers)


def test_verify_webhook_during_a_rotation_accepts_either_secret() -> None:
    headers = signed(secrets=[SECRET, OLD_SECRET])
    assert len(headers["webhook-signature"].split()) == 2
    verify_webhook(SECRET, BODY, headers)
    verify_webhook(OLD_SECRET, BODY, headers)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(make_secret(33), BODY, headers)


def test_verify_webhook_accepts_what_standardwebhooks_signs() -> None:
    stamp = datetime.now(UTC).replace(microsecond=0)
    signature = Webhook(SECRET).sign("msg_1", stamp, BODY.decode())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": signature,
    }
    verify_webhook(SECRET, BODY, headers)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(OLD_SECRET, BODY, headers)


def _now() -> int:
    return int(time.time())


def _swap(name: str, value: str) -> dict[str, str]:
    return {**signed(), name: value}


def _drop(name: str) -> dict[str, str]:
    return {k: v for k, v in signed().items() if k != name}


def _other_version() -> dict[str, str]:
    return _swap("webhook-signature", signed()["webhook-signature"].replace("v1,", "v2,"))


# Each case is built when it runs, so the timestamps are fresh then.
REFUSED: dict[str, Callable[[], tuple[str, bytes, dict[str, str]]]] = {
    "wrong secret": lambda: (OLD_SECRET, BODY, signed()),
    "altered body": lambda: (SECRET, BODY.replace(b"42", b"43"), signed()),
    "appended byte": lambda: (SECRET, BODY + b" ", signed()),
    "empty body": lambda: (SECRET, b"", signed()),
    "stale timestamp": lambda: (SECRET, BODY, signed(timestamp=_now() - 3600)),
    "future timestamp": lambda: (SECRET, BODY, signed(timestamp=_now() + 3600)),
    "another message id": lambda: (SECRET, BODY, _swap("webhook-id", "dlv_other")),
    "timestamp changed": lambda: (SECRET, BODY, _swap("webhook-timestamp", str(_now() - 1))),
    "timestamp not a number": lambda: (SECRET, BODY, _swap("webhook-timestamp", "soon")),
    "no signature": lambda: (SECRET, BODY, _drop("webhook-signature")),
    "no id": lambda: (SECRET, BODY, _drop("webhook-id")),
    "no timestamp": lambda: (SECRET, BODY, _drop("webhook-timestamp")),
    "unknown signature version": lambda: (SECRET, BODY, _other_version()),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_verify_webhook_refuses(case: str) -> None:
    secret, body, headers = REFUSED[case]()
    # The same request, correctly signed and fresh, passes: the case alone makes it fail.
    verify_webhook(SECRET, BODY, signed())
    with pytest.raises(WebhookVerificationError):
        verify_webhook(secret, body, headers)


def test_verify_webhook_tolerance() -> None:
    headers = signed(timestamp=int(time.time()) - 600)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, BODY, headers)
    verify_webhook(SECRET, BODY, headers, tolerance_s=900)


def test_verify_webhook_names_a_malformed_secret() -> None:
    with pytest.raises(ValueError):
        verify_webhook("not-a-secret", BODY, signed())


def test_the_verification_error_is_the_one_exported() -> None:
    assert forecourt.client.WebhookVerificationError is signing.WebhookVerificationError
