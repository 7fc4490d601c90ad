"""Rollups: each series' 1-minute buckets from its raw points, 1-hour buckets from those.

A bucket holds count, sum, min, max and the last value with its time, so buckets compose:
an hour is the sum of its minutes' counts and sums, the min of their mins, the max of their
maxes and the last of their lasts; any step that is a multiple of a bucket is answered the
same way from the buckets (query.py).

Work: writers add (60 s, minute, series) to ``metric_rollup_work`` for every point, bumping
its version. A node claims a batch of entries with a lease (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so two nodes never claim the same entry; SQLite has one writer), recomputes
those buckets from their source and replaces them (so a bucket done twice is the same
bucket, never counted twice), then removes the entries whose version it claimed; an entry
written to meanwhile stays for the next pass. A rolled-up minute adds its hour to the list.
A node that dies holding a lease leaves its entries to whoever claims them once it expires.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, bindparam, or_, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncEngine

from forecourt.db.base import utcnow
from forecourt.db.gate import WriteGate
from forecourt.metrics.models import MetricRollupWork
from forecourt.metrics.writer import MARK_WORK
from forecourt.observability.operations import ROLLUP, timed

log = logging.getLogger("forecourt.metrics")

MINUTE_S = 60
HOUR_S = 3600
RESOLUTIONS = (MINUTE_S, HOUR_S)
CLAIM_BATCH = 1_000  # work entries claimed at once

_W = cast(Table, MetricRollupWork.__table__)

_UPSERT = (
    "ON CONFLICT (series_id, resolution, bucket) DO UPDATE SET count = excluded.count, "
    "sum = excluded.sum, min = excluded.min, max = excluded.max, last = excluded.last, "
    "last_ts = excluded.last_ts"
)
# ``WHERE 1 = 1``: SQLite reads ON CONFLICT after a join's ON as part of the join otherwise.
_MINUTE = text(
    "INSERT INTO metric_rollups "
    "(series_id, resolution, bucket, count, sum, min, max, last, last_ts) "
    "SELECT a.series_id, 60, :bucket, a.c, a.s, a.lo, a.hi, p.value, a.lt FROM ("
    "SELECT series_id, count(*) AS c, sum(value) AS s, min(value) AS lo, max(value) AS hi, "
    "max(ts) AS lt FROM metric_points WHERE series_id IN :ids AND ts >= :start AND ts < :end "
    "GROUP BY series_id) a "
    "JOIN metric_points p ON p.series_id = a.series_id AND p.ts = a.lt WHERE 1 = 1 " + _UPSERT
).bindparams(bindparam("ids", expanding=True))
_HOUR = text(
    "INSERT INTO metric_rollups "
    "(series_id, resolution, bucket, count, sum, min, max, last, last_ts) "
    "SELECT a.series_id, 3600, :bucket, a.c, a.s, a.lo, a.hi, r.last, a.lt FROM ("
    "SELECT series_id, sum(count) AS c, sum(sum) AS s, min(min) AS lo, max(max) AS hi, "
    "max(last_ts) AS lt FROM metric_rollups WHERE series_id IN :ids AND resolution = 60 "
    "AND bucket >= :bucket AND bucket < :end GROUP BY series_id) a "
    "JOIN metric_rollups r ON r.series_id = a.series_id AND r.resolution = 60 "
    "AND r.bucket >= :bucket AND r.bucket < :end AND r.last_ts = a.lt WHERE 1 = 1 " + _UPSERT
).bindparams(bindparam("ids", expanding=True))
_DONE = text(
    "DELETE FROM metric_rollup_work WHERE resolution = :resolution AND bucket = :bucket "
    "AND series_id = :series_id AND version = :version"
)
_RELEASE = text(
    "UPDATE metric_rollup_work SET leased_until = NULL, leased_by = NULL "
    "WHERE resolution = :resolution AND bucket = :bucket AND series_id = :series_id "
    "AND leased_by = :me"
)


@dataclass(frozen=True, slots=True)
class Claimed:
    resolution: int
    bucket: int
    series_id: int
    version: int


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
            select(_W.c.resolution, _W.c.bucket, _W.c.series_id)
            .where(
                _W.c.resolution == resolution,
                or_(_W.c.leased_until.is_(None), _W.c.leased_until < now),
            )
            .order_by(_W.c.bucket, _W.c.series_id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        stmt = (
            update(_W)
            .where(tuple_(_W.c.resolution, _W.c.bucket, _W.c.series_id).in_(free))
            .values(leased_until=now + timedelta(seconds=self.lease_s), leased_by=self.worker_id)
            .returning(_W.c.resolution, _W.c.bucket, _W.c.series_id, _W.c.version)
        )
        async with self.gate, self.engine.begin() as conn:
            rows = (await conn.execute(stmt)).all()
        return [Claimed(*row) for row in rows]

    async def roll_up(self, claimed: list[Claimed]) -> None:
        """Recompute the claimed buckets, then drop the entries not written to meanwhile."""
        by_bucket: dict[tuple[int, int], list[int]] = defaultdict(list)
        for item in claimed:
            by_bucket[(item.resolution, item.bucket)].append(item.series_id)
        async with self.gate, self.engine.begin() as conn:
            hours: set[tuple[int, int]] = set()
            for (resolution, bucket), ids in sorted(by_bucket.items()):
                if resolution == MINUTE_S:
                    await conn.execute(
                        _MINUTE,
                        {
                            "ids": ids,
                            "bucket": bucket,
                            "start": bucket * 1000,
                            "end": (bucket + MINUTE_S) * 1000,
                        },
                    )
                    hour = bucket - bucket % HOUR_S
                    hours.update((hour, sid) for sid in ids)
                else:
                    await conn.execute(
                        _HOUR, {"ids": ids, "bucket": bucket, "end": bucket + HOUR_S}
                    )
            if hours:
                await conn.execute(
                    MARK_WORK,
                    [
                        {"resolution": HOUR_S, "bucket": hour, "series_id": sid}
                        for hour, sid in sorted(hours)
                    ],
                )
            keys = [
                {
                    "resolution": c.resolution,
                    "bucket": c.bucket,
                    "series_id": c.series_id,
                    "version": c.version,
                    "me": self.worker_id,
                }
                for c in sorted(claimed, key=lambda c: (c.resolution, c.bucket, c.series_id))
            ]
            await conn.execute(_DONE, [{k: v for k, v in key.items() if k != "me"} for key in keys])
            await conn.execute(
                _RELEASE, [{k: v for k, v in key.items() if k != "version"} for key in keys]
            )
