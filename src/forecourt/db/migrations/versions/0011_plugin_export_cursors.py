"""where each metrics exporter instance's last successful export ended

``plugin_export_cursors``: one row per exporter instance (deleted with it), the time (epoch
ms) and series id of the last point it sent; moved only after a successful run.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from forecourt.db.base import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "plugin_export_cursors",
        sa.Column("instance_id", sa.String(length=40), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["plugin_instances.id"],
            name=op.f("fk_plugin_export_cursors_instance_id_plugin_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("instance_id", name=op.f("pk_plugin_export_cursors")),
    )


def downgrade() -> None:
    op.drop_table("plugin_export_cursors")
