"""Alerts and alert rules.

An alert is open, acknowledged or resolved. While it is not resolved, ``open_key`` holds its
fingerprint (type and labels) and a unique constraint on (tenant, ``open_key``) keeps one
unresolved alert per fingerprint: a repeat is an upsert on that key, safe under concurrent
triggers on both databases. Resolving clears ``open_key`` (NULLs never collide), so the next
trigger opens a new alert.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from forecourt.db.base import ID_LENGTH, Base, utcnow
from forecourt.metrics.models import NAME_LENGTH

OPEN = "open"
ACKNOWLEDGED = "acknowledged"
RESOLVED = "resolved"
STATES = (OPEN, ACKNOWLEDGED, RESOLVED)
SEVERITIES = ("critical", "high", "medium", "low")
CONDITIONS = ("above", "below", "absent")
RULE_AGGREGATIONS = ("avg", "min", "max", "sum", "last", "count")

TYPE_LENGTH = 128
SOURCE_LENGTH = 128
FINGERPRINT_LENGTH = 64  # hex SHA-256
MESSAGE_LENGTH = 2000
RULE_NAME_LENGTH = 200
METRIC_NAME_LENGTH = NAME_LENGTH  # a series name, as the metrics store has it


class Alert(Base):
    __tablename__ = "alerts"
    __table_args__ = (
        UniqueConstraint("tenant_id", "open_key"),
        Index(None, "tenant_id", "state"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("tenants.id", ondelete="CASCADE")
    )
    type: Mapped[str] = mapped_column(String(TYPE_LENGTH))
    severity: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default=OPEN)
    message: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(SOURCE_LENGTH))
    labels: Mapped[dict[str, Any]]
    fingerprint: Mapped[str] = mapped_column(String(FINGERPRINT_LENGTH))
    # The fingerprint while unresolved, NULL once resolved (see the module docstring).
    open_key: Mapped[str | None] = mapped_column(String(FINGERPRINT_LENGTH))
    count: Mapped[int] = mapped_column(Integer, default=1)
    rule_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(ID_LENGTH))


class AlertRule(Base):
    """A metric query, a condition over it, and the evaluator's state.

    ``pending_since`` is when the condition began to hold (NULL while it does not);
    ``firing`` is set once it has held for ``for_s`` and the rule opened ``alert_id``, and
    cleared when it stops holding (which resolves that alert).
    """

    __tablename__ = "alert_rules"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name"),
        Index(None, "enabled", "evaluated_at"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("tenants.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(RULE_NAME_LENGTH))
    description: Mapped[str] = mapped_column(Text, default="")
    metric: Mapped[str] = mapped_column(String(METRIC_NAME_LENGTH))
    labels: Mapped[dict[str, Any]]
    aggregation: Mapped[str] = mapped_column(String(16))
    window_s: Mapped[int] = mapped_column(Integer)
    condition: Mapped[str] = mapped_column(String(16))
    threshold: Mapped[float | None] = mapped_column(Float)
    for_s: Mapped[int] = mapped_column(Integer, default=0)
    severity: Mapped[str] = mapped_column(String(16))
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    evaluated_at: Mapped[datetime | None]
    last_value: Mapped[float | None] = mapped_column(Float)
    pending_since: Mapped[datetime | None]
    firing: Mapped[bool] = mapped_column(default=False)
    alert_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
