"""The write buffer: points accepted in memory, written in batches by a background task.

``put`` waits while the buffer is full, at most ``wait_s``, then raises ``BufferFull`` (the
API answers 503 with Retry-After): a point is never dropped once accepted. The task writes
what is buffered every ``interval_s`` (sooner when a batch is ready); a failed write keeps
its rows for the next try. ``aclose`` writes everything left before it returns.

A flush writes, in one transaction: the points (a repeated (series, time) keeps the last
value), each series' first and last point, and the rollup work list's entries for the
minutes the points fall in, a bit per minute in its hour's entry (rollup.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from sqlalchemy import bindparam, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from forecourt.db.gate import WriteGate
from forecourt.errors import ForecourtError
from forecourt.metrics.series import SeriesRegistry
from forecourt.observability.instruments import metric_points_written

log = logging.getLogger("forecourt.metrics")

Row = tuple[int, int, float]  # series id, epoch ms, value

FLUSH_AT_ROWS = 5_000  # a batch this size is written without waiting for the interval
ROWS_PER_STATEMENT = 5_000
RETRY_AFTER_S = 1
RETRY_BACKOFF_MAX_S = 5.0
MINUTE_S = 60
HOUR_S = 3600

_PG_POINTS = (
    "INSERT INTO metric_points (series_id, ts, value) "
    "SELECT * FROM unnest($1::integer[], $2::bigint[], $3::float8[]) "
    "ON CONFLICT (series_id, ts) DO UPDATE SET value = excluded.value"
)
_SQLITE_POINTS = (
    "INSERT INTO metric_points (series_id, ts, value) VALUES (?, ?, ?) "
    "ON CONFLICT (series_id, ts) DO UPDATE SET value = excluded.value"
)
_SERIES_ENDS = text(
    "UPDATE metric_series SET "
    "first_ts = CASE WHEN first_ts IS NULL OR first_ts > :first THEN :first ELSE first_ts END, "
    "last_value = CASE WHEN last_ts IS NULL OR last_ts <= :last THEN :value "
    "ELSE last_value END, "
    "last_ts = CASE WHEN last_ts IS NULL OR last_ts < :last THEN :last ELSE last_ts END "
    "WHERE id = :id"
)
MARK_WORK = text(
    "INSERT INTO metric_rollup_work (resolution, period, series_id, slots, version) "
    "VALUES (:resolution, :period, :series_id, :slots, 1) "
    "ON CONFLICT (resolution, period, series_id) "
    "DO UPDATE SET slots = metric_rollup_work.slots | excluded.slots, "
    "version = metric_rollup_work.version + 1"
)


class BufferFull(ForecourtError):
    """The metrics write buffer is full; try again shortly."""

    status = 503
    slug = "metrics-buffer-full"
    title = "Metrics buffer full"


class MetricWriter:
    """The buffer and its flushing task."""

    def __init__(
        self,
        engine: AsyncEngine,
        gate: WriteGate,
        registry: SeriesRegistry,
        *,
        capacity: int,
        interval_s: float,
        wait_s: float,
    ) -> None:
        self.engine = engine
        self.gate = gate
        self.registry = registry
        self.capacity = capacity
        self.interval_s = interval_s
        self.wait_s = wait_s
        self._rows: list[Row] = []
        self._in_flight = 0
        self._space = asyncio.Condition()
        self._ready = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.dropped_deleted = 0  # points of series deleted (with their tenant) before a flush

    @property
    def pending(self) -> int:
        return len(self._rows) + self._in_flight

    async def put(self, rows: Sequence[Row]) -> None:
        """Accept ``rows`` (at most ``capacity``), waiting for room at most ``wait_s``."""
        if not rows:
            return
        async with self._space:
            if self.pending + len(rows) > self.capacity:
                try:
                    await asyncio.wait_for(
                        self._space.wait_for(lambda: self.pending + len(rows) <= self.capacity),
                        timeout=self.wait_s,
                    )
                except TimeoutError:
                    raise BufferFull(headers={"Retry-After": str(RETRY_AFTER_S)}) from None
            self._rows.extend(rows)
        if len(self._rows) >= FLUSH_AT_ROWS:
            self._ready.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="forecourt-metrics-writer")

    async def aclose(self) -> None:
        """Stop the task, then write everything still buffered."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for attempt in range(5):
            try:
                await self.flush()
                return
            except Exception:
                log.exception("metrics: writing the buffer at shutdown failed (try %d)", attempt)
                await asyncio.sleep(min(2**attempt * 0.2, RETRY_BACKOFF_MAX_S))
        log.error("metrics: %d buffered points could not be written at shutdown", self.pending)

    async def _run(self) -> None:
        backoff = self.interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout=backoff)
            self._ready.clear()
            try:
                await self.flush()
                backoff = self.interval_s
            except Exception:
                log.exception(
                    "metrics: writing %d points failed; kept for the next try", self.pending
                )
                backoff = min(backoff * 2, RETRY_BACKOFF_MAX_S)

    async def flush(self) -> int:
        """Write what is buffered now; how many points were written."""
        async with self._flush_lock:
            total = 0
            while self._rows:
                rows, self._rows = self._rows[:ROWS_PER_STATEMENT], self._rows[ROWS_PER_STATEMENT:]
                self._in_flight = len(rows)
                try:
                    await self._write(rows)
                except BaseException:
                    self._rows[:0] = rows  # kept, in order, for the next try
                    raise
                finally:
                    self._in_flight = 0
                    async with self._space:
                        self._space.notify_all()
                total += len(rows)
                metric_points_written(len(rows))
            return total

    async def _write(self, rows: list[Row]) -> None:
        latest: dict[tuple[int, int], float] = {}
        for series_id, ts, value in rows:
            latest[(series_id, ts)] = value  # the last write of a (series, time) wins
        try:
            await self._write_once(latest)
        except IntegrityError:
            # A series deleted (with its tenant) since its id was cached: its points go too.
            kept = await self._existing(latest)
            self.dropped_deleted += len(latest) - len(kept)
            await self._write_once(kept)

    async def _existing(self, points: dict[tuple[int, int], float]) -> dict[tuple[int, int], float]:
        ids = sorted({series_id for series_id, _ in points})
        async with self.engine.connect() as conn:
            result = await conn.execute(
                text("SELECT id FROM metric_series WHERE id IN :ids").bindparams(
                    bindparam("ids", expanding=True)
                ),
                {"ids": ids},
            )
            alive = {row[0] for row in result}
        self.registry.forget(set(ids) - alive)
        return {key: value for key, value in points.items() if key[0] in alive}

    async def _write_once(self, points: dict[tuple[int, int], float]) -> None:
        if not points:
            return
        ends: dict[int, list[float]] = {}  # series -> first ts, last ts, last value
        minutes: set[tuple[int, int]] = set()
        for (series_id, ts), value in points.items():
            end = ends.get(series_id)
            if end is None:
                ends[series_id] = [ts, ts, value]
            else:
                if ts < end[0]:
                    end[0] = ts
                if ts >= end[1]:
                    end[1], end[2] = ts, value
            minutes.add((series_id, ts // 60_000))
        marks: dict[tuple[int, int], int] = {}  # (hour, series) -> bits of its minutes
        for series_id, minute in minutes:
            second = minute * MINUTE_S
            key = (second - second % HOUR_S, series_id)
            marks[key] = marks.get(key, 0) | 1 << (second % HOUR_S) // MINUTE_S
        async with self.gate, self.engine.begin() as conn:
            await _insert_points(conn, points)
            await conn.execute(
                _SERIES_ENDS,
                [
                    {"id": sid, "first": int(e[0]), "last": int(e[1]), "value": e[2]}
                    for sid, e in sorted(ends.items())
                ],
            )
            await conn.execute(
                MARK_WORK,
                [
                    {"resolution": MINUTE_S, "period": hour, "series_id": sid, "slots": bits}
                    for (hour, sid), bits in sorted(marks.items())
                ],
            )


async def _insert_points(conn: AsyncConnection, points: dict[tuple[int, int], float]) -> None:
    if conn.dialect.name == "postgresql":
        # In key order, so two nodes writing the same points lock them in the same order.
        ordered = sorted(points.items())
        await conn.exec_driver_sql(
            _PG_POINTS,
            ([k[0] for k, _ in ordered], [k[1] for k, _ in ordered], [v for _, v in ordered]),
        )
    else:
        await conn.exec_driver_sql(_SQLITE_POINTS, [(*k, v) for k, v in points.items()])
