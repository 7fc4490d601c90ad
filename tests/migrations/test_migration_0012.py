"""Migration 0012 (rollups packed a period to a row) keeps every bucket and every pending
rollup at 0011 through the upgrade and the downgrade, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from test_migrations import empty_engine

from forecourt.db import migrate
from forecourt.metrics.buckets import counts_of, values_of

__all__ = ["empty_engine"]  # the fixture, shared with test_migrations

HOUR = 1_764_000_000 // 86_400 * 86_400 + 5 * 3600  # 05:00 of a day, in epoch s
# (series, resolution, bucket, count, sum, min, max, last) at 0011.
OLD_BUCKETS = [
    (1, 60, HOUR, 3, 6.0, 1.0, 3.0, 3.0),
    (1, 60, HOUR + 59 * 60, 1, -2.5, -2.5, -2.5, -2.5),
    (1, 60, HOUR + 3600, 2, 1.0, 0.25, 0.75, 0.25),
    (1, 3600, HOUR, 4, 3.5, -2.5, 3.0, -2.5),
    (2, 60, HOUR + 7 * 60, 5, 50.0, 1.0, 20.0, 9.0),
]
OLD_WORK = [(60, HOUR + 60, 1), (60, HOUR + 120, 1), (60, HOUR + 7 * 60, 2), (3600, HOUR, 1)]


async def _seed(engine: AsyncEngine) -> None:
    now = datetime(2026, 12, 2, tzinfo=UTC)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO tenants (id, slug, name, created_at) VALUES ('ten_x', 'x', 'x', :now)"
            ),
            {"now": now},
        )
        for sid in (1, 2):
            await conn.execute(
                text(
                    "INSERT INTO metric_series (id, tenant_id, name, source, labels, labels_key, "
                    "created_at) VALUES (:id, 'ten_x', 'm', 'app', '{}', :key, :now)"
                ),
                {"id": sid, "key": f'{{"n":"{sid}"}}', "now": now},
            )
        await conn.execute(
            text(
                "INSERT INTO metric_rollups (series_id, resolution, bucket, count, sum, min, "
                "max, last, last_ts) VALUES (:s, :r, :b, :c, :sum, :lo, :hi, :last, :lt)"
            ),
            [
                dict(zip(("s", "r", "b", "c", "sum", "lo", "hi", "last"), row, strict=True))
                | {"lt": row[2] * 1000 + 1}
                for row in OLD_BUCKETS
            ],
        )
        await conn.execute(
            text(
                "INSERT INTO metric_rollup_work (resolution, bucket, series_id, version) "
                "VALUES (:r, :b, :s, 3)"
            ),
            [{"r": r, "b": b, "s": s} for r, b, s in OLD_WORK],
        )


async def _rows(engine: AsyncEngine, statement: str) -> list[Any]:
    async with engine.connect() as conn:
        return [tuple(row) for row in await conn.execute(text(statement))]


async def test_buckets_and_work_survive_the_upgrade_and_the_downgrade(
    empty_engine: AsyncEngine,
) -> None:
    await migrate.upgrade(empty_engine, "0011")
    await _seed(empty_engine)
    await migrate.upgrade(empty_engine, "0012")

    unpacked = []
    for sid, resolution, period, *blobs in await _rows(
        empty_engine,
        "SELECT series_id, resolution, period, counts, sums, mins, maxs, lasts, means "
        "FROM metric_buckets",
    ):
        counts = counts_of(blobs[0])
        assert len(counts) == (60 if resolution == 60 else 24)
        sums, mins, maxs, lasts, means = (values_of(b) for b in blobs[1:])
        for slot, count in enumerate(counts):
            if count:
                bucket = period + slot * resolution
                values = (sums[slot], mins[slot], maxs[slot], lasts[slot])
                unpacked.append((sid, resolution, bucket, count, *values))
                assert means[slot] == sums[slot] / count
    assert sorted(unpacked) == sorted(OLD_BUCKETS)
    work = await _rows(
        empty_engine, "SELECT resolution, period, series_id, slots FROM metric_rollup_work"
    )
    day = HOUR - HOUR % 86_400
    assert sorted(work) == [(60, HOUR, 1, 0b110), (60, HOUR, 2, 1 << 7), (3600, day, 1, 1 << 5)]

    await migrate.downgrade(empty_engine, "0011")
    back = await _rows(
        empty_engine,
        "SELECT series_id, resolution, bucket, count, sum, min, max, last FROM metric_rollups",
    )
    assert sorted(back) == sorted(OLD_BUCKETS)
    work = await _rows(empty_engine, "SELECT resolution, bucket, series_id FROM metric_rollup_work")
    assert sorted(work) == sorted(OLD_WORK)
