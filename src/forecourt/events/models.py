"""The event log and the per-tenant catalog of event types."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from forecourt.db.base import ID_LENGTH, Base, utcnow

EVENT_ID_LENGTH = 128
TYPE_LENGTH = 128


class Event(Base):
    """One published event: CloudEvents 1.0 attributes plus tenant and severity."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("tenant_id", "source", "ce_id"),
        UniqueConstraint("tenant_id", "idempotency_key"),
        Index(None, "tenant_id", "type"),
        Index(None, "tenant_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("tenants.id", ondelete="CASCADE")
    )
    # The CloudEvents id: the publisher's own, or ``id`` when none was given.
    ce_id: Mapped[str] = mapped_column(String(EVENT_ID_LENGTH))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(512))
    type: Mapped[str] = mapped_column(String(TYPE_LENGTH))
    subject: Mapped[str | None] = mapped_column(String(512))
    time: Mapped[datetime]
    datacontenttype: Mapped[str] = mapped_column(String(128), default="application/json")
    data: Mapped[Any | None] = mapped_column()
    severity: Mapped[str] = mapped_column(String(16), default="info")
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EventType(Base):
    """A type that can be published and subscribed to, with an optional JSON Schema."""

    __tablename__ = "event_types"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(TYPE_LENGTH))
    category: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    schema: Mapped[dict[str, Any] | None]
    builtin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    archived_at: Mapped[datetime | None]
