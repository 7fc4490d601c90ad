"""Many rows in one statement, without per-row work in SQLAlchemy.

A Core ``insert(table)`` given a list of dicts runs every value of every row through its
column type's bind processor in Python, and PostgreSQL then executes the statement once per
row. On the hot paths (events and their deliveries, finished attempts) that costs more than
the database does. Here the values are converted once, as the column types would convert them:

- PostgreSQL: one statement over ``jsonb_array_elements`` of one JSON parameter holding every
  row (serialized by orjson in C; the server parses it once and casts each field to its
  column's type), so neither SQLAlchemy nor asyncpg encodes values one by one. ``jsonb``, not
  ``json``: the server would parse a ``json`` row again for every field taken from it (1,000
  delivery rows took 25 ms of server time that way, 14 ms as ``jsonb``, key checks aside);
- SQLite: one ``executemany`` of plain tuples, timestamps in the text form SQLAlchemy stores
  (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC).

JSON columns get the text of the engine's serializer on both, as SQLAlchemy's JSON type
stores it (``None`` as JSON ``null``; on SQLite a bare number as a BLOB of its text, see
``engine.sqlite_json_serializer``). Both run on the caller's connection, inside its
transaction, and raise SQLAlchemy's exceptions (``IntegrityError``, ...) as
``Connection.execute`` would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import orjson
from sqlalchemy import JSON, Column, String, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from forecourt.db.base import UTCDateTime
from forecourt.db.engine import json_serializer, sqlite_json_serializer

Convert = Callable[[Any], Any]

IDS_PER_STATEMENT = 500  # ids in one IN (...) list

_UTC_TYPE = UTCDateTime()
_PG_ROWS = "jsonb_array_elements($1::jsonb) AS e"  # each row a JSON array, in column order


@dataclass(frozen=True, slots=True)
class _Statement:
    sql: str
    converters: tuple[Convert | None, ...]  # per parameter, in order
    as_json: bool  # PostgreSQL: all rows as one JSON parameter; SQLite: one tuple per row


async def insert_rows(
    conn: AsyncConnection, table: Table, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Insert ``rows`` (dicts by column key, all with the same keys) into ``table``.

    Columns missing from the rows are NULL; a column with a Python-side default must be given.
    """
    if not rows:
        return
    keys = tuple(rows[0])
    statement = _insert(table, keys, conn.dialect)
    await _run(conn, statement, [[row[key] for key in keys] for row in rows])


async def update_rows(
    conn: AsyncConnection,
    table: Table,
    rows: Sequence[Sequence[Any]],
    *,
    key: str,
    columns: Sequence[str],
    fixed: Mapping[str, str] | None = None,
    guard: tuple[str, Any] | None = None,
    condition: str | None = None,
) -> int:
    """Update one row of ``table`` per item of ``rows``; how many rows matched.

    Each item is ``(key value, *values of columns)``. ``fixed`` sets more columns to SQL
    expressions over the row itself (``{"attempts": "attempts + 1", "lease_owner": "NULL"}``);
    ``guard`` = ``(column, value)`` updates only rows where that column holds that value, and
    ``condition`` (SQL over the row, no parameters) only rows where it holds.
    """
    if not rows:
        return 0
    statement = _update(
        table,
        key,
        tuple(columns),
        tuple(sorted((fixed or {}).items())),
        guard[0] if guard else None,
        condition,
        conn.dialect,
    )
    extra = [guard[1]] if guard else []
    return await _run(conn, statement, [list(row) for row in rows], extra)


# -- running ---------------------------------------------------------------------------------


async def _run(
    conn: AsyncConnection,
    statement: _Statement,
    rows: list[list[Any]],
    extra: Sequence[Any] = (),
) -> int:
    converters = statement.converters
    width = len(rows[0])
    for index in range(width):
        convert = converters[index]
        if convert is not None:
            for row in rows:
                row[index] = convert(row[index])
    if statement.as_json:
        result = await conn.exec_driver_sql(statement.sql, (orjson.dumps(rows).decode(), *extra))
    else:
        params = [(*row, *extra) for row in rows] if extra else [tuple(row) for row in rows]
        result = await conn.exec_driver_sql(statement.sql, params)
    return rowcount(result)


# -- statements, built once per table, columns and database ----------------------------------


@cache
def _insert(table: Table, keys: tuple[str, ...], dialect: Dialect) -> _Statement:
    columns = [table.c[key] for key in keys]
    missing = [
        c.key for c in table.c if c.key not in keys and c.default is not None and not c.primary_key
    ]
    if missing:
        raise ValueError(f"insert_rows into {table.name} needs the columns {missing}")
    postgresql = _postgresql(dialect)
    names = ", ".join(dialect.identifier_preparer.format_column(c) for c in columns)
    target = dialect.identifier_preparer.format_table(table)
    if postgresql:
        fields = ", ".join(_pg_field(c, i, dialect) for i, c in enumerate(columns))
        sql = f"INSERT INTO {target} ({names}) SELECT {fields} FROM {_PG_ROWS}"
    else:
        marks = ", ".join("?" for _ in columns)
        sql = f"INSERT INTO {target} ({names}) VALUES ({marks})"
    converters = tuple(_converter(c, postgresql) for c in columns)
    return _Statement(sql, converters, as_json=postgresql)


@cache
def _update(
    table: Table,
    key: str,
    keys: tuple[str, ...],
    fixed: tuple[tuple[str, str], ...],
    guard: str | None,
    condition: str | None,
    dialect: Dialect,
) -> _Statement:
    postgresql = _postgresql(dialect)
    quote = dialect.identifier_preparer.format_column
    target = dialect.identifier_preparer.format_table(table)
    key_column = table.c[key]
    columns = [table.c[k] for k in keys]
    # Where each row's values come from: fields of the JSON row ``e`` on PostgreSQL,
    # numbered parameters (key, *columns, guard) on SQLite.
    if postgresql:
        values = [_pg_field(c, i, dialect) for i, c in enumerate((key_column, *columns))]
        guard_value, source = "$2", f" FROM {_PG_ROWS}"
    else:
        values = [f"?{i}" for i in range(1, len(columns) + 2)]
        guard_value, source = f"?{len(columns) + 2}", ""
    assignments = [f"{quote(table.c[name])} = {expression}" for name, expression in fixed]
    assignments += [f"{quote(c)} = {v}" for c, v in zip(columns, values[1:], strict=True)]
    where = f"{quote(key_column)} = {values[0]}"
    if guard is not None:
        where += f" AND {quote(table.c[guard])} = {guard_value}"
    if condition is not None:
        where += f" AND ({condition})"
    sql = f"UPDATE {target} SET {', '.join(assignments)}{source} WHERE {where}"
    converters = tuple(_converter(c, postgresql) for c in (key_column, *columns))
    return _Statement(sql, converters, as_json=postgresql)


def _postgresql(dialect: Dialect) -> bool:
    if dialect.name not in ("postgresql", "sqlite"):
        raise ValueError(f"no bulk statements for {dialect.name!r}")
    return dialect.name == "postgresql"


def _pg_field(column: Column[Any], index: int, dialect: Dialect) -> str:
    """Field ``index`` of the row ``e`` as the column's type. Text is not cast: a cast to
    ``VARCHAR(n)`` would cut a long value short where the insert must refuse it."""
    if isinstance(column.type, String):
        return f"(e->>{index})"
    # JSON arrives as its serialized text, and is parsed here.
    return f"(e->>{index})::{column.type.compile(dialect=dialect)}"


def _converter(column: Column[Any], postgresql: bool) -> Convert | None:
    kind = column.type
    if isinstance(kind, JSON):
        serialize = json_serializer if postgresql else sqlite_json_serializer
        return _or_null(serialize) if kind.none_as_null else serialize
    if isinstance(kind, UTCDateTime):
        # On PostgreSQL orjson writes it as RFC 3339.
        return _utc if postgresql else _sqlite_timestamp
    return None


def _or_null(serialize: Convert) -> Convert:
    """``serialize``, with ``None`` as SQL NULL (a JSON column with ``none_as_null``)."""
    return lambda value: None if value is None else serialize(value)


def _utc(value: datetime | None) -> datetime | None:
    """In UTC, as the column type binds it (a naive timestamp is refused)."""
    return _UTC_TYPE.process_bind_param(value, None)  # type: ignore[arg-type]


def _sqlite_timestamp(value: datetime | None) -> str | None:
    """The text SQLAlchemy's SQLite ``DATETIME`` stores for a UTC timestamp."""
    value = _utc(value)
    return None if value is None else value.replace(tzinfo=None).isoformat(" ", "microseconds")


def chunks(items: Sequence[str], size: int = IDS_PER_STATEMENT) -> Iterator[Sequence[str]]:
    """``items`` in slices of at most ``size``: the ids for one ``IN (...)`` list each."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def rowcount(result: Any) -> int:
    """Rows a statement matched; 0 where the driver does not say."""
    count = getattr(result, "rowcount", None)
    return count if isinstance(count, int) and count >= 0 else 0
