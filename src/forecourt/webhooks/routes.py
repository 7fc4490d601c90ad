"""REST: /api/v1/webhooks and /api/v1/deliveries."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status

from forecourt.http.deps import DbSession, ForecourtDep, Paging, require
from forecourt.http.guard import GuardedRoute
from forecourt.http.times import aware
from forecourt.principal import Principal
from forecourt.schemas import Page, Timestamp
from forecourt.scopes import WEBHOOK_SECRETS
from forecourt.webhooks.models import Delivery, Endpoint
from forecourt.webhooks.probe import send_test
from forecourt.webhooks.schemas import (
    AttemptOut,
    DeliveryDetail,
    DeliveryOut,
    EndpointCreate,
    EndpointCreated,
    EndpointOut,
    EndpointStats,
    EndpointUpdate,
    RecoverOut,
    SecretOut,
    SecretRotate,
)
from forecourt.webhooks.service import endpoint_fields

WebhooksRead = Annotated[Principal, Depends(require("webhooks:read"))]
WebhooksWrite = Annotated[Principal, Depends(require("webhooks:write"))]
DeliveriesRead = Annotated[Principal, Depends(require("deliveries:read"))]
DeliveriesWrite = Annotated[Principal, Depends(require("deliveries:write"))]
WebhookSecrets = Annotated[Principal, Depends(require(WEBHOOK_SECRETS))]

webhooks = APIRouter(route_class=GuardedRoute, prefix="/api/v1/webhooks", tags=["webhooks"])
deliveries = APIRouter(route_class=GuardedRoute, prefix="/api/v1/deliveries", tags=["deliveries"])


def _delivery(d: Delivery) -> DeliveryOut:
    return DeliveryOut.model_validate(d)


def _fields(endpoint: Endpoint, actor: Principal) -> dict[str, Any]:
    """The endpoint as ``actor`` may see it: masked without ``webhooks:secrets``."""
    return endpoint_fields(endpoint, reveal=actor.has(WEBHOOK_SECRETS))


@webhooks.post("", status_code=status.HTTP_201_CREATED, response_model=EndpointCreated)
async def create_endpoint(
    body: EndpointCreate, actor: WebhooksWrite, fc: ForecourtDep, session: DbSession
) -> EndpointCreated:
    """Subscribe a URL to event types (exact names, wildcards like ``dashboard.*``; none: all).
    The response carries the generated signing secret if the caller holds
    ``webhooks:secrets``; otherwise ``secret`` is null (someone holding that scope reads it
    with ``GET /api/v1/webhooks/{id}/secret``). A secret given in the request is never
    echoed."""
    endpoint, secret = await fc.webhooks(session).create(actor, body)
    shown = secret if actor.has(WEBHOOK_SECRETS) and body.secret is None else None
    return EndpointCreated(**_fields(endpoint, actor), secret=shown)


@webhooks.get("", response_model=Page[EndpointOut])
async def list_endpoints(
    actor: WebhooksRead, fc: ForecourtDep, session: DbSession, page: Paging
) -> Page[EndpointOut]:
    rows, cursor = await fc.webhooks(session).page(actor, page.cursor, page.limit)
    return Page[EndpointOut](
        items=[EndpointOut(**_fields(e, actor)) for e in rows], next_cursor=cursor
    )


@webhooks.get("/{endpoint_id}", response_model=EndpointOut)
async def get_endpoint(
    endpoint_id: str, actor: WebhooksRead, fc: ForecourtDep, session: DbSession
) -> EndpointOut:
    return EndpointOut(**_fields(await fc.webhooks(session).get(actor, endpoint_id), actor))


@webhooks.patch("/{endpoint_id}", response_model=EndpointOut)
async def update_endpoint(
    endpoint_id: str,
    body: EndpointUpdate,
    actor: WebhooksWrite,
    fc: ForecourtDep,
    session: DbSession,
) -> EndpointOut:
    endpoint = await fc.webhooks(session).update(actor, endpoint_id, body)
    return EndpointOut(**_fields(endpoint, actor))


@webhooks.delete("/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_endpoint(
    endpoint_id: str, actor: WebhooksWrite, fc: ForecourtDep, session: DbSession
) -> None:
    """Delete the endpoint, its deliveries and their attempts."""
    await fc.webhooks(session).delete(actor, endpoint_id)


@webhooks.post("/{endpoint_id}/enable", response_model=EndpointOut)
async def enable_endpoint(
    endpoint_id: str, actor: WebhooksWrite, fc: ForecourtDep, session: DbSession
) -> EndpointOut:
    """Enable; waiting deliveries resume."""
    endpoint = await fc.webhooks(session).set_enabled(actor, endpoint_id, True)
    fc.wake_workers()
    return EndpointOut(**_fields(endpoint, actor))


@webhooks.post("/{endpoint_id}/disable", response_model=EndpointOut)
async def disable_endpoint(
    endpoint_id: str, actor: WebhooksWrite, fc: ForecourtDep, session: DbSession
) -> EndpointOut:
    """Disable; new events still queue deliveries, which wait until it is enabled."""
    endpoint = await fc.webhooks(session).set_enabled(actor, endpoint_id, False)
    return EndpointOut(**_fields(endpoint, actor))


@webhooks.get("/{endpoint_id}/secret", response_model=SecretOut)
async def reveal_secret(
    endpoint_id: str, actor: WebhookSecrets, fc: ForecourtDep, session: DbSession
) -> SecretOut:
    """The current signing secret (needs ``webhooks:secrets``; audited)."""
    endpoint, secret = await fc.webhooks(session).reveal(actor, endpoint_id)
    return SecretOut(secret=secret, previous_secret_expires_at=endpoint.previous_secret_expires_at)


@webhooks.post("/{endpoint_id}/secret/rotate", response_model=SecretOut)
async def rotate_secret(
    endpoint_id: str,
    actor: WebhookSecrets,
    fc: ForecourtDep,
    session: DbSession,
    body: SecretRotate | None = None,
) -> SecretOut:
    """A new secret (needs ``webhooks:secrets``). During the overlap (24 h by default)
    deliveries carry both signatures. A secret given in the request is not echoed."""
    data = body or SecretRotate()
    endpoint, secret = await fc.webhooks(session).rotate_secret(actor, endpoint_id, data)
    return SecretOut(
        secret=secret if data.secret is None else None,
        previous_secret_expires_at=endpoint.previous_secret_expires_at,
    )


@webhooks.get("/{endpoint_id}/deliveries", response_model=Page[DeliveryOut])
async def list_deliveries(
    endpoint_id: str,
    actor: DeliveriesRead,
    fc: ForecourtDep,
    session: DbSession,
    page: Paging,
    status: Annotated[str | None, Query(description="pending, delivering, succeeded, …")] = None,
    event_type: Annotated[str | None, Query(description="exact, or a prefix like a.*")] = None,
    since: Timestamp | None = None,
    until: Timestamp | None = None,
) -> Page[DeliveryOut]:
    rows, cursor = await fc.webhooks(session).deliveries(
        actor,
        endpoint_id,
        status=status,
        event_type=event_type,
        since=aware(since, "since"),
        until=aware(until, "until"),
        cursor=page.cursor,
        limit=page.limit,
    )
    return Page[DeliveryOut](items=[_delivery(d) for d in rows], next_cursor=cursor)


@webhooks.post("/{endpoint_id}/recover", response_model=RecoverOut)
async def recover(
    endpoint_id: str,
    actor: DeliveriesWrite,
    fc: ForecourtDep,
    session: DbSession,
    since: Annotated[Timestamp, Query(description="Re-queue failed deliveries since then.")],
) -> RecoverOut:
    count = await fc.webhooks(session).recover(actor, endpoint_id, aware(since, "since"))
    fc.wake_workers()
    return RecoverOut(requeued=count)


@webhooks.post("/{endpoint_id}/test", response_model=AttemptOut)
async def test_endpoint(endpoint_id: str, actor: WebhooksWrite, fc: ForecourtDep) -> AttemptOut:
    """Send a signed ``webhook.test`` event to this endpoint now; the attempt's result."""
    return AttemptOut.model_validate(await send_test(fc, actor, endpoint_id))


@webhooks.get("/{endpoint_id}/stats", response_model=EndpointStats)
async def endpoint_stats(
    endpoint_id: str, actor: WebhooksRead, fc: ForecourtDep, session: DbSession
) -> EndpointStats:
    """Success rate, attempts, p50/p95 latency, last success and failure: 1 h, 24 h, 7 d."""
    return EndpointStats.model_validate(await fc.webhooks(session).stats(actor, endpoint_id))


@deliveries.get("/{delivery_id}", response_model=DeliveryDetail)
async def get_delivery(
    delivery_id: str, actor: DeliveriesRead, fc: ForecourtDep, session: DbSession
) -> DeliveryDetail:
    """A delivery with every attempt: time, status code, latency, response excerpt, error."""
    found, attempts = await fc.webhooks(session).delivery(actor, delivery_id)
    return DeliveryDetail(
        **DeliveryOut.model_validate(found).model_dump(),
        attempt_log=[AttemptOut.model_validate(a) for a in attempts],
    )


@deliveries.post("/{delivery_id}/retry", response_model=DeliveryOut)
async def retry_delivery(
    delivery_id: str, actor: DeliveriesWrite, fc: ForecourtDep, session: DbSession
) -> DeliveryOut:
    """Queue the delivery again, now, with the same webhook-id."""
    found = await fc.webhooks(session).retry(actor, delivery_id)
    fc.wake_workers()
    return _delivery(found)
