"""REST: /api/v1/metrics (series, queries, writes) and the plugin paths
/api/v1/plugins/{plugin_id}/metrics[/history], thin routes on the metrics service."""

from __future__ import annotations

import operator
import time
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Response, status

from forecourt import codec
from forecourt.errors import InvalidInput
from forecourt.http.deps import DbSession, ForecourtDep, Paging, require
from forecourt.http.guard import GuardedRoute
from forecourt.metrics import query as q
from forecourt.metrics.models import NAME_LENGTH
from forecourt.metrics.schemas import (
    LABELS_QUERY_PATTERN,
    NAME_PATTERN,
    Aggregation,
    LatestOut,
    PointsIn,
    QueryOut,
    RefusedSeries,
    SeriesOut,
    WriteOut,
    point_time_s,
)
from forecourt.metrics.service import (
    MAX_FUTURE_S,
    Point,
    SeriesQuery,
    ends_at,
    parse_labels,
)
from forecourt.principal import Principal
from forecourt.schemas import Page, Timestamp

MetricsRead = Annotated[Principal, Depends(require("metrics:read"))]
MetricsWrite = Annotated[Principal, Depends(require("metrics:write"))]

DEFAULT_RANGE = timedelta(hours=1)
MAX_LATEST = 1_000
MAX_HISTORY_HOURS = 24 * 400
INSTANCES_PER_PAGE = 200
BUFFER_FULL = {
    "description": "The write buffer is full; nothing was accepted. Try again after Retry-After.",
    "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
}

router = APIRouter(route_class=GuardedRoute, prefix="/api/v1/metrics", tags=["metrics"])
plugin_router = APIRouter(route_class=GuardedRoute, prefix="/api/v1/plugins", tags=["metrics"])


def _series_out(series: Any) -> SeriesOut:
    first, last = ends_at(series)
    return SeriesOut(
        id=series.id,
        name=series.name,
        labels=series.labels,
        source=series.source,
        first_point_at=first,
        last_point_at=last,
        last_value=series.last_value,
    )


@router.get("", response_model=Page[SeriesOut])
async def list_series(
    actor: MetricsRead,
    fc: ForecourtDep,
    session: DbSession,
    page: Paging,
    name: Annotated[str | None, Query(max_length=200, description="Exact name.")] = None,
    source: Annotated[
        str | None, Query(max_length=128, description="forecourt, app, or an instance id.")
    ] = None,
) -> Page[SeriesOut]:
    """Your tenant's series (name, labels, source, first and last point), newest first."""
    rows, cursor = await fc.metrics.list_series(
        session, actor.tenant_id, page.cursor, page.limit, name=name, source=source
    )
    return Page[SeriesOut](items=[_series_out(r) for r in rows], next_cursor=cursor)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=WriteOut,
    responses={503: BUFFER_FULL},
)
async def write_points(body: PointsIn, actor: MetricsWrite, fc: ForecourtDep) -> WriteOut:
    """Write points (at most 5,000); they are stored within a flush interval. A series new
    past your tenant's series limit is refused (listed in ``refused``); a time older than
    raw retention or more than an hour ahead is a 422, and then nothing is stored."""
    now = time.time()
    oldest = now - fc.metrics.retention.raw_days * 86_400
    newest = now + MAX_FUTURE_S
    points = []
    times: dict[str, int] = {}  # a batch repeats its times across its series
    for i, item in enumerate(body.points):
        text = item.get("time")
        ts_ms = None
        if text is not None:
            ts_ms = times.get(text)
            if ts_ms is None:
                at = point_time_s(text)  # checked by the schema
                if not oldest <= at <= newest:
                    raise InvalidInput(
                        f"a time is within raw retention ({fc.metrics.retention.raw_days} "
                        "days) and at most an hour ahead",
                        field=f"points.{i}.time",
                    )
                ts_ms = times[text] = int(at * 1000)
        points.append(Point(item["name"], item["value"], item.get("labels") or {}, ts_ms))
    accepted, refused = await fc.metrics.write(actor.tenant_id, body.source, points)
    return WriteOut(
        accepted=accepted,
        refused=[
            RefusedSeries(name=r.name, labels=r.labels, points=r.points, reason=r.reason)
            for r in refused
        ],
    )


@router.get("/query", response_model=QueryOut)
async def query_points(
    actor: MetricsRead,
    fc: ForecourtDep,
    session: DbSession,
    name: Annotated[
        str,
        Query(
            min_length=1,
            max_length=NAME_LENGTH,
            pattern=NAME_PATTERN,
            examples=["system.cpu.percent"],
        ),
    ],
    labels: Annotated[
        str | None,
        Query(
            pattern=LABELS_QUERY_PATTERN,
            description="key:value pairs, comma-separated; a series matches if it has them all.",
        ),
    ] = None,
    start: Annotated[
        Timestamp | None, Query(alias="from", description="Inclusive; default: an hour before to.")
    ] = None,
    end: Annotated[
        Timestamp | None, Query(alias="to", description="Exclusive; default: now.")
    ] = None,
    step: Annotated[int, Query(ge=1, le=q.MAX_STEP_S, description="Seconds per point.")] = 60,
    agg: Aggregation = "avg",
) -> Response:
    """Points of every series of ``name`` whose labels include ``labels``, one per step,
    read from the cheapest resolution that answers the step (raw, 1-minute or 1-hour)."""
    end = _zoned(end, "to") or datetime.now(UTC)
    start = _zoned(start, "from") or end - DEFAULT_RANGE
    query = SeriesQuery(name, parse_labels(labels), start, end, step, agg)
    return await _answer(fc, session, actor, query)


class _Heads(list[bytes]):
    """The heads of a whole period's pairs, with the period's pairs as one template to fill
    with the values' JSON (``%b`` each)."""

    __slots__ = ("template",)

    def __init__(self, heads: list[bytes]) -> None:
        super().__init__(heads)
        self.template = b"],".join(head + b"%b" for head in heads)


class _JsonStamps(q.Stamps):
    """A step's start as the head of its JSON pair, ``["<RFC 3339>",``. The heads of a
    period's buckets are remembered (a stamp never changes, and dashboards ask for the same
    periods again and again), at most ``MAX_RUNS`` periods."""

    MAX_RUNS = 1_024

    def __init__(self) -> None:
        self._runs: dict[tuple[int, int, int], _Heads] = {}

    def one(self, epoch_s: int) -> bytes:
        return b'["' + q.iso(epoch_s).encode() + b'",'

    def run(self, start: int, step: int, count: int) -> _Heads:
        key = (start, step, count)
        heads = self._runs.get(key)
        if heads is None:
            if len(self._runs) >= self.MAX_RUNS:
                self._runs.clear()
            heads = self._runs[key] = _Heads([self.one(start + step * i) for i in range(count)])
        return heads


_STAMPS = _JsonStamps()


def _points_json(points: q.Points) -> orjson.Fragment:
    """``[[time, value], ...]`` as the codec would write the pairs, without building them:
    the values are written by orjson at once, then joined to their heads (a whole period at
    a time through its template)."""
    numbers = orjson.dumps(list(chain.from_iterable(v for _, v in points.runs)))[1:-1].split(b",")
    parts = []
    at = 0
    for heads, values in points.runs:
        if not values:
            continue
        mine = numbers[at : at + len(values)]
        at += len(values)
        if isinstance(heads, _Heads):
            parts.append(heads.template % tuple(mine))
        else:
            parts.append(b"],".join(map(operator.add, heads, mine)))
    return orjson.Fragment(b"[" + b"],".join(parts) + b"]]" if parts else b"[]")


async def _answer(fc: Any, session: DbSession, actor: Principal, query: SeriesQuery) -> Response:
    how, found = await fc.metrics.query(session, actor.tenant_id, query, _STAMPS)
    body = {
        "name": query.name,
        "agg": query.agg,
        "step": query.step,
        "resolution": q.RESOLUTION_NAMES[how.resolution],
        "approximate": how.approximate,
        "series": [
            {
                "id": s.id,
                "name": s.name,
                "labels": s.labels,
                "source": s.source,
                "points": _points_json(points),
            }
            for s, points in found
        ],
    }
    # Written by the codec directly rather than validated again through the response model:
    # an answer may hold thousands of points.
    return Response(codec.dumps(body), media_type="application/json")


def _zoned(value: datetime | None, field: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise InvalidInput("Give a time zone, e.g. 2026-01-01T00:00:00Z.", field=field)
    return value


async def _instance_ids(fc: Any, session: DbSession, actor: Principal, plugin_id: str) -> list[str]:
    """The caller's instances of ``plugin_id``; 404 if the tenant cannot see the plugin."""
    await fc.plugins(session).get(plugin_id, actor)
    service = fc.plugin_instances(session)
    ids: list[str] = []
    cursor = None
    while True:
        rows, cursor = await service.page(actor, plugin_id, cursor, INSTANCES_PER_PAGE)
        ids.extend(instance.id for instance, _ in rows)
        if cursor is None:
            return ids


@plugin_router.get("/{plugin_id}/metrics", response_model=LatestOut)
async def plugin_latest(
    plugin_id: str,
    actor: MetricsRead,
    fc: ForecourtDep,
    session: DbSession,
    limit: Annotated[int, Query(ge=1, le=MAX_LATEST)] = 100,
) -> LatestOut:
    """The latest point of each series of your instances of the plugin, newest first."""
    sources = await _instance_ids(fc, session, actor, plugin_id)
    rows = await fc.metrics.latest(session, actor.tenant_id, sources, limit)
    return LatestOut.model_validate(
        {
            "plugin_id": plugin_id,
            "points": [
                {
                    "series_id": r.id,
                    "instance_id": r.source,
                    "name": r.name,
                    "labels": r.labels,
                    "time": q.iso_ms(r.last_ts or 0),
                    "value": r.last_value,
                }
                for r in rows
            ],
        }
    )


@plugin_router.get("/{plugin_id}/metrics/history", response_model=QueryOut)
async def plugin_history(
    plugin_id: str,
    actor: MetricsRead,
    fc: ForecourtDep,
    session: DbSession,
    metric_name: Annotated[str, Query(min_length=1, max_length=NAME_LENGTH, pattern=NAME_PATTERN)],
    hours: Annotated[int, Query(ge=1, le=MAX_HISTORY_HOURS)] = 24,
    step: Annotated[int, Query(ge=1, le=q.MAX_STEP_S)] = 60,
    agg: Aggregation = "avg",
    labels: Annotated[str | None, Query(pattern=LABELS_QUERY_PATTERN)] = None,
) -> Response:
    """``metric_name`` of your instances of the plugin over the last ``hours``, per step."""
    sources = await _instance_ids(fc, session, actor, plugin_id)
    end = datetime.now(UTC)
    query = SeriesQuery(
        metric_name,
        parse_labels(labels),
        end - timedelta(hours=hours),
        end,
        step,
        agg,
        sources,
        name_field="metric_name",
    )
    return await _answer(fc, session, actor, query)
