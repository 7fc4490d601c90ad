"""Migration 0007 on a database holding rows (SQLite and PostgreSQL): the first owner key
becomes the operator, built-ins wait per tenant, the default tenant keeps its host
permissions, tenant deletion takes its audit entries with it; and down again."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from test_migrations import empty_engine

from forecourt.db import migrate
from forecourt.db.base import UTCDateTime

__all__ = ["empty_engine"]  # the fixture, shared with test_migrations

NOW = datetime(2026, 11, 30, tzinfo=UTC)
NOT_IN_USE = "not in use yet"

tenants = sa.table(
    "tenants",
    sa.column("id", sa.String),
    sa.column("slug", sa.String),
    sa.column("name", sa.String),
    sa.column("created_at", UTCDateTime()),
)
keys = sa.table(
    "api_keys",
    *(sa.column(n, sa.String) for n in ("id", "tenant_id", "name", "description")),
    *(sa.column(n, sa.String) for n in ("environment", "prefix", "key_hash", "tier")),
    sa.column("created_by", sa.String),
    sa.column("scopes", sa.JSON),
    sa.column("rate_limits", sa.JSON),
    sa.column("created_at", UTCDateTime()),
    sa.column("updated_at", UTCDateTime()),
)
plugins = sa.table(
    "plugins",
    *(sa.column(n, sa.String) for n in ("id", "plugin_id", "version", "name", "description")),
    *(sa.column(n, sa.String) for n in ("type", "runtime", "sha256", "status", "package_path")),
    sa.column("disabled_reason", sa.String),
    sa.column("manifest", sa.JSON),
    sa.column("event_types", sa.JSON),
    sa.column("size_bytes", sa.Integer),
    *(sa.column(n, sa.Boolean) for n in ("signed", "builtin", "enabled")),
    sa.column("installed_at", UTCDateTime()),
    sa.column("updated_at", UTCDateTime()),
)
instances = sa.table(
    "plugin_instances",
    *(sa.column(n, sa.String) for n in ("id", "tenant_id", "plugin_version_id", "plugin_id")),
    *(sa.column(n, sa.String) for n in ("version", "plugin_type", "name", "description")),
    sa.column("config", sa.JSON),
    sa.column("event_types", sa.JSON),
    sa.column("enabled", sa.Boolean),
    sa.column("created_at", UTCDateTime()),
    sa.column("updated_at", UTCDateTime()),
)
audit = sa.table(
    "audit_log",
    *(sa.column(n, sa.String) for n in ("id", "tenant_id", "actor_type", "action", "target_type")),
    sa.column("created_at", UTCDateTime()),
)


@pytest.fixture
def engine(empty_engine: AsyncEngine) -> AsyncEngine:
    """An engine on an empty database of its own (test_migrations.empty_engine)."""
    return empty_engine


def key_row(key_id: str, tenant_id: str, name: str, created_by: str | None) -> dict[str, Any]:
    return {
        "id": key_id,
        "tenant_id": tenant_id,
        "name": name,
        "description": "",
        "environment": "live",
        "prefix": key_id,
        "key_hash": key_id.ljust(64, "0"),
        "tier": "free",
        "created_by": created_by,
        "scopes": ["admin"],
        "rate_limits": {},
        "created_at": NOW,
        "updated_at": NOW,
    }


def plugin_row(row_id: str, plugin_id: str, builtin: bool, reason: str | None) -> dict[str, Any]:
    return {
        "id": row_id,
        "plugin_id": plugin_id,
        "version": "1.0.0",
        "name": plugin_id,
        "description": "",
        "type": "export",
        "runtime": "python",
        "sha256": "0" * 64,
        "status": "ready",
        "package_path": f"plugins/{plugin_id}/1.0.0",
        "disabled_reason": reason,
        "manifest": {},
        "event_types": [],
        "size_bytes": 1,
        "signed": False,
        "builtin": builtin,
        "enabled": reason is None,
        "installed_at": NOW,
        "updated_at": NOW,
    }


async def seed(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(tenants),
            [
                {"id": "ten_default", "slug": "default", "name": "Default", "created_at": NOW},
                {"id": "ten_other", "slug": "other", "name": "Other", "created_at": NOW},
            ],
        )
        await conn.execute(
            sa.insert(keys),
            [
                key_row("key_owner", "ten_default", "owner", None),
                key_row("key_made", "ten_default", "owner", "key_owner"),  # made by someone
                key_row("key_other", "ten_other", "owner", None),  # another tenant's
            ],
        )
        await conn.execute(
            sa.insert(plugins),
            [
                plugin_row("plg_unused", "forecourt.unused", True, NOT_IN_USE),
                plugin_row("plg_used", "forecourt.used", True, None),
                plugin_row("plg_off", "com.example.off", False, "disabled by key key_owner"),
            ],
        )
        await conn.execute(
            sa.insert(instances),
            {
                "id": "pin_1",
                "tenant_id": "ten_other",
                "plugin_version_id": "plg_used",
                "plugin_id": "forecourt.used",
                "version": "1.0.0",
                "plugin_type": "export",
                "name": "used",
                "description": "",
                "config": {},
                "event_types": [],
                "enabled": True,
                "created_at": NOW,
                "updated_at": NOW,
            },
        )
        await conn.execute(
            sa.insert(audit),
            [
                {
                    "id": f"aud_{tenant}",
                    "tenant_id": tenant,
                    "actor_type": "system",
                    "action": "test.recorded",
                    "target_type": "test",
                    "created_at": NOW,
                }
                for tenant in ("ten_default", "ten_other")
            ],
        )


async def scopes(engine: AsyncEngine) -> dict[str, list[str]]:
    async with engine.connect() as conn:
        found = (await conn.execute(sa.select(keys.c.id, keys.c.scopes))).all()
    return {key_id: list(value) for key_id, value in found}


async def plugin_states(engine: AsyncEngine) -> dict[str, tuple[bool, str | None]]:
    async with engine.connect() as conn:
        found = await conn.execute(
            sa.select(plugins.c.plugin_id, plugins.c.enabled, plugins.c.disabled_reason)
        )
        return {plugin_id: (bool(on), reason) for plugin_id, on, reason in found}


async def rows(engine: AsyncEngine, sql: str) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        return [tuple(r) for r in (await conn.execute(sa.text(sql))).all()]


async def test_upgrade_and_downgrade_with_rows(engine: AsyncEngine) -> None:
    await migrate.upgrade(engine, "0006")
    await seed(engine)
    await migrate.upgrade(engine, "0007")

    assert await scopes(engine) == {
        "key_owner": ["admin", "system:admin"],
        "key_made": ["admin"],
        "key_other": ["admin"],
    }
    assert await plugin_states(engine) == {
        "forecourt.unused": (True, None),  # now waits per tenant
        "forecourt.used": (True, None),
        "com.example.off": (False, "disabled by key key_owner"),
    }
    assert await rows(engine, "SELECT tenant_id, plugin_id, enabled FROM plugin_tenant_states") == [
        ("ten_other", "forecourt.used", True)
    ]
    approvals = await rows(engine, "SELECT tenant_id, permission FROM host_approvals")
    assert sorted(approvals) == [("ten_default", "host_metrics"), ("ten_default", "unix_sockets")]
    assert await rows(engine, "SELECT available_to_all FROM plugins") == [(True,)] * 3
    assert await rows(engine, "SELECT suspended_at FROM tenants") == [(None,), (None,)]

    # The log stays append-only, but a tenant's deletion takes its entries along.
    for statement in ("UPDATE audit_log SET action = 'forged'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with engine.begin() as conn:
                await conn.execute(sa.text(statement))
    async with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        await conn.execute(sa.text("DELETE FROM tenants WHERE id = 'ten_other'"))
    assert await rows(engine, "SELECT tenant_id FROM audit_log") == [("ten_default",)]
    assert await rows(engine, "SELECT count(*) FROM plugin_tenant_states") == [(0,)]

    await migrate.downgrade(engine, "0006")
    assert await scopes(engine) == {"key_owner": ["admin"], "key_made": ["admin"]}
    states = await plugin_states(engine)
    assert states["forecourt.unused"] == (False, NOT_IN_USE)
    with pytest.raises(DBAPIError, match="append-only"):
        async with engine.begin() as conn:
            await conn.execute(sa.text("DELETE FROM audit_log"))
    await migrate.upgrade(engine)
    await migrate.check(engine)
