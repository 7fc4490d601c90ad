"""The PostgreSQL databases that tests reuse (tests/database_pool.py) are handed back
identical to a fresh clone of the migrated template: same schema, same rows in every table,
same sequence positions; a database whose schema a test changed is dropped instead."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from conftest import REDIS_URL, RUN_ID, _pg_dsn, admin_sql, pg_url
from database_pool import DatabasePool, describe
from forecourt.app import create_app
from forecourt.core import Forecourt
from forecourt.settings import OWNER_KEY_FILE, Settings

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture(autouse=True)
async def _reusing_role() -> None:
    """Only a superuser may reset a database (database_pool.Snapshot.resettable); under any
    other role every database is dropped after its test and there is no reuse to check."""
    admin = await asyncpg.connect(_pg_dsn())
    try:
        superuser = await admin.fetchval("SELECT current_setting('is_superuser') = 'on'")
    finally:
        await admin.close()
    if not superuser:
        pytest.skip("the PostgreSQL role of the tests is no superuser: databases are not reused")


async def state(database: str) -> dict[str, Any]:
    conn = await asyncpg.connect(_pg_dsn(database))
    try:
        return await describe(conn)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def fresh_clone(template: str) -> AsyncIterator[str]:
    name = f"fct_{RUN_ID}_fresh"
    admin_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield name
    finally:
        admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def use_like_a_test(database: str, data_dir: Path, redis_prefix: str) -> asyncpg.Connection:
    """What tests do to a database: a node's first start, keys, tenants, events, webhooks;
    then every sequence advanced, the seed rows changed, and a connection left open inside
    a transaction that holds locks."""
    settings = Settings(
        database_url=pg_url(database),
        redis_url=REDIS_URL,
        redis_prefix=redis_prefix,
        data_dir=data_dir,
        secret_key="reuse-secret-" + RUN_ID,
        webhook_allow_private="127.0.0.0/8",  # nothing listens on port 9: deliveries fail
    )
    fc = Forecourt(settings)
    await fc.start()
    app = create_app(settings, forecourt=fc)
    owner = (data_dir / OWNER_KEY_FILE).read_text().strip()
    headers = {"Authorization": f"Bearer {owner}"}
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            for body, path in [
                ({"name": "k", "scopes": ["events:publish"]}, "/api/v1/keys"),
                ({"slug": "acme", "name": "Acme"}, "/api/v1/tenants"),
                ({"name": "order.paid"}, "/api/v1/event-types"),
                ({"type": "order.paid", "data": {"amount": 1}}, "/api/v1/events"),
                ({"url": "http://127.0.0.1:9/hook", "event_types": []}, "/api/v1/webhooks"),
            ]:
                response = await c.post(path, json=body, headers=headers)
                assert response.status_code in (201, 202), response.text
    finally:
        await fc.stop()
    conn = await asyncpg.connect(_pg_dsn(database))
    for (name,) in await conn.fetch(
        "SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences"
    ):
        await conn.fetchval(f"SELECT nextval('{name}')")
    await conn.execute("UPDATE alembic_version SET version_num = 'changed'")
    await conn.close()


async def test_a_reused_database_is_identical_to_a_fresh_clone(
    pg_pool: DatabasePool, pg_template: str, tmp_path: Path, redis_prefix: str
) -> None:
    name = pg_pool.acquire()
    async with fresh_clone(pg_template) as fresh:
        expected = await state(fresh)
    assert await state(name) == expected
    assert expected["sequences"], "the template has sequences to check"

    await use_like_a_test(name, tmp_path / "data", redis_prefix)
    used = await state(name)
    assert used["fingerprint"] == expected["fingerprint"]
    assert used["tables"] != expected["tables"]
    assert used["sequences"] != expected["sequences"]
    # A test may leave a connection open, inside a transaction that holds locks.
    left_open = await asyncpg.connect(_pg_dsn(name))
    await left_open.execute("BEGIN; LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE")

    try:
        reused = pg_pool.release(name)
    finally:
        left_open.terminate()
    assert reused is not None
    assert reused != name, "a reused database gets a new name"
    with pytest.raises(asyncpg.InvalidCatalogNameError):  # a leftover client finds nothing
        await asyncpg.connect(_pg_dsn(name))
    pg_pool.settle()
    assert reused in pg_pool.ready, "a database used only through the app is reused"
    assert await state(reused) == expected
    assert pg_pool.acquire() == reused
    again = pg_pool.release(reused)
    assert again not in (None, reused)
    assert pg_pool.acquire() == again, "the next test waits for the reset under way"
    pg_pool.release(again)


@pytest.mark.parametrize(
    "ddl",
    [
        "CREATE TABLE extra (x integer)",
        "ALTER TABLE alembic_version ADD COLUMN extra integer",
        "CREATE INDEX extra ON alembic_version (version_num DESC)",
        "ALTER TABLE audit_log DISABLE TRIGGER USER",
        "CREATE SEQUENCE extra",
        "CREATE SCHEMA extra",
        "CREATE FUNCTION extra() RETURNS integer LANGUAGE sql AS 'SELECT 1'",
    ],
)
async def test_a_database_whose_schema_changed_is_dropped(pg_pool: DatabasePool, ddl: str) -> None:
    name = pg_pool.acquire()
    conn = await asyncpg.connect(_pg_dsn(name))
    try:
        await conn.execute(ddl)
    finally:
        await conn.close()
    renamed = pg_pool.release(name)
    pg_pool.settle()
    assert renamed not in pg_pool.ready
    admin = await asyncpg.connect(_pg_dsn())
    try:
        left = await admin.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname LIKE $1", f"fct_{RUN_ID}_%"
        )
        ready = await admin.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname = ANY($1::text[])",
            list(pg_pool.ready),
        )
    finally:
        await admin.close()
    assert left == ready + 1, "only the template and the reusable databases remain"
