"""Webhook endpoints: create, change, enable/disable, secrets; deliveries: list, inspect,
retry, recover; statistics per endpoint."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from forecourt.audit import service as audit
from forecourt.crypto import SecretBox
from forecourt.db.base import utcnow
from forecourt.errors import Conflict, InvalidInput, NotFound
from forecourt.ids import new_id
from forecourt.pagination import next_cursor, paginate
from forecourt.principal import Principal
from forecourt.stats import STATS_WINDOWS, percentile
from forecourt.webhooks import fanout, signing, ssrf
from forecourt.webhooks.models import (
    DELIVERING,
    DELIVERY_STATES,
    FAILED,
    PENDING,
    SUCCEEDED,
    Attempt,
    Delivery,
    Endpoint,
)
from forecourt.webhooks.schemas import EndpointCreate, EndpointUpdate, RetryPolicy, SecretRotate
from forecourt.webhooks.targets import Target

SECRET_PURPOSE = "webhook-secret"
MASK = "***"  # stands for a header value, URL credentials or a query string
HOURLY_HOURS = 24  # the hours of an endpoint's stats, "hourly"
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")
HEADER_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # RFC 9110 field values: no CTL but HTAB


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """What the endpoint service needs from the settings."""

    box: SecretBox
    policy: ssrf.AllowPolicy
    resolver: ssrf.Resolver
    overlap_s: int


def summary(endpoint: Endpoint) -> dict[str, Any]:
    """What the audit log keeps of an endpoint: never its secrets, header values, URL
    credentials or query string."""
    return {
        "url": mask_url(endpoint.url),
        "event_types": list(endpoint.event_types),
        "header_names": sorted(endpoint.headers),
        "timeout_s": endpoint.timeout_s,
        "retry_policy": dict(endpoint.retry_policy),
        "rate_limit_per_s": endpoint.rate_limit_per_s,
        "enabled": endpoint.enabled,
    }


class EndpointService:
    def __init__(self, session: AsyncSession, config: WebhookConfig) -> None:
        self.session = session
        self.config = config

    # -- endpoints ---------------------------------------------------------------------

    async def create(self, actor: Principal, data: EndpointCreate) -> tuple[Endpoint, str]:
        """A new endpoint and its secret."""
        await self._check_url(data.url)
        secret = self._secret(data.secret, "secret")
        now = utcnow()
        endpoint = Endpoint(
            id=new_id("ep"),
            tenant_id=actor.tenant_id,
            url=data.url,
            description=data.description,
            event_types=_patterns(data.event_types),
            headers=_headers(data.headers),
            timeout_s=data.timeout_s,
            retry_policy=data.retry_policy.model_dump(),
            rate_limit_per_s=data.rate_limit_per_s,
            metadata_=data.metadata,
            secret_encrypted=self.config.box.encrypt(secret),
            enabled=data.enabled,
            disabled_at=None if data.enabled else now,
            disabled_reason=None if data.enabled else "created disabled",
            consecutive_failures=0,
            created_at=now,
            updated_at=now,
        )
        self.session.add(endpoint)
        audit.record(
            self.session,
            actor,
            "endpoint.created",
            "endpoint",
            endpoint.id,
            after=summary(endpoint),
        )
        await self.session.commit()
        return endpoint, secret

    async def page(
        self, actor: Principal, cursor: str | None, limit: int
    ) -> tuple[list[Endpoint], str | None]:
        stmt = select(Endpoint).where(Endpoint.tenant_id == actor.tenant_id)
        rows = (await self.session.scalars(paginate(stmt, Endpoint.id, cursor, limit))).all()
        return next_cursor(rows, limit)

    async def get(self, actor: Principal, endpoint_id: str) -> Endpoint:
        endpoint = await self.session.scalar(
            select(Endpoint).where(
                Endpoint.id == endpoint_id, Endpoint.tenant_id == actor.tenant_id
            )
        )
        if endpoint is None:
            raise NotFound(f"No webhook endpoint {endpoint_id!r}.")
        return endpoint

    async def update(self, actor: Principal, endpoint_id: str, data: EndpointUpdate) -> Endpoint:
        endpoint = await self.get(actor, endpoint_id)
        before = summary(endpoint)
        fields = data.model_fields_set
        for name in fields:
            if getattr(data, name) is None and name not in {"rate_limit_per_s"}:
                raise InvalidInput(f"{name} cannot be null.", field=name)
        # A masked value sent back as read (read-modify-write without webhooks:secrets) keeps
        # what is stored rather than storing the mask.
        if "url" in fields and data.url is not None and data.url != mask_url(endpoint.url):
            await self._check_url(data.url)
            endpoint.url = data.url
        if "description" in fields and data.description is not None:
            endpoint.description = data.description
        if "event_types" in fields and data.event_types is not None:
            endpoint.event_types = _patterns(data.event_types)
        if "headers" in fields and data.headers is not None:
            endpoint.headers = _headers(_unmasked(data.headers, endpoint.headers))
        if "timeout_s" in fields and data.timeout_s is not None:
            endpoint.timeout_s = data.timeout_s
        if "retry_policy" in fields and data.retry_policy is not None:
            endpoint.retry_policy = data.retry_policy.model_dump()
        if "rate_limit_per_s" in fields:
            endpoint.rate_limit_per_s = data.rate_limit_per_s
        if "metadata" in fields and data.metadata is not None:
            endpoint.metadata_ = data.metadata
        if "enabled" in fields and data.enabled is not None:
            _set_enabled(endpoint, data.enabled, "disabled through the API")
        endpoint.updated_at = utcnow()
        audit.record(
            self.session,
            actor,
            "endpoint.updated",
            "endpoint",
            endpoint.id,
            before=before,
            after=summary(endpoint),
        )
        await self.session.commit()
        return endpoint

    async def set_enabled(self, actor: Principal, endpoint_id: str, enabled: bool) -> Endpoint:
        """Enable (deliveries resume) or disable (deliveries wait) an endpoint."""
        endpoint = await self.get(actor, endpoint_id)
        if endpoint.enabled != enabled:
            _set_enabled(endpoint, enabled, "disabled through the API")
            endpoint.updated_at = utcnow()
            action = "endpoint.enabled" if enabled else "endpoint.disabled"
            audit.record(
                self.session, actor, action, "endpoint", endpoint.id, after=summary(endpoint)
            )
            await self.session.commit()
        return endpoint

    async def delete(self, actor: Principal, endpoint_id: str) -> None:
        """Delete the endpoint with its deliveries and attempts."""
        endpoint = await self.get(actor, endpoint_id)
        audit.record(
            self.session,
            actor,
            "endpoint.deleted",
            "endpoint",
            endpoint.id,
            before=summary(endpoint),
        )
        await self.session.delete(endpoint)
        await self.session.commit()

    # -- secrets -----------------------------------------------------------------------

    def secrets(self, endpoint: Endpoint, now: datetime | None = None) -> list[str]:
        """The secrets that sign now: the current one, and the previous during its overlap."""
        return signing_secrets(self.config.box, endpoint, now or utcnow())

    async def reveal(self, actor: Principal, endpoint_id: str) -> tuple[Endpoint, str]:
        endpoint = await self.get(actor, endpoint_id)
        audit.record(self.session, actor, "endpoint.secret_revealed", "endpoint", endpoint.id)
        await self.session.commit()
        return endpoint, self.config.box.decrypt(endpoint.secret_encrypted)

    async def rotate_secret(
        self, actor: Principal, endpoint_id: str, data: SecretRotate
    ) -> tuple[Endpoint, str]:
        """A new secret; the old one keeps signing alongside it for the overlap."""
        endpoint = await self.get(actor, endpoint_id)
        secret = self._secret(data.secret, "secret")
        overlap = self.config.overlap_s if data.overlap_s is None else data.overlap_s
        now = utcnow()
        if overlap > 0:
            endpoint.previous_secret_encrypted = endpoint.secret_encrypted
            endpoint.previous_secret_expires_at = now + timedelta(seconds=overlap)
        else:
            endpoint.previous_secret_encrypted = None
            endpoint.previous_secret_expires_at = None
        endpoint.secret_encrypted = self.config.box.encrypt(secret)
        endpoint.updated_at = now
        audit.record(
            self.session,
            actor,
            "endpoint.secret_rotated",
            "endpoint",
            endpoint.id,
            after={"overlap_s": overlap},
        )
        await self.session.commit()
        return endpoint, secret

    # -- deliveries --------------------------------------------------------------------

    async def deliveries(
        self,
        actor: Principal,
        endpoint_id: str,
        *,
        status: str | None,
        event_type: str | None,
        since: datetime | None,
        until: datetime | None,
        cursor: str | None,
        limit: int,
    ) -> tuple[list[Delivery], str | None]:
        endpoint = await self.get(actor, endpoint_id)
        stmt = select(Delivery).where(
            Delivery.tenant_id == actor.tenant_id, Delivery.endpoint_id == endpoint.id
        )
        if status is not None:
            if status not in DELIVERY_STATES:
                raise InvalidInput(
                    f"Status is one of {', '.join(DELIVERY_STATES)}.", field="status"
                )
            stmt = stmt.where(Delivery.status == status)
        if event_type is not None:
            if event_type.endswith(".*"):
                # autoescape: "_" and "%" in a type name are literal, not LIKE wildcards.
                stmt = stmt.where(Delivery.event_type.startswith(event_type[:-1], autoescape=True))
            else:
                stmt = stmt.where(Delivery.event_type == event_type)
        if since is not None:
            stmt = stmt.where(Delivery.created_at >= since)
        if until is not None:
            stmt = stmt.where(Delivery.created_at < until)
        rows = (await self.session.scalars(paginate(stmt, Delivery.id, cursor, limit))).all()
        return next_cursor(rows, limit)

    async def delivery(self, actor: Principal, delivery_id: str) -> tuple[Delivery, list[Attempt]]:
        found = await self.session.scalar(
            select(Delivery).where(
                Delivery.id == delivery_id, Delivery.tenant_id == actor.tenant_id
            )
        )
        if found is None:
            raise NotFound(f"No delivery {delivery_id!r}.")
        attempts = await self.session.scalars(
            select(Attempt).where(Attempt.delivery_id == found.id).order_by(Attempt.attempt_no)
        )
        return found, list(attempts.all())

    async def retry(self, actor: Principal, delivery_id: str) -> Delivery:
        """Queue the delivery again now (the same webhook-id), whatever its state, unless a
        worker holds it right now."""
        found, _ = await self.delivery(actor, delivery_id)
        if found.status == DELIVERING:
            raise Conflict("The delivery is being attempted right now.")
        _requeue(found)
        audit.record(self.session, actor, "delivery.retried", "delivery", found.id)
        await self.session.commit()
        return found

    async def recover(self, actor: Principal, endpoint_id: str, since: datetime) -> int:
        """Queue again every failed delivery of the endpoint created since ``since``."""
        endpoint = await self.get(actor, endpoint_id)
        now = utcnow()
        result = await self.session.execute(
            update(Delivery)
            .where(
                Delivery.tenant_id == actor.tenant_id,
                Delivery.endpoint_id == endpoint.id,
                Delivery.status == FAILED,
                Delivery.created_at >= since,
            )
            .values(status=PENDING, next_attempt_at=now, finished_at=None, updated_at=now)
        )
        count = int(result.rowcount or 0)  # type: ignore[attr-defined]
        audit.record(
            self.session,
            actor,
            "endpoint.recovered",
            "endpoint",
            endpoint.id,
            after={"since": since.isoformat(), "requeued": count},
        )
        await self.session.commit()
        return count

    async def stats(self, actor: Principal, endpoint_id: str) -> dict[str, Any]:
        endpoint = await self.get(actor, endpoint_id)
        now = utcnow()
        windows: dict[str, Any] = {}
        hourly: list[dict[str, Any]] = []
        for name, length in STATS_WINDOWS.items():
            rows = (
                await self.session.execute(
                    select(Attempt.status_code, Attempt.duration_ms, Attempt.started_at).where(
                        Attempt.endpoint_id == endpoint.id,
                        Attempt.tenant_id == actor.tenant_id,
                        Attempt.started_at >= now - length,
                    )
                )
            ).all()
            windows[name] = _window_stats([(r[0], r[1], r[2]) for r in rows])
            if name == "24h":
                hourly = _hourly([(r[0], r[2]) for r in rows], now)
        pending = await self.session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(
                Delivery.endpoint_id == endpoint.id,
                Delivery.status.not_in((SUCCEEDED, FAILED)),
            )
        )
        return {
            "endpoint_id": endpoint.id,
            "windows": windows,
            "pending": int(pending or 0),
            "hourly": hourly,
        }

    # -- checks ------------------------------------------------------------------------

    async def _check_url(self, url: str) -> None:
        try:
            ssrf.validate_url_syntax(url)
            await ssrf.check_url(url, self.config.policy, self.config.resolver)
        except ssrf.UnsafeTarget as exc:
            raise InvalidInput(
                f"The URL is not an acceptable receiver: {exc}", field="url"
            ) from None
        except OSError as exc:
            raise InvalidInput(f"The host does not resolve: {exc}", field="url") from None

    @staticmethod
    def _secret(given: str | None, field: str) -> str:
        if given is None:
            return signing.generate_secret()
        try:
            signing.parse_secret(given)
        except ValueError as exc:
            raise InvalidInput(str(exc), field=field) from None
        return given


def signing_secrets(box: SecretBox, endpoint: Endpoint | Target, now: datetime) -> list[str]:
    """The current secret, and the previous one while its rotation overlap lasts."""
    keys = [box.decrypt(endpoint.secret_encrypted)]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret_encrypted and expires is not None and expires > now:
        keys.append(box.decrypt(endpoint.previous_secret_encrypted))
    return keys


def _set_enabled(endpoint: Endpoint, enabled: bool, reason: str) -> None:
    endpoint.enabled = enabled
    if enabled:
        endpoint.disabled_at = None
        endpoint.disabled_reason = None
        endpoint.consecutive_failures = 0
        endpoint.failing_since = None
    else:
        endpoint.disabled_at = utcnow()
        endpoint.disabled_reason = reason


def _requeue(delivery: Delivery) -> None:
    now = utcnow()
    delivery.status = PENDING
    delivery.next_attempt_at = now
    delivery.finished_at = None
    delivery.lease_owner = None
    delivery.lease_expires_at = None
    delivery.updated_at = now


def _patterns(patterns: Sequence[str]) -> list[str]:
    return fanout.checked_patterns(patterns, "dashboard.created")


def _unmasked(given: dict[str, str], stored: dict[str, Any]) -> dict[str, str]:
    """``given`` with each ``***`` value of a header already stored replaced by its value."""
    return {
        name: stored[name] if value == MASK and name in stored else value
        for name, value in given.items()
    }


def _headers(headers: dict[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        if not HEADER_NAME.match(name):
            raise InvalidInput("Not a valid header name.", field=f"headers.{name}")
        if name.lower() in signing.RESERVED_HEADERS:
            raise InvalidInput("Forecourt sets this header itself.", field=f"headers.{name}")
        if len(value) > 4096 or HEADER_CONTROL.search(value):
            raise InvalidInput(
                "Header values are one line of at most 4096 characters, without control"
                " characters.",
                field=f"headers.{name}",
            )
    return dict(headers)


def _hourly(rows: list[tuple[int | None, datetime]], now: datetime) -> list[dict[str, Any]]:
    """Attempts of the last 24 hours by clock hour, oldest first, every hour listed (the
    first one is the hour 23 hours before the current one)."""
    current = now.replace(minute=0, second=0, microsecond=0)
    starts = [current - timedelta(hours=n) for n in range(HOURLY_HOURS - 1, -1, -1)]
    counts = {start: [0, 0] for start in starts}
    for code, started in rows:
        aware = started if started.tzinfo else started.replace(tzinfo=UTC)
        bucket = counts.get(aware.replace(minute=0, second=0, microsecond=0))
        if bucket is not None:
            bucket[0 if code is not None and 200 <= code < 300 else 1] += 1
    return [
        {"start": start, "succeeded": counts[start][0], "failed": counts[start][1]}
        for start in starts
    ]


def _window_stats(rows: list[tuple[int | None, int, datetime]]) -> dict[str, Any]:
    durations = sorted(d for _, d, _ in rows)
    ok = [started for code, _, started in rows if code is not None and 200 <= code < 300]
    bad = [started for code, _, started in rows if code is None or not 200 <= code < 300]
    return {
        "attempts": len(rows),
        "succeeded": len(ok),
        "failed": len(bad),
        "success_rate": (len(ok) / len(rows)) if rows else None,
        "p50_ms": percentile(durations, 0.50),
        "p95_ms": percentile(durations, 0.95),
        "last_success_at": max(ok) if ok else None,
        "last_failure_at": max(bad) if bad else None,
    }


def mask_url(url: str) -> str:
    """The URL with its userinfo, query string and fragment replaced by ``***``; scheme, host,
    port and path stay."""
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return MASK
    netloc = f"{MASK}@{host}" if "@" in parts.netloc else host
    return urlunsplit(
        (
            parts.scheme,
            netloc,
            parts.path,
            MASK if parts.query else "",
            MASK if parts.fragment else "",
        )
    )


def mask_headers(headers: dict[str, Any]) -> dict[str, str]:
    """The header names, each value replaced by ``***``."""
    return dict.fromkeys(headers, MASK)


def endpoint_fields(endpoint: Endpoint, *, reveal: bool = False) -> dict[str, Any]:
    """The public fields of an endpoint, for its response body. Unless ``reveal`` (a caller
    holding ``webhooks:secrets``), header values and URL credentials and query are masked."""
    return {
        "id": endpoint.id,
        "url": endpoint.url if reveal else mask_url(endpoint.url),
        "description": endpoint.description,
        "event_types": list(endpoint.event_types),
        "headers": dict(endpoint.headers) if reveal else mask_headers(endpoint.headers),
        "timeout_s": endpoint.timeout_s,
        "retry_policy": RetryPolicy.model_validate(endpoint.retry_policy),
        "rate_limit_per_s": endpoint.rate_limit_per_s,
        "metadata": dict(endpoint.metadata_),
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason,
        "disabled_at": endpoint.disabled_at,
        "previous_secret_expires_at": endpoint.previous_secret_expires_at,
        "created_at": endpoint.created_at,
        "updated_at": endpoint.updated_at,
    }
