"""attempts without their redundant foreign keys; no (tenant, created) index on deliveries

An attempt's tenant and endpoint are those of its delivery, whose own keys keep them and
whose deletion (with its endpoint's, or its tenant's) removes the attempt: checking them
again cost the database about 5 us per key for every attempt row. No query
reads deliveries by tenant and time without their endpoint, so that index only cost every
write of a delivery.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_webhook_deliveries_tenant_id_created_at", table_name="webhook_deliveries")
    # On SQLite this rebuilds webhook_attempts, which no other table references.
    with op.batch_alter_table("webhook_attempts", schema=None) as batch_op:
        batch_op.drop_constraint("fk_webhook_attempts_tenant_id_tenants", type_="foreignkey")
        batch_op.drop_constraint(
            "fk_webhook_attempts_endpoint_id_webhook_endpoints", type_="foreignkey"
        )


def downgrade() -> None:
    with op.batch_alter_table("webhook_attempts", schema=None) as batch_op:
        batch_op.create_foreign_key(
            "fk_webhook_attempts_endpoint_id_webhook_endpoints",
            "webhook_endpoints",
            ["endpoint_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_foreign_key(
            "fk_webhook_attempts_tenant_id_tenants",
            "tenants",
            ["tenant_id"],
            ["id"],
            ondelete="CASCADE",
        )
    op.create_index(
        "ix_webhook_deliveries_tenant_id_created_at",
        "webhook_deliveries",
        ["tenant_id", "created_at"],
        unique=False,
    )
