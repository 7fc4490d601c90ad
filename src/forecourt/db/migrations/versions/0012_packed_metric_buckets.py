"""metric rollups packed a period to a row: ``metric_buckets`` replaces ``metric_rollups``

One row per series, resolution and period (an hour of 1-minute buckets, a day of 1-hour
buckets) holds the period's buckets as little-endian arrays: counts (unsigned 32-bit) and
sums, mins, maxs, lasts and means (64-bit floats); a count of 0 is an empty bucket. On
PostgreSQL the rows stay in place, uncompressed (``toast_tuple_target``). The rollup work
list is keyed by the same row, with a bit per bucket to recompute (``slots``).

Existing buckets and work entries are converted both ways. Going down, a bucket's ``last_ts``
(which the packed layout does not keep: buckets are ordered by their time) becomes the
bucket's start, which orders the buckets' lasts the same way.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

from forecourt.db.base import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

PERIOD_S = {60: 3600, 3600: 86_400}
SWAP = sys.byteorder != "little"
FIELDS = ("counts", "sums", "mins", "maxs", "lasts", "means")
INSERT_BATCH = 1_000


def _pack(code: str, values: list[Any]) -> bytes:
    packed = array(code, values)
    if SWAP:
        packed.byteswap()
    return packed.tobytes()


def _unpack(code: str, blob: bytes) -> list[Any]:
    values = array(code)
    values.frombytes(blob)
    if SWAP:
        values.byteswap()
    return values.tolist()


def _work_table(new: bool) -> None:
    columns = [
        sa.Column("resolution", sa.Integer(), nullable=False),
        sa.Column("period" if new else "bucket", sa.BigInteger(), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=False),
    ]
    if new:
        columns.append(sa.Column("slots", sa.BigInteger(), nullable=False))
    op.create_table(
        "metric_rollup_work",
        *columns,
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("leased_until", UTCDateTime(), nullable=True),
        sa.Column("leased_by", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint(
            "resolution",
            "period" if new else "bucket",
            "series_id",
            name=op.f("pk_metric_rollup_work"),
        ),
    )
    op.create_index(
        op.f("ix_metric_rollup_work_leased_until"),
        "metric_rollup_work",
        ["leased_until"],
        unique=False,
    )


def _drop_work_table() -> None:
    op.drop_index(op.f("ix_metric_rollup_work_leased_until"), table_name="metric_rollup_work")
    op.drop_table("metric_rollup_work")


def _batches(rows: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= INSERT_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _series_ids(bind: sa.Connection, table: str) -> list[int]:
    return list(bind.execute(sa.text(f"SELECT DISTINCT series_id FROM {table}")).scalars())


def upgrade() -> None:
    bind = op.get_bind()
    buckets = op.create_table(
        "metric_buckets",
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("resolution", sa.Integer(), nullable=False),
        sa.Column("period", sa.BigInteger(), nullable=False),
        sa.Column("counts", sa.LargeBinary(), nullable=False),
        sa.Column("sums", sa.LargeBinary(), nullable=False),
        sa.Column("mins", sa.LargeBinary(), nullable=False),
        sa.Column("maxs", sa.LargeBinary(), nullable=False),
        sa.Column("lasts", sa.LargeBinary(), nullable=False),
        sa.Column("means", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["series_id"],
            ["metric_series.id"],
            name=op.f("fk_metric_buckets_series_id_metric_series"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "series_id", "resolution", "period", name=op.f("pk_metric_buckets")
        ),
        postgresql_with={"toast_tuple_target": 8160},
    )
    assert buckets is not None
    for sid in _series_ids(bind, "metric_rollups"):
        rows = bind.execute(
            sa.text(
                "SELECT resolution, bucket, count, sum, min, max, last FROM metric_rollups "
                "WHERE series_id = :sid ORDER BY resolution, bucket"
            ),
            {"sid": sid},
        )
        for batch in _batches(_packed_rows(sid, rows)):
            bind.execute(buckets.insert(), batch)
    op.drop_table("metric_rollups")

    work = list(
        bind.execute(sa.text("SELECT resolution, bucket, series_id FROM metric_rollup_work"))
    )
    _drop_work_table()
    _work_table(new=True)
    entries: dict[tuple[int, int, int], int] = {}
    for resolution, bucket, sid in work:
        width = PERIOD_S[resolution]
        key = (resolution, bucket - bucket % width, sid)
        entries[key] = entries.get(key, 0) | 1 << (bucket % width) // resolution
    table = sa.table(
        "metric_rollup_work",
        sa.column("resolution"),
        sa.column("period"),
        sa.column("series_id"),
        sa.column("slots"),
        sa.column("version"),
    )
    for batch in _batches(
        {"resolution": r, "period": p, "series_id": s, "slots": bits, "version": 1}
        for (r, p, s), bits in sorted(entries.items())
    ):
        bind.execute(table.insert(), batch)


def _packed_rows(sid: int, rows: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """Old rows of one series, ordered by (resolution, bucket), as packed rows."""
    current: tuple[int, int] | None = None
    arrays: dict[str, list[Any]] = {}
    for resolution, bucket, count, total, low, high, last in rows:
        width = PERIOD_S[resolution]
        key = (resolution, bucket - bucket % width)
        if key != current:
            if current is not None:
                yield _row(sid, current, arrays)
            current = key
            slots = width // resolution
            arrays = {"counts": [0] * slots, **{f: [0.0] * slots for f in FIELDS[1:]}}
        slot = (bucket % width) // resolution
        arrays["counts"][slot] = count
        arrays["sums"][slot] = total
        arrays["mins"][slot] = low
        arrays["maxs"][slot] = high
        arrays["lasts"][slot] = last
        arrays["means"][slot] = total / count
    if current is not None:
        yield _row(sid, current, arrays)


def _row(sid: int, key: tuple[int, int], arrays: dict[str, list[Any]]) -> dict[str, Any]:
    return {
        "series_id": sid,
        "resolution": key[0],
        "period": key[1],
        **{f: _pack("I" if f == "counts" else "d", arrays[f]) for f in FIELDS},
    }


def downgrade() -> None:
    bind = op.get_bind()
    rollups = op.create_table(
        "metric_rollups",
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("resolution", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("sum", sa.Float(), nullable=False),
        sa.Column("min", sa.Float(), nullable=False),
        sa.Column("max", sa.Float(), nullable=False),
        sa.Column("last", sa.Float(), nullable=False),
        sa.Column("last_ts", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["series_id"],
            ["metric_series.id"],
            name=op.f("fk_metric_rollups_series_id_metric_series"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "series_id", "resolution", "bucket", name=op.f("pk_metric_rollups")
        ),
        sqlite_with_rowid=False,
    )
    assert rollups is not None
    for sid in _series_ids(bind, "metric_buckets"):
        rows = bind.execute(
            sa.text(
                "SELECT resolution, period, counts, sums, mins, maxs, lasts, means "
                "FROM metric_buckets "
                "WHERE series_id = :sid ORDER BY resolution, period"
            ),
            {"sid": sid},
        )
        for batch in _batches(_unpacked_rows(sid, rows)):
            bind.execute(rollups.insert(), batch)
    op.drop_table("metric_buckets")

    work = list(
        bind.execute(sa.text("SELECT resolution, period, series_id, slots FROM metric_rollup_work"))
    )
    _drop_work_table()
    _work_table(new=False)
    table = sa.table(
        "metric_rollup_work",
        sa.column("resolution"),
        sa.column("bucket"),
        sa.column("series_id"),
        sa.column("version"),
    )
    entries = [
        {"resolution": r, "bucket": p + slot * r, "series_id": s, "version": 1}
        for r, p, s, bits in work
        for slot in range(PERIOD_S[r] // r)
        if bits >> slot & 1
    ]
    for batch in _batches(entries):
        bind.execute(table.insert(), batch)


def _unpacked_rows(sid: int, rows: Iterable[Any]) -> Iterator[dict[str, Any]]:
    for resolution, period, *blobs in rows:
        counts, sums, mins, maxs, lasts, _ = (
            _unpack("I" if f == "counts" else "d", blob)
            for f, blob in zip(FIELDS, blobs, strict=True)
        )
        for slot, count in enumerate(counts):
            if count:
                bucket = period + slot * resolution
                yield {
                    "series_id": sid,
                    "resolution": resolution,
                    "bucket": bucket,
                    "count": count,
                    "sum": sums[slot],
                    "min": mins[slot],
                    "max": maxs[slot],
                    "last": lasts[slot],
                    "last_ts": bucket * 1000,
                }
