"""PostgreSQL databases for tests: cloned from a migrated template, then reset and reused.

``CREATE DATABASE ... TEMPLATE`` and the ``DROP`` after it each copy or remove a whole
database, and the suite needs a database for every PostgreSQL test. A database that a test
has finished with is put back into the template's state instead and handed to the next test:

1. its connections are ended and it is renamed, so a client that the test left behind (a
   worker, a pool) finds no database of that name, as it would have after a ``DROP``;
2. its schema is compared with the template's (tables, columns, constraints, indexes,
   triggers, functions, sequences, settings...): a test that changed it (DDL) leaves a
   database that is dropped, never reused;
3. every table that holds rows is emptied, the template's own rows (seed rows written by
   migrations, ``alembic_version``) are copied back, and every sequence is set as it is in
   the template.

Nothing here names a table: what the template holds is read from it once per run, so new
migrations need no change here. ``tests/integration/test_database_reuse.py`` checks that a
reused database is identical to a fresh clone.
"""

from __future__ import annotations

import asyncio
import io
import threading
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

T = TypeVar("T")

TERMINATE_WAIT_MS = 5_000  # how long to wait for a test's leftover connection to end
RENAME_TRIES = 5  # a leftover pool may reconnect between the terminate and the rename

# Schemas that are PostgreSQL's own; every other schema belongs to the database under test.
USER_SCHEMAS = "n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'"

# One line per schema object, the way PostgreSQL prints its definition; sorted and hashed.
# Sizes and statistics are left out: they change with the rows, not with the schema.
FINGERPRINT_SQL = f"""
SELECT md5(coalesce(string_agg(line, E'\\n' ORDER BY line), '')) FROM (
  SELECT concat_ws(' ', 'schema', n.nspname, n.nspacl::text) AS line
    FROM pg_namespace n WHERE {USER_SCHEMAS}
  UNION ALL
  SELECT concat_ws(' ', 'relation', c.oid::regclass::text, c.relkind, c.relpersistence,
                   c.relrowsecurity, c.relforcerowsecurity, c.relreplident, c.relacl::text,
                   c.reloptions::text)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER_SCHEMAS}
  UNION ALL
  SELECT concat_ws(' ', 'column', a.attrelid::regclass::text, a.attnum, a.attname,
                   format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity,
                   a.attgenerated, a.attcollation, pg_get_expr(d.adbin, d.adrelid))
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
   WHERE {USER_SCHEMAS} AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT concat_ws(' ', 'constraint', co.conrelid::regclass::text, co.contypid::regtype::text,
                   co.conname, pg_get_constraintdef(co.oid), co.condeferrable, co.condeferred)
    FROM pg_constraint co JOIN pg_namespace n ON n.oid = co.connamespace WHERE {USER_SCHEMAS}
  UNION ALL
  SELECT concat_ws(' ', 'index', pg_get_indexdef(i.indexrelid), i.indisvalid)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER_SCHEMAS}
  UNION ALL
  SELECT concat_ws(' ', 'trigger', pg_get_triggerdef(t.oid), t.tgenabled)
    FROM pg_trigger t WHERE NOT t.tgisinternal
  UNION ALL
  SELECT concat_ws(' ', 'function', p.oid::regprocedure::text, p.prokind,
                   md5(p.prosrc), p.proconfig::text, p.prosecdef, p.provolatile)
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {USER_SCHEMAS}
  UNION ALL
  SELECT concat_ws(' ', 'type', t.oid::regtype::text, t.typtype,
                   (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                      FROM pg_enum e WHERE e.enumtypid = t.oid))
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE {USER_SCHEMAS}
  UNION ALL
  SELECT concat_ws(' ', 'sequence', s.seqrelid::regclass::text, s.seqtypid, s.seqstart,
                   s.seqincrement, s.seqmax, s.seqmin, s.seqcache, s.seqcycle)
    FROM pg_sequence s
  UNION ALL
  SELECT concat_ws(' ', 'rule', r.schemaname, r.tablename, r.definition)
    FROM pg_rules r WHERE r.schemaname NOT LIKE 'pg\\_%'
  UNION ALL
  SELECT concat_ws(' ', 'policy', p.polrelid::regclass::text, p.polname, p.polcmd,
                   pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
    FROM pg_policy p
  UNION ALL
  SELECT concat_ws(' ', 'extension', x.extname, x.extversion) FROM pg_extension x
  UNION ALL
  SELECT 'publication ' || pubname FROM pg_publication
  UNION ALL
  SELECT 'large objects ' || count(*) FROM pg_largeobject_metadata
  UNION ALL
  SELECT concat_ws(' ', 'settings', s.setrole::regrole::text, s.setconfig::text)
    FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
   WHERE d.datname = current_database()
  UNION ALL
  SELECT concat_ws(' ', 'database', d.datallowconn, d.datconnlimit, d.datacl::text)
    FROM pg_database d WHERE d.datname = current_database()
) AS schema_lines
"""

# The tables whose rows make up the database's state (a partitioned table stands for its
# partitions), quoted for SQL.
TABLES_SQL = f"""
SELECT format('%I.%I', n.nspname, c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND {USER_SCHEMAS}
 ORDER BY 1
"""

SEQUENCES_SQL = """
SELECT format('%I.%I', schemaname, sequencename), start_value, last_value
  FROM pg_sequences ORDER BY 1
"""


def _digest_sql(table: str) -> str:
    """The md5 of a table's rows, in a fixed order: equal digests, equal rows."""
    return f"SELECT md5(coalesce(string_agg(r::text, E'\\n' ORDER BY r::text), '')) FROM {table} r"


@dataclass(frozen=True)
class Snapshot:
    """What a fresh clone of the template holds: its schema's fingerprint, the rows of its
    tables that have any (binary COPY and a digest each) and each sequence's position; and
    whether the role may reset a database at all (``session_replication_role`` is a
    superuser's: without it every database is dropped after its test, never reused)."""

    fingerprint: str
    tables: tuple[str, ...]
    seed_rows: dict[str, tuple[bytes, str]]
    sequences: tuple[tuple[str, int, int | None], ...]
    resettable: bool


async def take_snapshot(conn: asyncpg.Connection) -> Snapshot:
    """Read ``conn``'s database (the template) as the state every reused database returns to."""
    resettable = await conn.fetchval("SELECT current_setting('is_superuser') = 'on'")
    fingerprint = await conn.fetchval(FINGERPRINT_SQL)
    tables = tuple(row[0] for row in await conn.fetch(TABLES_SQL))
    seed_rows: dict[str, tuple[bytes, str]] = {}
    for table in await _non_empty(conn, tables):
        buffer = io.BytesIO()
        await conn.copy_from_query(f"SELECT * FROM {table}", output=buffer, format="binary")
        seed_rows[table] = (buffer.getvalue(), await conn.fetchval(_digest_sql(table)))
    sequences = tuple((r[0], r[1], r[2]) for r in await conn.fetch(SEQUENCES_SQL))
    return Snapshot(fingerprint, tables, seed_rows, sequences, resettable)


async def _non_empty(conn: asyncpg.Connection, tables: tuple[str, ...]) -> list[str]:
    if not tables:
        return []
    probe = " UNION ALL ".join(
        f"SELECT {i} WHERE EXISTS (SELECT 1 FROM {table})" for i, table in enumerate(tables)
    )
    return [tables[row[0]] for row in await conn.fetch(probe)]


async def restore(conn: asyncpg.Connection, snapshot: Snapshot) -> bool:
    """Put ``conn``'s database back into the snapshot's state; False (and nothing changed)
    when its schema no longer matches the template's, so it must not be reused, or when the
    role may not reset it (``snapshot.resettable``)."""
    if not snapshot.resettable:
        return False
    # The fingerprint covers every relation: equal fingerprints, the snapshot's tables.
    if await conn.fetchval(FINGERPRINT_SQL) != snapshot.fingerprint:
        return False
    filled = await _non_empty(conn, snapshot.tables)
    async with conn.transaction():
        # Without foreign-key checks or user triggers (audit_log's append-only guard):
        # every table that holds a row is emptied, so no reference is left dangling, and
        # seed rows load in any order. DELETE of a few rows is cheaper than TRUNCATE,
        # which makes new files for every table it reaches.
        await conn.execute("SET LOCAL session_replication_role = replica")
        intact: set[str] = set()  # seed tables still holding exactly their seed rows
        for table in filled:
            seed = snapshot.seed_rows.get(table)
            if seed is not None and await conn.fetchval(_digest_sql(table)) == seed[1]:
                intact.add(table)
            else:
                await conn.execute(f"DELETE FROM {table}")
        for table, (rows, _) in snapshot.seed_rows.items():
            if table in intact:
                continue
            schema, _, name = table.rpartition(".")
            await conn.copy_to_table(
                _unquote(name),
                schema_name=_unquote(schema),
                source=io.BytesIO(rows),
                format="binary",
            )
        if snapshot.sequences:
            await conn.execute(
                "SELECT "
                + ", ".join(
                    f"setval('{name}', {last if last is not None else start}, "
                    f"{'true' if last is not None else 'false'})"
                    for name, start, last in snapshot.sequences
                )
            )
    return True


def _unquote(identifier: str) -> str:
    """``%I``'s output back to the name (asyncpg's COPY quotes names itself)."""
    if identifier.startswith('"') and identifier.endswith('"'):
        return identifier[1:-1].replace('""', '"')
    return identifier


class DatabasePool:
    """Databases cloned from ``template`` for one test at a time, reset and reused.

    Every database a test gets has a name never used before in this run. A database given
    back is renamed at once (its connections ended) and reset in the background while the
    next tests run; ``acquire`` waits for a reset under way before it clones a new one. All
    work runs on a thread of the pool's own with its own event loop, so the fixtures may be
    called from inside a test's running loop.
    """

    def __init__(
        self,
        connect: Callable[[str | None], Awaitable[asyncpg.Connection]],
        template: str,
        prefix: str,
    ) -> None:
        self._connect = connect  # a connection to the named database (None: the admin one)
        self._template = template
        self._prefix = prefix
        self._ready: list[str] = []
        self._resets: set[asyncio.Task[None]] = set()
        self._snapshot: Snapshot | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="pg-database-pool", daemon=True
        )
        self._thread.start()

    @property
    def ready(self) -> tuple[str, ...]:
        """The databases reset and waiting for a test."""
        return tuple(self._ready)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _new_name(self) -> str:
        return f"{self._prefix}_{uuid.uuid4().hex[:8]}"

    def acquire(self) -> str:
        """The name of a database in the template's state, for this test alone."""
        return self._run(self._acquire())

    def release(self, name: str) -> str | None:
        """Take back a database a test has finished with: the name it is reset under (it
        joins ``ready`` once reset, or is dropped if its schema changed), or None if it was
        dropped at once (it could not be renamed, or the role may not reset a database)."""
        return self._run(self._release(name))

    def settle(self) -> None:
        """Wait for the resets under way; a reset that failed raises here."""
        self._run(self._settle())

    def close(self) -> None:
        """Drop every database the pool holds and stop its thread."""
        try:
            self._run(self._close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    async def _acquire(self) -> str:
        if self._snapshot is None:
            conn = await self._connect(self._template)
            try:
                self._snapshot = await take_snapshot(conn)
            finally:
                await conn.close()
        while not self._ready and self._resets:
            await self._wait(asyncio.FIRST_COMPLETED)
        if self._ready:
            return self._ready.pop()
        name = self._new_name()
        admin = await self._connect(None)
        try:
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"')
        finally:
            await admin.close()
        return name

    async def _release(self, name: str) -> str | None:
        assert self._snapshot is not None
        renamed = await self._rename(name) if self._snapshot.resettable else None
        if renamed is None:
            await self._drop(name)
            return None
        task = asyncio.create_task(self._reset(renamed))
        self._resets.add(task)
        return renamed

    async def _reset(self, name: str) -> None:
        assert self._snapshot is not None
        try:
            conn = await self._connect(name)
            try:
                reusable = await restore(conn, self._snapshot)
            finally:
                await conn.close()
        except BaseException:
            await self._drop(name)
            raise
        if reusable:
            self._ready.append(name)
        else:
            await self._drop(name)

    async def _wait(self, return_when: str) -> None:
        """Wait for resets under way (the first, or all); a failed one raises here."""
        done, _ = await asyncio.wait(self._resets, return_when=return_when)
        self._resets -= done
        for task in done:
            task.result()

    async def _settle(self) -> None:
        if self._resets:
            await self._wait(asyncio.ALL_COMPLETED)

    async def _rename(self, name: str) -> str | None:
        """``name`` under a new name with no connection left to it; None if that failed."""
        new = self._new_name()
        admin = await self._connect(None)
        try:
            for _ in range(RENAME_TRIES):
                await admin.execute(
                    "SELECT pg_terminate_backend(pid, $2) FROM pg_stat_activity "
                    "WHERE datname = $1 AND pid <> pg_backend_pid()",
                    name,
                    TERMINATE_WAIT_MS,
                )
                try:
                    await admin.execute(f'ALTER DATABASE "{name}" RENAME TO "{new}"')
                except asyncpg.ObjectInUseError:
                    continue
                return new
            return None
        finally:
            await admin.close()

    async def _drop(self, name: str) -> None:
        admin = await self._connect(None)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    async def _close(self) -> None:
        try:
            await self._settle()
        finally:
            while self._ready:
                await self._drop(self._ready.pop())


async def describe(conn: asyncpg.Connection) -> dict[str, Any]:
    """Everything a test could see of ``conn``'s database: its schema's fingerprint, each
    table's row count and rows (as a digest), and each sequence's position."""
    tables = tuple(row[0] for row in await conn.fetch(TABLES_SQL))
    sequences = [row[0] for row in await conn.fetch(SEQUENCES_SQL)]
    return {
        "fingerprint": await conn.fetchval(FINGERPRINT_SQL),
        "tables": {
            table: (
                await conn.fetchval(f"SELECT count(*) FROM {table}"),
                await conn.fetchval(_digest_sql(table)),
            )
            for table in tables
        },
        "sequences": {
            name: tuple(await conn.fetchrow(f"SELECT last_value, is_called FROM {name}"))
            for name in sequences
        },
    }
