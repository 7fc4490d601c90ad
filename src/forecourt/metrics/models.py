"""The metrics store: series, raw points, rollups and the rollup work list.

Times are integers: points in epoch milliseconds, buckets in epoch seconds. A bucket is then
``ts - ts % width`` in plain SQL on both databases, and the primary keys below are the only
indexes each table needs (docs/metrics.md says why).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from forecourt.db.base import ID_LENGTH, Base, utcnow

NAME_LENGTH = 200
SOURCE_LENGTH = 128
LABELS_KEY_LENGTH = 2048


class MetricSeries(Base):
    """A time series: a name and labels, in a tenant, from a source (a plugin instance id or
    ``forecourt``). ``labels_key`` is the labels' canonical JSON, so a series is found by
    equality; first and last point are kept here so listing reads no point."""

    __tablename__ = "metric_series"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name", "source", "labels_key"),
        Index(None, "tenant_id", "source"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("tenants.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    source: Mapped[str] = mapped_column(String(SOURCE_LENGTH))
    labels: Mapped[dict[str, Any]]
    labels_key: Mapped[str] = mapped_column(String(LABELS_KEY_LENGTH))
    first_ts: Mapped[int | None] = mapped_column(BigInteger)  # epoch ms
    last_ts: Mapped[int | None] = mapped_column(BigInteger)  # epoch ms
    last_value: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MetricPoint(Base):
    """One raw point. The key (series, ts) is the order every read takes; on SQLite the table
    is the key itself (WITHOUT ROWID), so a range of one series is one contiguous read."""

    __tablename__ = "metric_points"
    __table_args__ = ({"sqlite_with_rowid": False},)

    series_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("metric_series.id", ondelete="CASCADE"), primary_key=True
    )
    ts: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # epoch ms
    value: Mapped[float] = mapped_column(Float)


class MetricRollup(Base):
    """One bucket of one series at one resolution (60 or 3600 s): count, sum, min, max and
    the last value with its time. Count and sum, not an average, so buckets compose."""

    __tablename__ = "metric_rollups"
    __table_args__ = ({"sqlite_with_rowid": False},)

    series_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("metric_series.id", ondelete="CASCADE"), primary_key=True
    )
    resolution: Mapped[int] = mapped_column(Integer, primary_key=True)  # seconds
    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # epoch s, start
    count: Mapped[int] = mapped_column(BigInteger)
    sum: Mapped[float] = mapped_column(Float)
    min: Mapped[float] = mapped_column(Float)
    max: Mapped[float] = mapped_column(Float)
    last: Mapped[float] = mapped_column(Float)
    last_ts: Mapped[int] = mapped_column(BigInteger)  # epoch ms of ``last``


class MetricRollupWork(Base):
    """A bucket of a series to roll up again. Writers bump ``version``; a node claims the
    row with a lease, recomputes the bucket, and drops the row only if ``version`` is still
    the one it claimed (a write during the rollup leaves it to do again). No foreign key: a
    row of a deleted series finds no points and is dropped."""

    __tablename__ = "metric_rollup_work"
    __table_args__ = (Index(None, "leased_until"),)

    resolution: Mapped[int] = mapped_column(Integer, primary_key=True)  # seconds
    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # epoch s, start
    series_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    leased_until: Mapped[datetime | None]
    leased_by: Mapped[str | None] = mapped_column(String(64))
