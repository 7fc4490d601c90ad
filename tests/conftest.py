"""Shared fixtures: every integration test runs on SQLite and on PostgreSQL + Redis.

PostgreSQL and Redis are real servers (FORECOURT_TEST_POSTGRES_URL, FORECOURT_TEST_REDIS_URL;
defaults: the local ones). A test that needs one it cannot reach fails with a clear message.
Each test gets its own database (PostgreSQL: cloned from a migrated template made once per
run, then reset to the template's state and reused under a new name, see database_pool.py) and
its own Redis key prefix, so runs never collide.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy.engine import make_url

from database_pool import DatabasePool
from forecourt.app import create_app
from forecourt.core import Forecourt
from forecourt.settings import OWNER_KEY_FILE, SQLITE_FILE, Settings

POSTGRES_URL = os.environ.get(
    "FORECOURT_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("FORECOURT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN_ID = uuid.uuid4().hex[:10]
TEMPLATE_DB = f"fct_{RUN_ID}_template"
REDIS_START_TIMEOUT_S = 5.0


def _pg_dsn(database: str | None = None) -> str:
    url = make_url(POSTGRES_URL).set(drivername="postgresql")
    if database:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)


def pg_url(database: str) -> str:
    return make_url(POSTGRES_URL).set(database=database).render_as_string(hide_password=False)


async def _pg_admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(_pg_dsn(), timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_URL} ({exc}); start it or set "
            "FORECOURT_TEST_POSTGRES_URL",
            pytrace=False,
        )


async def _check_redis() -> None:
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except (OSError, aioredis.RedisError) as exc:
        pytest.fail(
            f"Redis is not reachable at {REDIS_URL} ({exc}); start it or set "
            "FORECOURT_TEST_REDIS_URL",
            pytrace=False,
        )
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A database migrated once per run; each test clones it."""
    from forecourt.db import migrate
    from forecourt.db.engine import create_engine

    async def make() -> None:
        admin = await _pg_admin()
        try:
            await admin.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
        finally:
            await admin.close()
        engine = create_engine(pg_url(TEMPLATE_DB), poolclass=_null_pool())
        try:
            await migrate.upgrade(engine)
        finally:
            await engine.dispose()

    _in_thread(make)
    yield TEMPLATE_DB

    async def drop() -> None:
        admin = await _pg_admin()
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
        finally:
            await admin.close()

    _in_thread(drop)


def _in_thread(fn: Any) -> Any:
    """Run a coroutine function to completion on a loop of its own (fixtures may be called
    from inside the test's running loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, fn()).result()


def _null_pool() -> Any:
    from sqlalchemy.pool import NullPool

    return NullPool


def admin_sql(sql: str) -> None:
    """Run one statement on the PostgreSQL server as the admin connection (CREATE DATABASE...)."""

    async def run() -> None:
        admin = await _pg_admin()
        try:
            await admin.execute(sql)
        finally:
            await admin.close()

    _in_thread(run)


async def _pg_connect(database: str | None) -> asyncpg.Connection:
    """A connection to ``database`` (None: the server's admin database)."""
    if database is None:
        return await _pg_admin()
    return await asyncpg.connect(_pg_dsn(database), timeout=5)


@pytest.fixture(scope="session")
def pg_pool(pg_template: str) -> Iterator[DatabasePool]:
    """Databases cloned from the template, reset and handed to the next test (database_pool.py)."""
    pool = DatabasePool(_pg_connect, pg_template, f"fct_{RUN_ID}")
    yield pool
    pool.close()


@pytest.fixture
def pg_database(pg_pool: DatabasePool) -> Iterator[str]:
    """A migrated PostgreSQL database in the template's state, for this test alone (its name
    is new; no other test uses it meanwhile); its SQLAlchemy URL."""
    name = pg_pool.acquire()
    yield pg_url(name)
    pg_pool.release(name)


@pytest.fixture
def empty_pg_database() -> Iterator[str]:
    """A brand-new PostgreSQL database with no tables at all; its SQLAlchemy URL."""
    name = f"fct_{RUN_ID}_empty_{uuid.uuid4().hex[:8]}"
    admin_sql(f'CREATE DATABASE "{name}"')
    yield pg_url(name)
    admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted afterwards."""
    _in_thread(_check_redis)
    prefix = f"fct:{RUN_ID}:{uuid.uuid4().hex[:8]}:"
    yield prefix

    async def clean() -> None:
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            keys = [k async for k in client.scan_iter(match=prefix + "*", count=500)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()

    _in_thread(clean)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """Which storage the test runs on: "sqlite" (embedded) or "postgres" (+ Redis)."""
    return str(request.param)


@pytest.fixture
def settings_factory(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """Builds Settings for this test's backend; extra keyword arguments override fields."""
    overrides: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "secret_key": "test-secret-" + RUN_ID,
    }
    if backend == "postgres":
        overrides["database_url"] = request.getfixturevalue("pg_database")
        overrides["redis_url"] = REDIS_URL
        overrides["redis_prefix"] = request.getfixturevalue("redis_prefix")

    def make(**extra: Any) -> Settings:
        return Settings(**{**overrides, **extra})

    return make


@dataclass
class Harness:
    """A started Forecourt with an HTTP client on its ASGI app and the owner key."""

    fc: Forecourt
    client: httpx.AsyncClient
    owner_key: str

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.owner_key}"}

    async def create_key(self, scopes: list[str], **fields: Any) -> dict[str, Any]:
        response = await self.client.post(
            "/api/v1/keys",
            json={"name": "test", "scopes": scopes, **fields},
            headers=self.auth(),
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def create_tenant(self, slug: str, name: str | None = None) -> dict[str, Any]:
        """A tenant made by the operator (the owner key): its body, with its first admin key."""
        response = await self.client.post(
            "/api/v1/tenants", json={"slug": slug, "name": name or slug}, headers=self.auth()
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body


def problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    """The RFC 9457 body of ``response``, asserted to be of ``status`` and problem ``slug``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:forecourt:problem:{slug}", body
    return body


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated once per run, which a harness on SQLite starts on a copy of
    (as one on PostgreSQL starts on a clone of ``pg_template``); a first start on an empty
    file is tested by tests/migrations, test_data_dir_modes and tests/e2e."""
    from sqlalchemy.pool import NullPool

    from forecourt.db import migrate
    from forecourt.db.engine import create_engine

    path = tmp_path_factory.mktemp("sqlite-template") / SQLITE_FILE

    async def make() -> None:
        engine = create_engine(f"sqlite+aiosqlite:///{path}", poolclass=NullPool)
        try:
            await migrate.upgrade(engine)
        finally:
            await engine.dispose()

    _in_thread(make)
    # The last connection's close wrote the WAL back: the one file holds the database.
    assert not Path(f"{path}-wal").exists(), "the SQLite template kept a write-ahead log"
    return path


@pytest.fixture
async def harness_factory(
    settings_factory: Any, backend: str, request: pytest.FixtureRequest
) -> AsyncIterator[Any]:
    """Start one or more Forecourt nodes (same database) for a test; all stopped after it.

    On SQLite, a node in the test's own data folder starts on a copy of the migrated
    ``sqlite_template`` instead of migrating an empty file (most of a first start's time);
    a node given a ``data_dir`` or a ``database_url`` starts as it is. ``run_workers=False``
    starts an API-only node, as ``forecourt serve --no-workers`` does.
    """
    started: list[Harness] = []
    template: Path | None = None
    if backend == "sqlite":
        template = request.getfixturevalue("sqlite_template")

    async def start(*, run_workers: bool = True, **settings_overrides: Any) -> Harness:
        settings = settings_factory(**settings_overrides)
        database = settings.data_dir / SQLITE_FILE
        seed = (
            template is not None
            and settings.is_sqlite
            and not {"data_dir", "database_url"} & settings_overrides.keys()
            and not database.exists()
        )
        fc = Forecourt(settings)
        if seed and template is not None and database.exists() and not database.stat().st_size:
            # The engine made the file empty and private and has not opened it yet.
            database.write_bytes(template.read_bytes())
        await fc.start(run_workers=run_workers)
        app = create_app(settings, forecourt=fc)
        transport = httpx.ASGITransport(
            app=app, raise_app_exceptions=False, client=("127.0.0.1", 50000)
        )
        client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        owner = (settings.data_dir / OWNER_KEY_FILE).read_text().strip()
        harness = Harness(fc, client, owner)
        started.append(harness)
        return harness

    yield start
    for harness in reversed(started):
        await harness.client.aclose()
        await harness.fc.stop()


@pytest.fixture
async def harness(harness_factory: Any) -> Harness:
    """One started Forecourt node on this test's backend."""
    result: Harness = await harness_factory()
    return result


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def start_redis_server(port: int) -> asyncio.subprocess.Process:
    """A throwaway redis-server on ``port`` (no persistence), answering PING when returned."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not on PATH; this test needs it (apt install redis-server)")
    process = await asyncio.create_subprocess_exec(
        binary,
        *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
        *("--daemonize", "no"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    probe = aioredis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2)
    try:
        deadline = asyncio.get_running_loop().time() + REDIS_START_TIMEOUT_S
        while True:
            try:
                await probe.ping()
                return process
            except (aioredis.RedisError, OSError) as exc:
                if asyncio.get_running_loop().time() > deadline:
                    await stop_process(process)
                    pytest.fail(f"redis-server on port {port} did not start: {exc}")
                await asyncio.sleep(0.02)
    finally:
        await probe.aclose()


async def stop_process(process: asyncio.subprocess.Process) -> None:
    """Kill ``process`` (if still running) and reap it."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    await process.wait()
