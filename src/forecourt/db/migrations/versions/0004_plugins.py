"""plugins: installed versions and their packages, instances, executions, the event queue

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import forecourt.db.base

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

QUEUE_WAITING_SQL = "lease_owner IS NULL"
QUEUE_LEASED_SQL = "lease_owner IS NOT NULL"


def upgrade() -> None:
    op.create_table(
        "plugins",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("plugin_id", sa.String(length=100), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("runtime", sa.String(length=16), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=True),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("event_types", sa.JSON(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("signed", sa.Boolean(), nullable=False),
        sa.Column("publisher", sa.String(length=200), nullable=True),
        sa.Column("builtin", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_detail", sa.Text(), nullable=True),
        sa.Column("package_path", sa.String(length=512), nullable=False),
        sa.Column("source_dir", sa.Text(), nullable=True),
        sa.Column("installed_at", forecourt.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", forecourt.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plugins")),
        sa.UniqueConstraint("plugin_id", "version", name=op.f("uq_plugins_plugin_id_version")),
    )
    op.create_table(
        "plugin_archives",
        sa.Column("plugin_version_id", sa.String(length=40), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["plugin_version_id"],
            ["plugins.id"],
            name=op.f("fk_plugin_archives_plugin_version_id_plugins"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("plugin_version_id", name=op.f("pk_plugin_archives")),
    )
    op.create_table(
        "plugin_instances",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("plugin_version_id", sa.String(length=40), nullable=False),
        sa.Column("plugin_id", sa.String(length=100), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("plugin_type", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("event_types", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("next_run_at", forecourt.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.String(length=16), nullable=True),
        sa.Column("created_at", forecourt.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", forecourt.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["plugin_version_id"],
            ["plugins.id"],
            name=op.f("fk_plugin_instances_plugin_version_id_plugins"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_plugin_instances_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plugin_instances")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_plugin_instances_tenant_id_name")),
    )
    with op.batch_alter_table("plugin_instances", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_plugin_instances_next_run_at"), ["next_run_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_plugin_instances_plugin_version_id"), ["plugin_version_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_plugin_instances_tenant_id_plugin_type"),
            ["tenant_id", "plugin_type"],
            unique=False,
        )

    op.create_table(
        "plugin_event_queue",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("instance_id", sa.String(length=40), nullable=False),
        sa.Column("event_id", sa.String(length=40), nullable=False),
        sa.Column("event_type", sa.String(length=128), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", forecourt.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", forecourt.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("created_at", forecourt.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["events.id"],
            name=op.f("fk_plugin_event_queue_event_id_events"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["plugin_instances.id"],
            name=op.f("fk_plugin_event_queue_instance_id_plugin_instances"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_plugin_event_queue_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plugin_event_queue")),
    )
    with op.batch_alter_table("plugin_event_queue", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_plugin_event_queue_event_id"), ["event_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_plugin_event_queue_instance_id"), ["instance_id"], unique=False
        )
        batch_op.create_index(
            "ix_plugin_event_queue_leased",
            ["lease_expires_at"],
            unique=False,
            postgresql_where=sa.text(QUEUE_LEASED_SQL),
            sqlite_where=sa.text(QUEUE_LEASED_SQL),
        )
        batch_op.create_index(
            "ix_plugin_event_queue_waiting",
            ["next_attempt_at"],
            unique=False,
            postgresql_where=sa.text(QUEUE_WAITING_SQL),
            sqlite_where=sa.text(QUEUE_WAITING_SQL),
        )

    op.create_table(
        "plugin_executions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("instance_id", sa.String(length=40), nullable=True),
        sa.Column("plugin_id", sa.String(length=100), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=40), nullable=True),
        sa.Column("started_at", forecourt.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Double(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error_class", sa.String(length=200), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("logs", sa.Text(), nullable=False),
        sa.Column("cpu_ms", sa.Double(), nullable=True),
        sa.Column("max_rss_kib", sa.Integer(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["plugin_instances.id"],
            name=op.f("fk_plugin_executions_instance_id_plugin_instances"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_plugin_executions_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plugin_executions")),
    )
    with op.batch_alter_table("plugin_executions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_plugin_executions_instance_id_started_at"),
            ["instance_id", "started_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_plugin_executions_started_at"), ["started_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_plugin_executions_tenant_id_plugin_id_started_at"),
            ["tenant_id", "plugin_id", "started_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("plugin_executions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_plugin_executions_tenant_id_plugin_id_started_at"))
        batch_op.drop_index(batch_op.f("ix_plugin_executions_started_at"))
        batch_op.drop_index(batch_op.f("ix_plugin_executions_instance_id_started_at"))

    op.drop_table("plugin_executions")
    with op.batch_alter_table("plugin_event_queue", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_plugin_event_queue_waiting",
            postgresql_where=sa.text(QUEUE_WAITING_SQL),
            sqlite_where=sa.text(QUEUE_WAITING_SQL),
        )
        batch_op.drop_index(
            "ix_plugin_event_queue_leased",
            postgresql_where=sa.text(QUEUE_LEASED_SQL),
            sqlite_where=sa.text(QUEUE_LEASED_SQL),
        )
        batch_op.drop_index(batch_op.f("ix_plugin_event_queue_instance_id"))
        batch_op.drop_index(batch_op.f("ix_plugin_event_queue_event_id"))

    op.drop_table("plugin_event_queue")
    with op.batch_alter_table("plugin_instances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_plugin_instances_tenant_id_plugin_type"))
        batch_op.drop_index(batch_op.f("ix_plugin_instances_plugin_version_id"))
        batch_op.drop_index(batch_op.f("ix_plugin_instances_next_run_at"))

    op.drop_table("plugin_instances")
    op.drop_table("plugin_archives")
    op.drop_table("plugins")
