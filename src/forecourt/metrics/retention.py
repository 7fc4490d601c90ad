"""Retention per resolution: raw points, 1-minute and 1-hour buckets older than their
setting are deleted series by series, at most ``batch`` rows per statement (each its own
transaction), through the tables' keys (series, time): no pass reads the whole table and no
transaction holds more than one batch. Buckets go a row at a time, once the row's whole
period (an hour of minutes, a day of hours) is past retention; the counts returned are
raw points and rows of buckets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from forecourt.db.base import utcnow
from forecourt.db.gate import WriteGate
from forecourt.metrics.buckets import DAY_S, HOUR_S, MINUTE_S, PERIOD_S
from forecourt.metrics.models import MetricSeries

SERIES_PER_READ = 1_000

_RAW = text(
    "DELETE FROM metric_points WHERE series_id = :sid AND ts IN ("
    "SELECT ts FROM metric_points WHERE series_id = :sid AND ts < :cutoff "
    "ORDER BY ts LIMIT :n)"
)
# A row of buckets goes once its whole period is past retention.
_ROLLUP = text(
    "DELETE FROM metric_buckets WHERE series_id = :sid AND resolution = :resolution "
    "AND period IN (SELECT period FROM metric_buckets WHERE series_id = :sid "
    "AND resolution = :resolution AND period <= :cutoff ORDER BY period LIMIT :n)"
)


@dataclass(frozen=True, slots=True)
class Retention:
    raw_days: int
    minute_days: int
    hour_days: int


async def prune(
    engine: AsyncEngine,
    gate: WriteGate,
    retention: Retention,
    *,
    batch: int,
    now: datetime | None = None,
) -> dict[str, int]:
    """Delete what is past retention; rows deleted per resolution."""
    now_s = int((now or utcnow()).timestamp())
    deleted = {"raw": 0, "1m": 0, "1h": 0}
    after = 0
    while True:
        async with engine.connect() as conn:
            ids = list(
                (
                    await conn.execute(
                        select(MetricSeries.id)
                        .where(MetricSeries.id > after)
                        .order_by(MetricSeries.id)
                        .limit(SERIES_PER_READ)
                    )
                ).scalars()
            )
        if not ids:
            return deleted
        after = ids[-1]
        for sid in ids:
            deleted["raw"] += await _drain(
                engine,
                gate,
                _RAW,
                {"sid": sid, "cutoff": (now_s - retention.raw_days * DAY_S) * 1000},
                batch,
            )
            for label, resolution, days in (
                ("1m", MINUTE_S, retention.minute_days),
                ("1h", HOUR_S, retention.hour_days),
            ):
                cutoff = now_s - days * DAY_S - PERIOD_S[resolution]
                deleted[label] += await _drain(
                    engine,
                    gate,
                    _ROLLUP,
                    {"sid": sid, "resolution": resolution, "cutoff": cutoff},
                    batch,
                )


async def _drain(
    engine: AsyncEngine, gate: WriteGate, statement: object, params: dict[str, int], batch: int
) -> int:
    total = 0
    while True:
        async with gate, engine.begin() as conn:
            result = await conn.execute(statement, {**params, "n": batch})  # type: ignore[call-overload]
        count = int(result.rowcount or 0)
        total += count
        if count < batch:
            return total
