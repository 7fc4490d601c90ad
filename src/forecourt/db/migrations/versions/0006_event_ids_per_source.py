"""event ids unique per (tenant, source, id), as CloudEvents specifies

Two sources may publish the same id; one source may not publish it twice.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_constraint("uq_events_tenant_id_ce_id", type_="unique")
        batch_op.create_unique_constraint(
            "uq_events_tenant_id_source_ce_id", ["tenant_id", "source", "ce_id"]
        )


def downgrade() -> None:
    # Refuses (unique violation) if two sources already share an id: nothing is dropped.
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_constraint("uq_events_tenant_id_source_ce_id", type_="unique")
        batch_op.create_unique_constraint("uq_events_tenant_id_ce_id", ["tenant_id", "ce_id"])
