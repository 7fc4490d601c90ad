"""API keys (stored only as HMAC hashes) and their aggregated usage counters."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from forecourt.db.base import ID_LENGTH, Base, utcnow

HASH_LENGTH = 64  # hex of HMAC-SHA256


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    environment: Mapped[str] = mapped_column(String(8), default="live")
    prefix: Mapped[str] = mapped_column(String(32))
    key_hash: Mapped[str] = mapped_column(String(HASH_LENGTH), unique=True)
    # During a rotation the previous secret keeps working until previous_expires_at.
    previous_key_hash: Mapped[str | None] = mapped_column(String(HASH_LENGTH), unique=True)
    previous_expires_at: Mapped[datetime | None]
    scopes: Mapped[list[str]]
    tier: Mapped[str] = mapped_column(String(32))
    rate_limits: Mapped[dict[str, int]]
    expires_at: Mapped[datetime | None]
    created_by: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class ApiKeyUsage(Base):
    """Requests per key per minute, by status class; the source of every usage figure."""

    __tablename__ = "api_key_usage"
    __table_args__ = (
        UniqueConstraint("key_id", "minute"),
        Index(None, "tenant_id", "minute"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("tenants.id", ondelete="CASCADE")
    )
    key_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("api_keys.id", ondelete="CASCADE")
    )
    minute: Mapped[datetime]
    requests: Mapped[int] = mapped_column(default=0)
    status_2xx: Mapped[int] = mapped_column(default=0)
    status_3xx: Mapped[int] = mapped_column(default=0)
    status_4xx: Mapped[int] = mapped_column(default=0)
    status_5xx: Mapped[int] = mapped_column(default=0)
    rate_limited: Mapped[int] = mapped_column(default=0)
