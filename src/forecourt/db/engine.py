"""Engines and session factories for SQLite (aiosqlite) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from forecourt.settings import chmod_private, create_private_file, ensure_private_dir

SQLITE_BUSY_TIMEOUT_MS = 10_000
PG_POOL_SIZE = 40
PG_MAX_OVERFLOW = 20


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _closed_to_pool(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """A pooled PostgreSQL connection that the server closed (a restart, a terminated
    backend) is replaced at checkout instead of failing the first statement.

    asyncpg notices the server's close as soon as it arrives, so asking costs no round trip,
    where ``pool_pre_ping`` costs three (BEGIN, a query, ROLLBACK) on every checkout. A
    connection lost without a close (a network cut) fails its next statement, and the pool
    then replaces every connection older than that failure.
    """
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("the server closed this connection")


def json_serializer(value: Any) -> str:
    """JSON columns through orjson; what orjson refuses (e.g. integer keys) as ``json`` would
    write it."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


def sqlite_json_serializer(value: Any) -> str | bytes:
    """``json_serializer`` for SQLite, where a JSON column has NUMERIC affinity: a bare number
    stored as text would be turned into SQLite's own integer or real (``1.0`` into ``1``,
    ``2**64-1`` into a rounded real), so it is stored as a BLOB of its JSON text, kept as is."""
    text = json_serializer(value)
    return text.encode() if text[:1] in _NUMBER_START else text


_NUMBER_START = frozenset("-0123456789")


def json_deserializer(value: str | bytes | int | float) -> Any:
    """JSON columns back: text or a BLOB of JSON text; a number that SQLite converted (a row
    stored before numbers were kept as BLOBs) as it is. An integer past 64 bits, from a row
    written before the codec's limits, comes back as orjson reads it: a float (unlike
    ``codec.loads_stored``, which re-reads such a document exactly)."""
    if isinstance(value, int | float):
        return value
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:  # e.g. a lone surrogate written before the codec's limits
        return json.loads(value)


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout."""
    kwargs.setdefault("json_deserializer", json_deserializer)
    # Statement parameters hold secrets (CSRF tokens, header values): never in an error
    # message or a log line.
    kwargs.setdefault("hide_parameters", True)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        kwargs.setdefault("json_serializer", sqlite_json_serializer)
        files: tuple[Path, ...] = ()
        if parsed.database and parsed.database != ":memory:":
            # The database file is created 0600 before SQLite opens it; SQLite gives its
            # -wal and -shm files the database's mode, and each connection re-checks them.
            database = Path(parsed.database)
            ensure_private_dir(database.parent)  # creates; leaves an existing folder alone
            create_private_file(database)
            files = (database, Path(f"{database}-wal"), Path(f"{database}-shm"))
        engine = create_async_engine(url, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        if files:

            def _private_files(_dbapi_connection: Any, _record: Any) -> None:
                for path in files:
                    chmod_private(path)

            event.listen(engine.sync_engine, "connect", _private_files)
        return engine
    kwargs.setdefault("json_serializer", json_serializer)
    if "poolclass" not in kwargs:
        # Room for the API's requests and the delivery worker's transactions without
        # opening and closing overflow connections under load.
        kwargs.setdefault("pool_size", PG_POOL_SIZE)
        kwargs.setdefault("max_overflow", PG_MAX_OVERFLOW)
    engine = create_async_engine(url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        event.listen(engine.sync_engine, "checkout", _closed_to_pool)
    return engine


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
