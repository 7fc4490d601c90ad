"""Migration 0013 on a database holding sessions (SQLite and PostgreSQL): a session belongs
to a user or to an API key, exactly one; a key's sessions go with the key; going down deletes
the keys' sessions and keeps the users'."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from test_migrations import empty_engine

from forecourt.db import migrate
from forecourt.db.base import UTCDateTime

__all__ = ["empty_engine"]  # the fixture, shared with test_migrations

NOW = datetime(2026, 12, 2, tzinfo=UTC)

tenants = sa.table(
    "tenants",
    *(sa.column(n, sa.String) for n in ("id", "slug", "name")),
    sa.column("created_at", UTCDateTime()),
)
users = sa.table(
    "users",
    *(sa.column(n, sa.String) for n in ("id", "tenant_id", "email", "name", "password_hash")),
    sa.column("role", sa.String),
    sa.column("created_at", UTCDateTime()),
    sa.column("updated_at", UTCDateTime()),
)
keys = sa.table(
    "api_keys",
    *(sa.column(n, sa.String) for n in ("id", "tenant_id", "name", "description")),
    *(sa.column(n, sa.String) for n in ("environment", "prefix", "key_hash", "tier")),
    sa.column("scopes", sa.JSON),
    sa.column("rate_limits", sa.JSON),
    sa.column("created_at", UTCDateTime()),
    sa.column("updated_at", UTCDateTime()),
)
sessions = sa.table(
    "user_sessions",
    *(sa.column(n, sa.String) for n in ("id", "tenant_id", "user_id", "key_id")),
    *(sa.column(n, sa.String) for n in ("token_hash", "csrf_token")),
    sa.column("created_at", UTCDateTime()),
    sa.column("expires_at", UTCDateTime()),
)


def session_row(session_id: str, **holder: str | None) -> dict[str, object]:
    return {
        "id": session_id,
        "tenant_id": "ten_1",
        "token_hash": session_id.ljust(64, "0"),
        "csrf_token": "csrf",
        "created_at": NOW,
        "expires_at": NOW + timedelta(hours=1),
        **holder,
    }


async def ids(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set((await conn.scalars(sa.select(sessions.c.id))).all())


async def test_0013_sessions_of_users_or_keys(empty_engine: AsyncEngine) -> None:
    await migrate.upgrade(empty_engine, "0012")
    async with empty_engine.begin() as conn:
        await conn.execute(
            sa.insert(tenants).values(id="ten_1", slug="t", name="t", created_at=NOW)
        )
        await conn.execute(
            sa.insert(users).values(
                id="usr_1",
                tenant_id="ten_1",
                email="a@example.com",
                name="",
                password_hash="x",
                role="owner",
                created_at=NOW,
                updated_at=NOW,
            )
        )
        await conn.execute(
            sa.insert(keys).values(
                id="key_1",
                tenant_id="ten_1",
                name="k",
                description="",
                environment="live",
                prefix="fck_live_abc",
                key_hash="h" * 64,
                tier="free",
                scopes=["events:read"],
                rate_limits={},
                created_at=NOW,
                updated_at=NOW,
            )
        )
        await conn.execute(sa.insert(sessions).values(session_row("ses_user", user_id="usr_1")))
    await migrate.upgrade(empty_engine)
    await migrate.check(empty_engine)
    async with empty_engine.begin() as conn:
        await conn.execute(sa.insert(sessions).values(session_row("ses_key", key_id="key_1")))
    for holder in ({}, {"user_id": "usr_1", "key_id": "key_1"}):
        with pytest.raises(IntegrityError):
            async with empty_engine.begin() as conn:
                await conn.execute(sa.insert(sessions).values(session_row("ses_bad", **holder)))
    assert await ids(empty_engine) == {"ses_user", "ses_key"}

    await migrate.downgrade(empty_engine, "0012")
    assert await ids(empty_engine) == {"ses_user"}
    await migrate.upgrade(empty_engine)
    async with empty_engine.begin() as conn:
        await conn.execute(sa.insert(sessions).values(session_row("ses_key2", key_id="key_1")))
        # The key's sessions go with the key.
        await conn.execute(sa.delete(keys).where(keys.c.id == "key_1"))
    assert await ids(empty_engine) == {"ses_user"}
