"""Webhook endpoints, the delivery queue, and the log of every attempt."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from forecourt.db.base import ID_LENGTH, Base, utcnow
from forecourt.events.models import TYPE_LENGTH

# Delivery states: pending -> delivering -> succeeded | retrying -> ... -> failed
PENDING = "pending"
DELIVERING = "delivering"
SUCCEEDED = "succeeded"
RETRYING = "retrying"
FAILED = "failed"
DELIVERY_STATES = (PENDING, DELIVERING, SUCCEEDED, RETRYING, FAILED)

# The queue's two ways of being due, as literal SQL: a partial index serves a query only when
# the query's condition visibly implies the index's, which a bound parameter would not.
WAITING_SQL = "status IN ('pending', 'retrying')"
LEASED_SQL = "status = 'delivering'"


class Endpoint(Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(Text, default="")
    # Exact names and wildcards such as "dashboard.*"; empty: every type.
    event_types: Mapped[list[str]]
    headers: Mapped[dict[str, Any]]
    timeout_s: Mapped[float]
    # {"kind": "exponential" | "linear" | "none", "max_attempts": int, "interval_s": int}
    retry_policy: Mapped[dict[str, Any]]
    rate_limit_per_s: Mapped[int | None]
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")
    # whsec_ secrets, encrypted with the server key (forecourt.crypto).
    secret_encrypted: Mapped[str] = mapped_column(Text)
    previous_secret_encrypted: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[datetime | None]
    enabled: Mapped[bool] = mapped_column(default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(200))
    disabled_at: Mapped[datetime | None]
    # Auto-disable bookkeeping: when the current run of failures began, and its length.
    failing_since: Mapped[datetime | None]
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Delivery(Base):
    """One event for one endpoint: the unit of the durable queue (at-least-once)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # Claiming reads these in order and stops at its batch size: no sort of the backlog.
        Index(
            "ix_webhook_deliveries_waiting",
            "next_attempt_at",
            postgresql_where=text(WAITING_SQL),
            sqlite_where=text(WAITING_SQL),
        ),
        Index(
            "ix_webhook_deliveries_leased",
            "lease_expires_at",
            postgresql_where=text(LEASED_SQL),
            sqlite_where=text(LEASED_SQL),
        ),
        Index(None, "endpoint_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("tenants.id", ondelete="CASCADE")
    )
    endpoint_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    event_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("events.id", ondelete="CASCADE"), index=True
    )
    event_type: Mapped[str] = mapped_column(String(TYPE_LENGTH))
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class Attempt(Base):
    """One HTTP attempt of a delivery, as the receiver answered it."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (
        Index(None, "delivery_id", "attempt_no"),
        Index(None, "endpoint_id", "started_at"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    # The tenant and endpoint are those of the delivery, kept here for the endpoint's
    # statistics. No foreign keys of their own: the delivery's keys hold them, and deleting
    # its endpoint or tenant deletes the delivery and so the attempt. Checked again, each cost
    # PostgreSQL about 5 us per attempt row.
    tenant_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    delivery_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    endpoint_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    attempt_no: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    duration_ms: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None]
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    error_class: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(String(500))
    worker_id: Mapped[str | None] = mapped_column(String(64))
