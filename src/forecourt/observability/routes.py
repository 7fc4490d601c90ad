"""REST: /metrics (Prometheus), /api/v1/stats/operations, /api/v1/system/logs.

Operation statistics and logs span tenants (every tenant's requests, Forecourt's own
records), so they are the operator's (``system:admin``); they answer for the process that
serves the request.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from forecourt.errors import Unauthenticated
from forecourt.http.deps import ForecourtDep, require
from forecourt.http.guard import GuardedRoute
from forecourt.http.times import aware

# connections: its gauges are scraped (at 0) before any stream has opened.
from forecourt.observability import connections, logring, operations, registry
from forecourt.observability.schemas import (
    LevelName,
    LogRecordOut,
    LogsOut,
    LogStatsOut,
    OperationOut,
    OperationsOut,
    OperationWindow,
    SlowOperationOut,
    SlowOperationsOut,
    WindowName,
)
from forecourt.principal import Principal
from forecourt.schemas import Timestamp
from forecourt.scopes import SYSTEM_ADMIN

__all__ = ["connections", "scrape", "stats", "system"]

Operator = Annotated[Principal, Depends(require(SYSTEM_ADMIN))]
MAX_LOG_RECORDS = logring.RING_CAPACITY

scrape = APIRouter(route_class=GuardedRoute, tags=["health"])
stats = APIRouter(route_class=GuardedRoute, prefix="/api/v1/stats", tags=["stats"])
system = APIRouter(route_class=GuardedRoute, prefix="/api/v1/system", tags=["system"])


@scrape.get("/metrics", include_in_schema=False)
async def metrics(request: Request, fc: ForecourtDep) -> Response:
    """Prometheus metrics. With ``FORECOURT_METRICS_TOKEN`` set, only to its bearer; without
    one, to everyone when the server listens on loopback, else to loopback clients only."""
    token = fc.settings.metrics_token
    if token is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            raise Unauthenticated(
                "/metrics needs the metrics token as a bearer token.",
                headers={"WWW-Authenticate": 'Bearer realm="forecourt-metrics"'},
            )
    elif not _loopback(fc.settings.host) and not _loopback(
        request.client.host if request.client else None
    ):
        raise Unauthenticated(
            "/metrics is open to loopback clients only; set FORECOURT_METRICS_TOKEN to "
            "scrape it from elsewhere.",
            headers={"WWW-Authenticate": 'Bearer realm="forecourt-metrics"'},
        )
    await fc.backlog.refresh()
    return Response(registry.exposition([fc.backlog]), media_type=CONTENT_TYPE_LATEST)


def _loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@stats.get("/operations", response_model=OperationsOut)
async def list_operations(
    _: Operator,
    kind: Annotated[
        operations.Kind | None, Query(description="Routes or background jobs only.")
    ] = None,
) -> OperationsOut:
    """Calls and durations of every route template and background job of this process,
    over the last minute, 5 minutes and hour."""
    names = list(operations.WINDOWS_S)
    by_window = {w: operations.OPERATIONS.summaries(w) for w in names}
    found: dict[str, OperationOut] = {}
    for window, summaries in by_window.items():
        for name, (op_kind, summary) in summaries.items():
            if kind is not None and op_kind != kind:
                continue
            out = found.setdefault(
                name, OperationOut(name=name, kind=op_kind, windows=dict.fromkeys(names))
            )
            out.windows[window] = OperationWindow(
                count=summary.count,
                avg_ms=summary.avg_s * 1000,
                min_ms=summary.min_s * 1000,
                max_ms=summary.max_s * 1000,
                p50_ms=summary.p50_s * 1000,
                p95_ms=summary.p95_s * 1000,
            )
    return OperationsOut(windows=names, operations=sorted(found.values(), key=lambda o: o.name))


@stats.get("/operations/slow", response_model=SlowOperationsOut)
async def slow_operations(
    _: Operator,
    window: WindowName = "1h",
    limit: Annotated[int, Query(ge=1, le=operations.SLOW_PER_BUCKET)] = 10,
) -> SlowOperationsOut:
    """The slowest calls of this process within ``window``, slowest first."""
    return SlowOperationsOut(
        window=window,
        operations=[
            SlowOperationOut(
                name=s.name,
                kind=s.kind,
                duration_ms=s.duration_s * 1000,
                at=datetime.fromtimestamp(s.at, UTC),
            )
            for s in operations.OPERATIONS.slowest(window, limit)
        ],
    )


@system.get("/logs", response_model=LogsOut)
async def list_logs(
    _: Operator,
    level: Annotated[LevelName | None, Query(description="This level and above.")] = None,
    since: Annotated[Timestamp | None, Query(description="ISO 8601, exclusive.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LOG_RECORDS)] = 200,
) -> LogsOut:
    """This process's most recent log records (its workers' too when they run in it)."""
    since = aware(since, "since")
    entries = logring.RING.entries(
        level=logging.getLevelName(level.upper()) if level else logging.NOTSET,
        since=since.timestamp() if since is not None else None,
        limit=limit,
    )
    return LogsOut(
        records=[
            LogRecordOut(
                at=datetime.fromtimestamp(e.at, UTC),
                level=e.level.lower(),
                logger=e.logger,
                message=e.message,
                request_id=e.request_id,
                exception=e.exception,
            )
            for e in entries
        ]
    )


@system.get("/logs/stats", response_model=LogStatsOut)
async def log_stats(_: Operator) -> LogStatsOut:
    """This process's log records by level over the last hour."""
    counts = {name.lower(): n for name, n in logring.RING.counts().items()}
    return LogStatsOut(window="1h", by_level=counts, total=sum(counts.values()))
