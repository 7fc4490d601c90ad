"""the metrics store: series, raw points, 1-minute and 1-hour rollups, the rollup work list

Points and rollups are keyed by (series, time) and, on SQLite, stored WITHOUT ROWID: the key
is the table, so the history of one series over a range is one contiguous read and no second
index is written per point (docs/metrics.md).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from forecourt.db.base import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "metric_series",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=128), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("labels_key", sa.String(length=2048), nullable=False),
        sa.Column("first_ts", sa.BigInteger(), nullable=True),
        sa.Column("last_ts", sa.BigInteger(), nullable=True),
        sa.Column("last_value", sa.Float(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_metric_series_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metric_series")),
        sa.UniqueConstraint(
            "tenant_id",
            "name",
            "source",
            "labels_key",
            name=op.f("uq_metric_series_tenant_id_name_source_labels_key"),
        ),
    )
    op.create_index(
        op.f("ix_metric_series_tenant_id_source"),
        "metric_series",
        ["tenant_id", "source"],
        unique=False,
    )
    op.create_table(
        "metric_points",
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["series_id"],
            ["metric_series.id"],
            name=op.f("fk_metric_points_series_id_metric_series"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("series_id", "ts", name=op.f("pk_metric_points")),
        sqlite_with_rowid=False,
    )
    op.create_table(
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
    op.create_table(
        "metric_rollup_work",
        sa.Column("resolution", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("leased_until", UTCDateTime(), nullable=True),
        sa.Column("leased_by", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint(
            "resolution", "bucket", "series_id", name=op.f("pk_metric_rollup_work")
        ),
    )
    op.create_index(
        op.f("ix_metric_rollup_work_leased_until"),
        "metric_rollup_work",
        ["leased_until"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_metric_rollup_work_leased_until"), table_name="metric_rollup_work")
    op.drop_table("metric_rollup_work")
    op.drop_table("metric_rollups")
    op.drop_table("metric_points")
    op.drop_index(op.f("ix_metric_series_tenant_id_source"), table_name="metric_series")
    op.drop_table("metric_series")
