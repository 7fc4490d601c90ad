"""A migration that fails, up or down, leaves the database as it was (no ``_alembic_tmp_*``
table, no half of a migration), on SQLite as on PostgreSQL; and a downgrade that rebuilds a
referenced table runs with SQLite's foreign keys off, as the upgrade does, so the rows that
reference it stay.

The migrations run from a copy of Forecourt's scripts plus one more, written by each test.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from test_migrations import empty_engine

import forecourt.db
from forecourt.db import migrate
from forecourt.db.engine import create_sessionmaker
from forecourt.ids import new_id
from forecourt.plugins.models import Plugin, PluginArchive
from forecourt.tenants.models import Tenant

__all__ = ["empty_engine"]  # the fixture, shared with test_migrations

EXTRA = "9001"
SQLITE_MASTER = "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master"
HEADER = """
import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{down}"
branch_labels = None
depends_on = None
"""
# Up: a new table, then a column no existing row can have: the table rebuild (SQLite) or the
# ALTER (PostgreSQL) fails on the row that is there.
FAILS_UP = """
def upgrade():
    op.create_table("leftover", sa.Column("id", sa.Integer, primary_key=True))
    with op.batch_alter_table("plugins") as batch:
        batch.add_column(sa.Column("required", sa.String(10), nullable=False))


def downgrade():
    pass
"""
# Up and down both work; the downgrade rebuilds ``plugins`` on SQLite.
WORKS = """
def upgrade():
    op.create_table("extra_things", sa.Column("id", sa.Integer, primary_key=True))
    with op.batch_alter_table("plugins") as batch:
        batch.add_column(sa.Column("note", sa.String(10)))


def downgrade():
    with op.batch_alter_table("plugins") as batch:
        batch.drop_column("note")
    op.drop_table("extra_things")
"""
FAILS_DOWN = WORKS.replace(
    '    op.drop_table("extra_things")\n',
    '    op.drop_table("extra_things")\n'
    '    raise RuntimeError("this downgrade fails on purpose")\n',
)


@pytest.fixture
def scripts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Point migrations at a copy of Forecourt's scripts; returns a function that adds one
    more script (after the current head) and returns that head."""
    source = Path(forecourt.db.__file__).parent / "migrations"
    copy = tmp_path / "migrations"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(migrate, "SCRIPT_LOCATION", str(copy))

    def add(body: str) -> str:
        head = ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()
        assert head is not None
        script = HEADER.format(revision=EXTRA, down=head) + body
        (copy / "versions" / f"{EXTRA}_extra.py").write_text(script)
        return head

    return add


def _schema(sync: Connection) -> dict[str, Any]:
    found = inspect(sync)
    return {
        table: {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"]) for c in found.get_columns(table)
            ],
            "indexes": sorted(
                (i["name"] or "", i["column_names"], bool(i["unique"]))
                for i in found.get_indexes(table)
            ),
            "foreign_keys": sorted(str(fk) for fk in found.get_foreign_keys(table)),
        }
        for table in sorted(found.get_table_names())
    }


async def state(engine: AsyncEngine) -> dict[str, Any]:
    """The schema, the revision and the rows these tests write."""
    async with engine.connect() as conn:
        schema = await conn.run_sync(_schema)
        revision = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
        tenants = (await conn.execute(select(Tenant.id, Tenant.slug, Tenant.name))).all()
        plugins = (await conn.execute(select(Plugin.id, Plugin.plugin_id))).all()
        archives = (await conn.execute(select(PluginArchive.plugin_version_id))).all()
        sqlite: list[Any] = []
        if engine.dialect.name == "sqlite":  # every table, index and trigger, as written
            sqlite = list((await conn.execute(text(SQLITE_MASTER))).all())
    return {
        "sqlite_master": sorted(sqlite),
        "schema": schema,
        "revision": revision,
        "tenants": sorted(tenants),
        "plugins": sorted(plugins),
        "archives": sorted(archives),
    }


async def add_rows(engine: AsyncEngine) -> None:
    """A tenant; a plugin, and a row that references it with ON DELETE CASCADE."""
    async with create_sessionmaker(engine)() as session:
        session.add(Tenant(id=new_id("ten"), slug="rows", name="Rows"))
        plugin = Plugin(
            id=new_id("plg"),
            plugin_id="com.example.rows",
            version="1.0.0",
            name="Rows",
            type="transformation",
            runtime="python",
            manifest={},
            event_types=[],
            sha256="0" * 64,
            size_bytes=1,
            signed=False,
            package_path="plugins/com.example.rows/1.0.0",
        )
        session.add(plugin)
        await session.flush()
        session.add(PluginArchive(plugin_version_id=plugin.id, data=b"zip"))
        await session.commit()


async def test_a_failed_upgrade_leaves_the_database_as_it_was(
    empty_engine: AsyncEngine, scripts: Any
) -> None:
    await migrate.upgrade(empty_engine)
    await add_rows(empty_engine)
    before = await state(empty_engine)
    scripts(FAILS_UP)

    with pytest.raises(Exception, match="required"):
        await migrate.upgrade(empty_engine)

    after = await state(empty_engine)
    assert after == before
    assert not [t for t in after["schema"] if t.startswith("_alembic_tmp")]
    if empty_engine.dialect.name == "sqlite":
        async with empty_engine.connect() as conn:
            assert await conn.scalar(text("PRAGMA foreign_keys")) == 1


async def test_a_failed_downgrade_leaves_the_database_as_it_was(
    empty_engine: AsyncEngine, scripts: Any
) -> None:
    head = scripts(FAILS_DOWN)
    await migrate.upgrade(empty_engine)
    await add_rows(empty_engine)
    before = await state(empty_engine)
    assert before["revision"] == [(EXTRA,)] and "extra_things" in before["schema"]

    with pytest.raises(RuntimeError, match="on purpose"):
        await migrate.downgrade(empty_engine, head)

    assert await state(empty_engine) == before


async def test_a_downgrade_rebuilds_a_referenced_table_with_foreign_keys_off(
    empty_engine: AsyncEngine, scripts: Any
) -> None:
    head = scripts(WORKS)
    await migrate.upgrade(empty_engine)
    await add_rows(empty_engine)
    up = await state(empty_engine)
    assert ("note", "VARCHAR(10)", True) in up["schema"]["plugins"]["columns"]

    await migrate.downgrade(empty_engine, head)

    down = await state(empty_engine)
    assert down["revision"] == [(head,)]
    assert "extra_things" not in down["schema"]
    assert "note" not in {name for name, _, _ in down["schema"]["plugins"]["columns"]}
    # Rebuilding ``plugins`` dropped the old table: with foreign keys on, that would have
    # deleted the archives that reference it.
    assert down["plugins"] == up["plugins"] and down["archives"] == up["archives"]
    assert down["archives"] != []
