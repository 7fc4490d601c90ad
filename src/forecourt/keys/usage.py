"""Usage counters: requests per key per minute by status class, aggregated in memory and
flushed in one upsert every few seconds, so the hot path never writes to the database.

``last_used_at`` rides along, written at most once a minute per key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forecourt.keys.models import ApiKey, ApiKeyUsage

log = logging.getLogger("forecourt.keys.usage")

LAST_USED_WRITE_INTERVAL_S = 60.0
# index of each counter in a bucket
REQUESTS, S2XX, S3XX, S4XX, S5XX, LIMITED = range(6)
COUNTER_COLUMNS = (
    "requests",
    "status_2xx",
    "status_3xx",
    "status_4xx",
    "status_5xx",
    "rate_limited",
)


class UsageRecorder:
    """Collects usage in memory; ``flush`` writes it; ``run`` flushes on an interval."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], interval_s: float) -> None:
        self._sessionmaker = sessionmaker
        self._interval_s = interval_s
        self._buckets: defaultdict[tuple[str, str, int], list[int]] = defaultdict(
            lambda: [0, 0, 0, 0, 0, 0]
        )
        self._last_used: dict[str, float] = {}  # key id -> epoch of the latest request
        self._last_used_written: dict[str, float] = {}
        self._lock = asyncio.Lock()

    def record(self, key_id: str, tenant_id: str, status: int, limited: bool = False) -> None:
        now = time.time()
        bucket = self._buckets[(key_id, tenant_id, int(now // 60))]
        bucket[REQUESTS] += 1
        if limited:
            bucket[LIMITED] += 1
        klass = status // 100
        if 2 <= klass <= 5:
            bucket[klass - 1] += 1
        self._last_used[key_id] = now

    async def flush(self) -> None:
        async with self._lock:
            buckets, self._buckets = self._buckets, defaultdict(lambda: [0, 0, 0, 0, 0, 0])
            now = time.time()
            due = {
                key_id: at
                for key_id, at in self._last_used.items()
                if now - self._last_used_written.get(key_id, 0.0) >= LAST_USED_WRITE_INTERVAL_S
            }
            if not buckets and not due:
                return
            try:
                async with self._sessionmaker() as session, session.begin():
                    await self._write(session, buckets, due)
            except Exception:
                # Put the counts back so the next flush retries them.
                for bucket_key, counts in buckets.items():
                    merged = self._buckets[bucket_key]
                    for i, n in enumerate(counts):
                        merged[i] += n
                raise
            for key_id in due:
                self._last_used_written[key_id] = now
                self._last_used.pop(key_id, None)

    async def _write(
        self,
        session: AsyncSession,
        buckets: dict[tuple[str, str, int], list[int]],
        due: dict[str, float],
    ) -> None:
        live = set(
            (
                await session.scalars(
                    select(ApiKey.id).where(ApiKey.id.in_({k for k, _, _ in buckets} | set(due)))
                )
            ).all()
        )
        dialect = session.get_bind().dialect.name
        for (key_id, tenant_id, minute), counts in buckets.items():
            if key_id not in live:
                continue
            values: dict[str, Any] = dict(zip(COUNTER_COLUMNS, counts, strict=True))
            stmt = _insert(dialect).values(
                key_id=key_id,
                tenant_id=tenant_id,
                minute=datetime.fromtimestamp(minute * 60, UTC),
                **values,
            )
            excluded = stmt.excluded
            stmt = stmt.on_conflict_do_update(
                index_elements=["key_id", "minute"],
                set_={c: getattr(ApiKeyUsage, c) + getattr(excluded, c) for c in COUNTER_COLUMNS},
            )
            await session.execute(stmt)
        for key_id, at in due.items():
            if key_id in live:
                await session.execute(
                    update(ApiKey)
                    .where(ApiKey.id == key_id)
                    .values(last_used_at=datetime.fromtimestamp(at, UTC))
                )

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.flush()
            except Exception:
                log.exception("usage flush failed; counts kept for the next one")

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.flush()


def _insert(dialect: str) -> Any:
    if dialect == "postgresql":
        return postgresql.insert(ApiKeyUsage)
    return sqlite.insert(ApiKeyUsage)


USAGE_SPANS = {
    "minute": (timedelta(hours=1), 60),
    "hour": (timedelta(days=1), 3600),
    "day": (timedelta(days=30), 86400),
}


def aggregate(rows: list[ApiKeyUsage], now: datetime) -> dict[str, Any]:
    """Per-minute rows to series per minute (last hour), hour (last day), day (last 30 days)."""
    result: dict[str, Any] = {}
    for span, (length, step) in USAGE_SPANS.items():
        start = now - length
        series: dict[int, dict[str, int]] = {}
        for row in rows:
            if row.minute < start:
                continue
            slot = int(row.minute.timestamp()) // step * step
            point = series.setdefault(slot, dict.fromkeys(COUNTER_COLUMNS, 0))
            for column in COUNTER_COLUMNS:
                point[column] += getattr(row, column)
        result[span] = [
            {"start": datetime.fromtimestamp(slot, UTC), **series[slot]} for slot in sorted(series)
        ]
    totals = dict.fromkeys(COUNTER_COLUMNS, 0)
    for row in rows:
        for column in COUNTER_COLUMNS:
            totals[column] += getattr(row, column)
    result["totals_30d"] = totals
    return result


__all__ = ["USAGE_SPANS", "UsageRecorder", "aggregate"]
