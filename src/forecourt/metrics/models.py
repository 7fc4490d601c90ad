"""The metrics store: series, raw points, rollups and the rollup work list.

Times are integers: points in epoch milliseconds, buckets and periods in epoch seconds. A
bucket is then ``ts - ts % width`` in plain SQL on both databases, and the primary keys below
are the only indexes each table needs (docs/metrics.md says why).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from forecourt.db.base import ID_LENGTH, Base, utcnow

NAME_LENGTH = 200
SOURCE_LENGTH = 128
LABELS_KEY_LENGTH = 2048
TOAST_TUPLE_TARGET = 8160  # bytes: PostgreSQL's largest, a row up to a page kept in place


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
    """The buckets of one series at one resolution over one period, packed (buckets.py): a
    1-minute row holds an hour's 60 buckets, a 1-hour row a day's 24, as arrays of count,
    sum, min, max, last and mean. Buckets compose through count and sum; the mean is there
    to be read as it is.

    A row is about 2 KB, more than an index b-tree page keeps in place (about 1,000 bytes on
    4 KiB pages), so on SQLite this is an ordinary (rowid) table: a WITHOUT ROWID one would
    spill every row into an overflow page."""

    __tablename__ = "metric_buckets"
    # PostgreSQL compresses, then moves out of line, the columns of a row past 2 KB; a row
    # here is 2.7 KB and read whole by every query, so it stays in place, uncompressed.
    __table_args__ = ({"postgresql_with": {"toast_tuple_target": TOAST_TUPLE_TARGET}},)

    series_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("metric_series.id", ondelete="CASCADE"), primary_key=True
    )
    resolution: Mapped[int] = mapped_column(Integer, primary_key=True)  # seconds
    period: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # epoch s, start
    counts: Mapped[bytes] = mapped_column(LargeBinary)
    sums: Mapped[bytes] = mapped_column(LargeBinary)
    mins: Mapped[bytes] = mapped_column(LargeBinary)
    maxs: Mapped[bytes] = mapped_column(LargeBinary)
    lasts: Mapped[bytes] = mapped_column(LargeBinary)
    means: Mapped[bytes] = mapped_column(LargeBinary)  # sum / count, the average as read


class MetricRollupWork(Base):
    """Buckets of a series to roll up again: the row (resolution, period, series) and, in
    ``slots``, a bit per bucket of it. Writers OR their buckets' bits in and bump
    ``version``; a node claims the entry with a lease, recomputes those buckets, and drops
    the entry only if ``version`` is still the one it claimed (a write during the rollup
    leaves it to do again). No foreign key: an entry of a deleted series finds no row."""

    __tablename__ = "metric_rollup_work"
    __table_args__ = (Index(None, "leased_until"),)

    resolution: Mapped[int] = mapped_column(Integer, primary_key=True)  # seconds
    period: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # epoch s, start
    series_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slots: Mapped[int] = mapped_column(BigInteger)  # bit i: the period's bucket i
    version: Mapped[int] = mapped_column(Integer, default=1)
    leased_until: Mapped[datetime | None]
    leased_by: Mapped[str | None] = mapped_column(String(64))
