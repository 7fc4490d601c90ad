"""tenants that can be suspended; plugins per tenant; the operator's scope and approvals

- ``tenants.suspended_at``: while set, none of the tenant's keys or sessions is accepted.
- ``plugins.available_to_all`` and ``plugin_grants``: the tenants a plugin is available to.
- ``plugin_tenant_states``: a tenant's own switch for an installed plugin. A built-in used to
  be enabled for every tenant by any tenant's first instance; now it is enabled for the
  tenants that have an instance of it (rows made here), and the installation-wide switch of
  the built-ins still waiting for a first instance is turned on (they wait per tenant now).
- ``host_approvals``: the operator's approval, per tenant, of the permissions that reach the
  host (``host_metrics``, ``unix_sockets``). The default tenant (the operator's own) gets
  both, as it could use them before; any other tenant asks the operator.
- The audit log stays append-only, except that deleting a tenant deletes its entries with
  it (a DELETE of an entry whose tenant row is gone, as ON DELETE CASCADE does).
- The first start's owner key (named ``owner``, created by no one, in the default tenant)
  gets ``system:admin``: it is the installation's operator.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from forecourt.db.base import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SYSTEM_ADMIN = "system:admin"
HOST_PERMISSIONS = ("host_metrics", "unix_sockets")
NOT_IN_USE = "not in use yet"

_tenants = sa.table("tenants", sa.column("id", sa.String), sa.column("slug", sa.String))
_keys = sa.table(
    "api_keys",
    sa.column("id", sa.String),
    sa.column("tenant_id", sa.String),
    sa.column("name", sa.String),
    sa.column("created_by", sa.String),
    sa.column("scopes", sa.JSON),
)


def _owner_keys(bind: sa.engine.Connection) -> list[tuple[str, list[str]]]:
    rows = bind.execute(
        sa.select(_keys.c.id, _keys.c.scopes)
        .join(_tenants, _tenants.c.id == _keys.c.tenant_id)
        .where(
            _tenants.c.slug == "default",
            _keys.c.name == "owner",
            _keys.c.created_by.is_(None),
        )
    ).all()
    return [(key_id, list(scopes or [])) for key_id, scopes in rows]


def _audit_log_deletes(with_tenant: bool) -> None:
    """Refuse every DELETE of an audit entry, or (``with_tenant``) every one but those of a
    tenant being deleted (its row already gone: the cascade)."""
    if op.get_bind().dialect.name == "postgresql":
        cascade = (
            "IF TG_OP = 'DELETE' AND NOT EXISTS "
            "(SELECT 1 FROM tenants WHERE id = OLD.tenant_id) THEN RETURN OLD; END IF;"
            if with_tenant
            else ""
        )
        op.execute(
            f"""
            CREATE OR REPLACE FUNCTION forecourt_audit_log_append_only() RETURNS trigger AS $$
            BEGIN
                {cascade}
                RAISE EXCEPTION 'audit_log is append-only';
            END;
            $$ LANGUAGE plpgsql
            """
        )
        return
    op.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
    when = (
        "WHEN EXISTS (SELECT 1 FROM tenants WHERE tenants.id = OLD.tenant_id) "
        if with_tenant
        else ""
    )
    op.execute(
        f"CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log {when}"
        "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
    )


def upgrade() -> None:
    _audit_log_deletes(with_tenant=True)
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("suspended_at", UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table("plugins", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("available_to_all", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
    op.create_table(
        "plugin_grants",
        sa.Column("plugin_id", sa.String(length=100), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_plugin_grants_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("plugin_id", "tenant_id", name=op.f("pk_plugin_grants")),
    )
    op.create_table(
        "plugin_tenant_states",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("plugin_id", sa.String(length=100), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.String(length=200), nullable=True),
        sa.Column("held_instances", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_plugin_tenant_states_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "plugin_id", name=op.f("pk_plugin_tenant_states")),
    )
    op.create_table(
        "host_approvals",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("permission", sa.String(length=32), nullable=False),
        sa.Column("approved_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_host_approvals_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "permission", name=op.f("pk_host_approvals")),
    )

    bind = op.get_bind()
    now = datetime.now(UTC)
    for key_id, scopes in _owner_keys(bind):
        if SYSTEM_ADMIN not in scopes:
            bind.execute(
                _keys.update()
                .where(_keys.c.id == key_id)
                .values(scopes=sorted({*scopes, SYSTEM_ADMIN}))
            )
    default = bind.scalar(sa.select(_tenants.c.id).where(_tenants.c.slug == "default"))
    if default is not None:
        approvals = sa.table(
            "host_approvals",
            sa.column("tenant_id", sa.String),
            sa.column("permission", sa.String),
            sa.column("approved_at", UTCDateTime(timezone=True)),
        )
        op.bulk_insert(
            approvals,
            [{"tenant_id": default, "permission": p, "approved_at": now} for p in HOST_PERMISSIONS],
        )
    # Tenants with an instance of a built-in keep it enabled; then built-ins wait per tenant.
    in_use = bind.execute(
        sa.text(
            "SELECT DISTINCT i.tenant_id, i.plugin_id FROM plugin_instances i "
            "JOIN plugins p ON p.id = i.plugin_version_id WHERE p.builtin"
        )
    ).all()
    if in_use:
        states = sa.table(
            "plugin_tenant_states",
            sa.column("tenant_id", sa.String),
            sa.column("plugin_id", sa.String),
            sa.column("enabled", sa.Boolean),
            sa.column("held_instances", sa.JSON),
            sa.column("updated_at", UTCDateTime(timezone=True)),
        )
        op.bulk_insert(
            states,
            [
                {
                    "tenant_id": tenant_id,
                    "plugin_id": plugin_id,
                    "enabled": True,
                    "held_instances": [],
                    "updated_at": now,
                }
                for tenant_id, plugin_id in in_use
            ],
        )
    bind.execute(
        sa.text(
            "UPDATE plugins SET enabled = :on, disabled_reason = NULL "
            "WHERE builtin AND disabled_reason = :reason"
        ).bindparams(on=True, reason=NOT_IN_USE)
    )


def downgrade() -> None:
    _audit_log_deletes(with_tenant=False)
    bind = op.get_bind()
    # Built-ins no tenant has enabled wait for a first instance again, installation-wide.
    bind.execute(
        sa.text(
            "UPDATE plugins SET enabled = :off, disabled_reason = :reason WHERE builtin "
            "AND plugin_id NOT IN (SELECT plugin_id FROM plugin_tenant_states WHERE enabled)"
        ).bindparams(off=False, reason=NOT_IN_USE)
    )
    for key_id, scopes in _owner_keys(bind):
        if SYSTEM_ADMIN in scopes:
            bind.execute(
                _keys.update()
                .where(_keys.c.id == key_id)
                .values(scopes=[s for s in scopes if s != SYSTEM_ADMIN])
            )
    op.drop_table("host_approvals")
    op.drop_table("plugin_tenant_states")
    op.drop_table("plugin_grants")
    with op.batch_alter_table("plugins", schema=None) as batch_op:
        batch_op.drop_column("available_to_all")
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("suspended_at")
