"""Rollups: each series' 1-minute buckets from its raw points, 1-hour buckets from those,
kept packed a period to a row (buckets.py: an hour of minutes, a day of hours).

A bucket holds count, sum, min, max and the last value, so buckets compose: an hour is the
sum of its minutes' counts and sums, the min of their mins, the max of their maxes and the
last of their lasts; any step that is a multiple of a bucket is answered the same way from
the buckets (query.py).

Work: writers OR the bits of the minutes their points fall in into the entry (60 s, hour,
series) of ``metric_rollup_work``, bumping its version. A node claims a batch of entries with
a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two nodes never claim the same entry;
SQLite has one writer), and for each claimed row: makes sure it exists, locks it (``FOR
UPDATE`` on PostgreSQL, so a node whose lease ran out meanwhile cannot interleave its
changes with another's), recomputes the flagged buckets from their source and writes them
into the row, leaving the others as they are. A bucket recomputed twice is the same bucket,
never counted twice. Then it removes the entries whose version it claimed; an entry written
to meanwhile stays for the next pass. A rolled-up minute flags its hour in the day's entry.
A node that dies holding a lease leaves its entries to whoever claims them once it expires.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, bindparam, or_, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from forecourt.db.base import utcnow
from forecourt.db.gate import WriteGate
from forecourt.metrics.buckets import (
    HOUR_S,
    MINUTE_S,
    RESOLUTIONS,
    Bucket,
    Packed,
    empty_blobs,
    period_of,
    slot_of,
    slots_in,
)
from forecourt.metrics.models import MetricRollupWork
from forecourt.metrics.writer import MARK_WORK
from forecourt.observability.operations import ROLLUP, timed

log = logging.getLogger("forecourt.metrics")

CLAIM_BATCH = 1_000  # work entries claimed at once

_W = cast(Table, MetricRollupWork.__table__)

# A row for every claimed series that still exists, before it is locked and read.
_ENSURE = (
    "INSERT INTO metric_buckets "
    "(series_id, resolution, period, counts, sums, mins, maxs, lasts, means) "
    "SELECT id, :resolution, :period, CAST(:counts AS {blob}), CAST(:zeros AS {blob}), "
    "CAST(:zeros AS {blob}), CAST(:zeros AS {blob}), CAST(:zeros AS {blob}), "
    "CAST(:zeros AS {blob}) "
    "FROM metric_series WHERE id = :series_id "
    "ON CONFLICT (series_id, resolution, period) DO NOTHING"
)
_ROWS = (
    "SELECT series_id, counts, sums, mins, maxs, lasts, means FROM metric_buckets "
    "WHERE series_id IN :ids AND resolution = :resolution AND period = :period"
)
_WRITE = text(
    "UPDATE metric_buckets SET counts = :counts, sums = :sums, mins = :mins, maxs = :maxs, "
    "lasts = :lasts, means = :means WHERE series_id = :series_id AND resolution = :resolution "
    "AND period = :period"
)
# The flagged minutes' buckets, from the raw points: the last value is the point at the
# minute's latest time.
_MINUTES = text(
    "SELECT a.series_id, a.minute, a.c, a.s, a.lo, a.hi, p.value FROM ("
    "SELECT series_id, ts - ts % 60000 AS minute, count(*) AS c, sum(value) AS s, "
    "min(value) AS lo, max(value) AS hi, max(ts) AS lt FROM metric_points "
    "WHERE series_id IN :ids AND ts >= :start AND ts < :end "
    "GROUP BY series_id, ts - ts % 60000) a "
    "JOIN metric_points p ON p.series_id = a.series_id AND p.ts = a.lt"
).bindparams(bindparam("ids", expanding=True))
_HOURS = text(
    "SELECT series_id, period, counts, sums, mins, maxs, lasts, means FROM metric_buckets "
    "WHERE series_id IN :ids AND resolution = 60 AND period >= :start AND period < :end"
).bindparams(bindparam("ids", expanding=True))
_DONE = text(
    "DELETE FROM metric_rollup_work WHERE resolution = :resolution AND period = :period "
    "AND series_id = :series_id AND version = :version"
)
_RELEASE = text(
    "UPDATE metric_rollup_work SET leased_until = NULL, leased_by = NULL "
    "WHERE resolution = :resolution AND period = :period AND series_id = :series_id "
    "AND leased_by = :me"
)


@dataclass(frozen=True, slots=True)
class Claimed:
    resolution: int
    period: int
    series_id: int
    version: int
    slots: int  # bit i: bucket i of the period


class Rollups:
    """Claims and does rollup work; ``run_once`` is one pass over both resolutions."""

    def __init__(
        self,
        engine: AsyncEngine,
        gate: WriteGate,
        worker_id: str,
        lease_s: float,
        batch: int = CLAIM_BATCH,
    ) -> None:
        self.engine = engine
        self.gate = gate
        self.worker_id = worker_id
        self.lease_s = lease_s
        self.batch = batch

    async def run_once(self, now: datetime | None = None) -> int:
        """Roll up every entry this node can claim, minutes before hours; how many."""
        done = 0
        with timed(ROLLUP):
            for resolution in RESOLUTIONS:
                while True:
                    claimed = await self.claim(resolution, now or utcnow(), self.batch)
                    if not claimed:
                        break
                    await self.roll_up(claimed)
                    done += len(claimed)
        return done

    async def claim(
        self, resolution: int, now: datetime, limit: int = CLAIM_BATCH
    ) -> list[Claimed]:
        """Lease up to ``limit`` entries of ``resolution`` that no live lease holds."""
        free = (
            select(_W.c.resolution, _W.c.period, _W.c.series_id)
            .where(
                _W.c.resolution == resolution,
                or_(_W.c.leased_until.is_(None), _W.c.leased_until < now),
            )
            .order_by(_W.c.period, _W.c.series_id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        stmt = (
            update(_W)
            .where(tuple_(_W.c.resolution, _W.c.period, _W.c.series_id).in_(free))
            .values(leased_until=now + timedelta(seconds=self.lease_s), leased_by=self.worker_id)
            .returning(_W.c.resolution, _W.c.period, _W.c.series_id, _W.c.version, _W.c.slots)
        )
        async with self.gate, self.engine.begin() as conn:
            rows = (await conn.execute(stmt)).all()
        return [Claimed(*row) for row in rows]

    async def roll_up(self, claimed: list[Claimed]) -> None:
        """Recompute the claimed buckets, then drop the entries not written to meanwhile."""
        by_period: dict[tuple[int, int], dict[int, int]] = defaultdict(dict)
        for item in claimed:
            by_period[(item.resolution, item.period)][item.series_id] = item.slots
        async with self.gate, self.engine.begin() as conn:
            hours: dict[tuple[int, int], int] = defaultdict(int)  # (day, series) -> bits
            for (resolution, period), masks in sorted(by_period.items()):
                rows = await _locked_rows(conn, resolution, period, sorted(masks))
                if resolution == MINUTE_S:
                    fresh = await _minutes(conn, period, masks)
                else:
                    fresh = await _hours(conn, period, masks)
                changed = []
                for series_id, packed in rows.items():
                    for slot in slots_in(masks[series_id]):
                        bucket = fresh.get((series_id, slot))
                        if bucket is not None:  # no source left (pruned): the bucket stays
                            packed.put(slot, bucket)
                    changed.append(
                        {
                            "series_id": series_id,
                            "resolution": resolution,
                            "period": period,
                            **packed.blobs(),
                        }
                    )
                    if resolution == MINUTE_S:
                        hours[(period_of(HOUR_S, period), series_id)] |= 1 << slot_of(
                            HOUR_S, period
                        )
                if changed:
                    await conn.execute(_WRITE, changed)
            if hours:
                await conn.execute(
                    MARK_WORK,
                    [
                        {"resolution": HOUR_S, "period": day, "series_id": sid, "slots": bits}
                        for (day, sid), bits in sorted(hours.items())
                    ],
                )
            keys = [
                {
                    "resolution": c.resolution,
                    "period": c.period,
                    "series_id": c.series_id,
                    "version": c.version,
                    "me": self.worker_id,
                }
                for c in sorted(claimed, key=lambda c: (c.resolution, c.period, c.series_id))
            ]
            await conn.execute(_DONE, [{k: v for k, v in key.items() if k != "me"} for key in keys])
            await conn.execute(
                _RELEASE, [{k: v for k, v in key.items() if k != "version"} for key in keys]
            )


async def _locked_rows(
    conn: AsyncConnection, resolution: int, period: int, ids: list[int]
) -> dict[int, Packed]:
    """The rows of ``ids`` at (resolution, period), created empty where missing (not for a
    series deleted meanwhile) and, on PostgreSQL, locked until the transaction ends."""
    postgres = conn.dialect.name == "postgresql"
    blobs = empty_blobs(resolution)
    await conn.execute(
        text(_ENSURE.format(blob="bytea" if postgres else "BLOB")),
        [
            {
                "series_id": sid,
                "resolution": resolution,
                "period": period,
                "counts": blobs["counts"],
                "zeros": blobs["sums"],
            }
            for sid in ids
        ],
    )
    statement = text(_ROWS + (" ORDER BY series_id FOR UPDATE" if postgres else "")).bindparams(
        bindparam("ids", expanding=True)
    )
    result = await conn.execute(statement, {"ids": ids, "resolution": resolution, "period": period})
    return {row[0]: Packed.decode(*row[1:]) for row in result}


async def _minutes(
    conn: AsyncConnection, hour: int, masks: dict[int, int]
) -> dict[tuple[int, int], Bucket]:
    """(series, minute of the hour) -> the minute's bucket from the raw points, for the
    range of minutes flagged in any of ``masks``."""
    union = 0
    for bits in masks.values():
        union |= bits
    first = (union & -union).bit_length() - 1
    last = union.bit_length()  # one past the highest flagged minute
    result = await conn.execute(
        _MINUTES,
        {
            "ids": sorted(masks),
            "start": (hour + first * MINUTE_S) * 1000,
            "end": (hour + last * MINUTE_S) * 1000,
        },
    )
    out: dict[tuple[int, int], Bucket] = {}
    for sid, minute_ms, count, total, low, high, last_value in result:
        slot = (int(minute_ms) // 1000 - hour) // MINUTE_S
        out[(sid, slot)] = (int(count), float(total), float(low), float(high), float(last_value))
    return out


async def _hours(
    conn: AsyncConnection, day: int, masks: dict[int, int]
) -> dict[tuple[int, int], Bucket]:
    """(series, hour of the day) -> the hour's bucket, from its row of minute buckets."""
    union = 0
    for bits in masks.values():
        union |= bits
    first = (union & -union).bit_length() - 1
    last = union.bit_length()
    result = await conn.execute(
        _HOURS,
        {"ids": sorted(masks), "start": day + first * HOUR_S, "end": day + last * HOUR_S},
    )
    out: dict[tuple[int, int], Bucket] = {}
    for sid, hour, *blobs in result:
        bucket = Packed.decode(*blobs).merged()
        if bucket is not None:
            out[(sid, (hour - day) // HOUR_S)] = bucket
    return out
