"""The metrics store's service: writes (API, in-process, collectors), series, queries.

``Metrics`` is built once per process by ``Forecourt`` (``fc.metrics``). Writes resolve their
series on the request path (ids are cached, so usually without a query) and hand the points
to the write buffer (writer.py); rollups and retention run as background jobs on worker
nodes (``run_jobs``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.engine import Row as SqlRow
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from forecourt.db.base import utcnow
from forecourt.db.gate import WriteGate
from forecourt.errors import InvalidInput
from forecourt.metrics import query as q
from forecourt.metrics.models import MetricPoint, MetricSeries
from forecourt.metrics.retention import Retention, prune
from forecourt.metrics.rollup import Rollups
from forecourt.metrics.schemas import AGGREGATIONS, labels_problem, name_problem
from forecourt.metrics.series import (
    REFUSED_CARDINALITY,
    SeriesKey,
    SeriesRegistry,
    labels_key,
)
from forecourt.metrics.writer import MetricWriter, Row
from forecourt.pagination import decode_key, encode_cursor
from forecourt.settings import Settings

log = logging.getLogger("forecourt.metrics")

FORECOURT_SOURCE = "forecourt"
MAX_SERIES_PER_QUERY = 200
REFUSED_INVALID = "invalid name or labels"
REFUSED_TOO_OLD = "older than raw retention"
PRUNE_EVERY_S = 3600.0
MAX_FUTURE_S = 3600  # a point may be at most this far ahead of the clock


SeriesRow = SqlRow[tuple[int, str, dict[str, Any], str]]  # id, name, labels, source


@dataclass(slots=True)
class Point:
    """A point to write: the series' name and labels, the value, the time in epoch ms."""

    name: str
    value: float
    labels: dict[str, str] = field(default_factory=dict)
    ts_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    name: str
    labels: dict[str, str]
    points: int
    reason: str


@dataclass(frozen=True, slots=True)
class SeriesQuery:
    name: str
    labels: dict[str, str]
    start: datetime
    end: datetime
    step: int
    agg: str
    sources: Sequence[str] | None = None  # only series of these sources
    name_field: str = "name"  # the parameter that gave the name, for errors


def parse_labels(text: str | None, *, field_name: str = "labels") -> dict[str, str]:
    """``k:v,k2:v2`` as a map; InvalidInput naming ``field_name`` otherwise."""
    if not text:
        return {}
    labels: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition(":")
        if not sep or not key:
            raise InvalidInput(
                f"labels are key:value pairs separated by commas, not {part!r}", field=field_name
            )
        labels[key] = value
    problem = labels_problem(labels)
    if problem:
        raise InvalidInput(problem, field=field_name)
    return labels


class Metrics:
    """The metrics store of one process."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        sessionmaker: async_sessionmaker[AsyncSession],
        gate: WriteGate,
        worker_id: str,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.retention = Retention(
            settings.metrics_raw_retention_days,
            settings.metrics_minute_retention_days,
            settings.metrics_hour_retention_days,
        )
        self.registry = SeriesRegistry(sessionmaker, gate, settings.metrics_max_series_per_tenant)
        self.writer = MetricWriter(
            engine,
            gate,
            self.registry,
            capacity=settings.metrics_buffer_points,
            interval_s=settings.metrics_flush_interval_s,
            wait_s=settings.metrics_buffer_wait_s,
        )
        self.rollups = Rollups(
            engine,
            gate,
            worker_id,
            settings.metrics_rollup_lease_s,
            settings.metrics_rollup_batch,
        )
        self.gate = gate
        self.refused: Counter[str] = Counter()  # reason -> points refused
        self.default_tenant_id: str | None = None
        self._handoffs: set[asyncio.Task[int]] = set()

    # -- writing ---------------------------------------------------------------------------

    async def write(
        self, tenant_id: str, source: str, points: Sequence[Point]
    ) -> tuple[int, list[Refused]]:
        """Accept ``points`` of one tenant and source into the write buffer; how many were
        accepted, and the series refused (over the tenant's bound, or too old) with why."""
        now_ms = int(time.time() * 1000)
        oldest_ms = now_ms - self.retention.raw_days * 86_400_000
        # One key per distinct (name, labels) of the batch: a batch holds few series.
        memo: dict[tuple[str, tuple[tuple[str, str], ...]], SeriesKey] = {}
        seen: list[tuple[str, tuple[tuple[str, str], ...]]] = []
        labels: dict[SeriesKey, dict[str, str]] = {}
        for point in points:
            one = (point.name, tuple(point.labels.items()))
            seen.append(one)
            if one not in memo:
                key = memo[one] = SeriesKey(tenant_id, source, point.name, labels_key(point.labels))
                labels.setdefault(key, point.labels)
        ids = await self.registry.resolve(list(labels), labels)
        found = {one: ids.get(key) for one, key in memo.items()}
        rows: list[Row] = []
        missing: Counter[SeriesKey] = Counter()
        too_old: Counter[SeriesKey] = Counter()
        for one, point in zip(seen, points, strict=True):
            ts = now_ms if point.ts_ms is None else point.ts_ms
            series_id = found[one]
            if series_id is None:
                missing[memo[one]] += 1
            elif ts < oldest_ms:
                too_old[memo[one]] += 1
            else:
                rows.append((series_id, ts, point.value))
        await self.writer.put(rows)
        refused = [
            Refused(k.name, labels[k], n, REFUSED_CARDINALITY) for k, n in missing.items()
        ] + [Refused(k.name, labels[k], n, REFUSED_TOO_OLD) for k, n in too_old.items()]
        for item in refused:
            self.refused[item.reason] += item.points
        return len(rows), refused

    async def record(
        self,
        name: str,
        value: float,
        labels: dict[str, str] | None = None,
        *,
        tenant_id: str | None = None,
        source: str = FORECOURT_SOURCE,
        at: datetime | None = None,
    ) -> bool:
        """Record one point from inside Forecourt (default: the operator's tenant, source
        ``forecourt``); True if accepted. A bad name, labels or value raises InvalidInput."""
        tenant = tenant_id or self.default_tenant_id
        if tenant is None:
            raise InvalidInput("No tenant to record the metric in.", field="tenant_id")
        point = checked_point(name, value, labels or {}, at, field_prefix="")
        accepted, _ = await self.write(tenant, source, [point])
        return accepted == 1

    async def record_run(
        self, tenant_id: str, instance_id: str, at: datetime, metrics: Iterable[dict[str, Any]]
    ) -> int:
        """A collector run's metrics (``{"name", "value", "labels"}``), as series of its
        instance; one that is not a valid point is skipped, counted and logged."""
        points: list[Point] = []
        for item in metrics:
            try:
                points.append(
                    checked_point(
                        item.get("name"),
                        item.get("value"),
                        item.get("labels") or {},
                        at,
                        field_prefix="",
                    )
                )
            except InvalidInput as exc:
                self.refused[REFUSED_INVALID] += 1
                log.warning("metrics: skipped a metric of instance %s: %s", instance_id, exc.detail)
        if not points:
            return 0
        accepted, _ = await self.write(tenant_id, instance_id, points)
        return accepted

    def take_run(
        self, tenant_id: str, instance_id: str | None, at: datetime, metrics: list[Any]
    ) -> None:
        """``record_run`` from synchronous code (the scheduler's hook after a run): started
        as a task, which ``aclose`` waits for before the last flush."""
        if not metrics or instance_id is None:
            return
        task = asyncio.get_running_loop().create_task(
            self.record_run(tenant_id, instance_id, at, metrics)
        )
        self._handoffs.add(task)
        task.add_done_callback(self._handed_off)

    def _handed_off(self, task: asyncio.Task[int]) -> None:
        self._handoffs.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("metrics: a collector's metrics were not stored", exc_info=task.exception())

    async def flush(self) -> int:
        """Write what is buffered now (tests, shutdown)."""
        return await self.writer.flush()

    # -- background ------------------------------------------------------------------------

    def start(self) -> None:
        self.writer.start()

    async def aclose(self) -> None:
        if self._handoffs:
            await asyncio.wait(list(self._handoffs))
        await self.writer.aclose()

    async def run_jobs(self) -> None:
        """Roll up every ``metrics_rollup_interval_s``; prune every hour. Runs until
        cancelled (worker nodes)."""
        loop = asyncio.get_running_loop()
        pruned_at = -PRUNE_EVERY_S
        while True:
            try:
                await self.rollups.run_once()
                if loop.time() - pruned_at >= PRUNE_EVERY_S:
                    pruned_at = loop.time()
                    await self.prune()
            except Exception:
                log.exception("metrics: a rollup or retention pass failed")
            await asyncio.sleep(self.settings.metrics_rollup_interval_s)

    async def roll_up(self, now: datetime | None = None) -> int:
        return await self.rollups.run_once(now)

    async def prune(self, now: datetime | None = None) -> dict[str, int]:
        return await prune(
            self.engine, self.gate, self.retention, batch=self.settings.metrics_prune_batch, now=now
        )

    # -- reading ---------------------------------------------------------------------------

    async def list_series(
        self,
        session: AsyncSession,
        tenant_id: str,
        cursor: str | None,
        limit: int,
        *,
        name: str | None = None,
        source: str | None = None,
    ) -> tuple[list[MetricSeries], str | None]:
        """The tenant's series, newest first."""
        stmt = select(MetricSeries).where(MetricSeries.tenant_id == tenant_id)
        if name is not None:
            stmt = stmt.where(MetricSeries.name == name)
        if source is not None:
            stmt = stmt.where(MetricSeries.source == source)
        if cursor:
            text = decode_key(cursor)
            if not text.isdigit():
                raise InvalidInput("The cursor is not one this API returned.", field="cursor")
            stmt = stmt.where(MetricSeries.id < int(text))
        rows = list(
            (await session.scalars(stmt.order_by(MetricSeries.id.desc()).limit(limit + 1))).all()
        )
        page = rows[:limit]
        following = encode_cursor(str(page[-1].id)) if len(rows) > limit and page else None
        return page, following

    async def query(
        self,
        session: AsyncSession,
        tenant_id: str,
        query: SeriesQuery,
        stamps: q.Stamps = q.EPOCH,
    ) -> tuple[q.Plan, list[tuple[SeriesRow, q.Points]]]:
        """The points of every series of ``query.name`` whose labels include
        ``query.labels``, aggregated per step, each step's start written by ``stamps``
        (default: epoch seconds)."""
        check_query(query)
        series = await matching_series(
            session, tenant_id, query.name, query.labels, sources=query.sources
        )
        if len(series) > MAX_SERIES_PER_QUERY:
            raise InvalidInput(
                f"{len(series)} series match; narrow them to at most {MAX_SERIES_PER_QUERY} "
                "with labels",
                field="labels",
            )
        start_s, end_s = q.window(
            int(query.start.timestamp()), math.ceil(query.end.timestamp()), query.step
        )
        how = q.plan(query.step, query.agg, start_s, int(time.time()), self.retention.raw_days)
        conn = await session.connection()
        points = await q.read(
            conn, [s.id for s in series], how, start_s, end_s, query.step, query.agg, stamps
        )
        return how, [(s, points[s.id]) for s in series]

    async def latest(
        self, session: AsyncSession, tenant_id: str, sources: Sequence[str], limit: int
    ) -> list[MetricSeries]:
        """The series of ``sources`` with their last point, most recent first."""
        if not sources:
            return []
        stmt = (
            select(MetricSeries)
            .where(
                MetricSeries.tenant_id == tenant_id,
                MetricSeries.source.in_(list(sources)),
                MetricSeries.last_ts.is_not(None),
            )
            .order_by(MetricSeries.last_ts.desc(), MetricSeries.id)
            .limit(limit)
        )
        return list((await session.scalars(stmt)).all())

    async def points_after(
        self,
        session: AsyncSession,
        series: Sequence[MetricSeries],
        after: tuple[int, int],
        until_ms: int,
        limit: int,
    ) -> list[tuple[int, int, float]]:
        """Raw points (ts, series id, value) of ``series`` after ``after`` (ts, series id)
        and at or before ``until_ms``, in that order, at most ``limit``: what an exporter
        reads past its cursor (plugins/exports.py)."""
        if not series:
            return []
        ts, series_id = after
        stmt = (
            select(MetricPoint.ts, MetricPoint.series_id, MetricPoint.value)
            .where(
                MetricPoint.series_id.in_([s.id for s in series]),
                MetricPoint.ts <= until_ms,
                or_(
                    MetricPoint.ts > ts,
                    and_(MetricPoint.ts == ts, MetricPoint.series_id > series_id),
                ),
            )
            .order_by(MetricPoint.ts, MetricPoint.series_id)
            .limit(limit)
        )
        return [(row[0], row[1], row[2]) for row in (await session.execute(stmt)).all()]


async def matching_series(
    session: AsyncSession,
    tenant_id: str,
    name: str,
    labels: dict[str, str],
    *,
    sources: Sequence[str] | None = None,
) -> list[SeriesRow]:
    """The tenant's series of ``name`` whose labels include ``labels`` (and, given
    ``sources``, of those sources), oldest first: their ``id``, ``name``, ``labels`` and
    ``source`` (read as plain rows: a query needs no more of them)."""
    stmt = select(
        MetricSeries.id, MetricSeries.name, MetricSeries.labels, MetricSeries.source
    ).where(MetricSeries.tenant_id == tenant_id, MetricSeries.name == name)
    if sources is not None:
        stmt = stmt.where(MetricSeries.source.in_(list(sources)))
    return [
        s
        for s in (await session.execute(stmt.order_by(MetricSeries.id))).all()
        if all(s.labels.get(k) == v for k, v in labels.items())
    ]


async def aggregate_window(
    session: AsyncSession, series_ids: Sequence[int], start_ms: int, end_ms: int, agg: str
) -> tuple[float | None, int]:
    """``agg`` (avg, min, max, sum, last or count) of the raw points of ``series_ids`` in
    (start_ms, end_ms], and how many points there are; None when there are none. Only the
    points table's key (series, time) is needed."""
    in_window = (
        MetricPoint.series_id.in_(list(series_ids)),
        MetricPoint.ts > start_ms,
        MetricPoint.ts <= end_ms,
    )
    count, total, low, high = (
        await session.execute(
            select(
                func.count(),
                func.sum(MetricPoint.value),
                func.min(MetricPoint.value),
                func.max(MetricPoint.value),
            ).where(*in_window)
        )
    ).one()
    if not count:
        return None, 0
    value: float
    if agg == "avg":
        value = total / count
    elif agg == "sum":
        value = total
    elif agg == "min":
        value = low
    elif agg == "max":
        value = high
    elif agg == "count":
        value = float(count)
    else:
        last = await session.scalar(
            select(MetricPoint.value)
            .where(*in_window)
            .order_by(MetricPoint.ts.desc(), MetricPoint.series_id.desc())
            .limit(1)
        )
        value = float(last or 0.0)
    return float(value), int(count)


def check_query(query: SeriesQuery) -> None:
    """InvalidInput naming the field of a query that cannot be answered."""
    problem = name_problem(query.name)
    if problem:
        raise InvalidInput(problem, field=query.name_field)
    if query.agg not in AGGREGATIONS:
        raise InvalidInput(f"agg is one of {', '.join(AGGREGATIONS)}", field="agg")
    if query.step <= 0:
        raise InvalidInput("step is a positive number of seconds", field="step")
    if query.step > q.MAX_STEP_S:
        raise InvalidInput(f"step is at most {q.MAX_STEP_S} seconds", field="step")
    if query.start >= query.end:
        raise InvalidInput("from must be before to", field="from")
    if (query.end - query.start).total_seconds() / query.step > q.MAX_STEPS:
        raise InvalidInput(
            f"the range holds more than {q.MAX_STEPS} steps; take a larger step", field="step"
        )


def checked_point(
    name: object, value: object, labels: object, at: datetime | None, *, field_prefix: str
) -> Point:
    """A Point, or InvalidInput naming what is wrong."""
    problem = name_problem(name)
    if problem:
        raise InvalidInput(problem, field=f"{field_prefix}name")
    problem = labels_problem(labels)
    if problem:
        raise InvalidInput(problem, field=f"{field_prefix}labels")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput("value is a finite number", field=f"{field_prefix}value")
    if at is not None and at.tzinfo is None:
        raise InvalidInput(
            "Give a time zone, e.g. 2026-01-01T00:00:00Z.", field=f"{field_prefix}time"
        )
    assert isinstance(name, str) and isinstance(labels, dict)
    ts = None if at is None else int(at.timestamp() * 1000)
    return Point(name, float(value), dict(labels), ts)


def ends_at(series: MetricSeries) -> tuple[str | None, str | None]:
    first = q.iso_ms(series.first_ts) if series.first_ts is not None else None
    last = q.iso_ms(series.last_ts) if series.last_ts is not None else None
    return first, last


def now_ms() -> int:
    return int(utcnow().timestamp() * 1000)
