"""What a scheduled run of a metrics exporter receives, and where its last export ended.

An export plugin whose manifest declares ``permissions.metrics_export`` (the name of the
config property holding its target) runs every ``schedule_interval_s``. Before each run the
scheduler resolves its input here: the tenant's series that the instance's configuration
selects (``series``: name patterns with ``*``, ``labels``: labels a series must have), with
their raw points past the instance's cursor, at most ``max_points_per_run`` (default and cap
below) in (time, series) order. Each series of a name that has points in the run is listed,
with its points (possibly none) and ``last``, the latest point stored (which may be past the
run's points): a Pushgateway push replaces a whole metric family, so it needs them all.

The cursor (:class:`~forecourt.plugins.models.PluginExportCursor`) is the last point sent; it
moves only when the run succeeded, so a failed run's points come again in the next run and a
point is never sent twice by a retry. The first run of an instance starts one interval before
the instance was made. Points newer than ``SETTLE_MS`` plus the write buffer's interval are left
for the next run, so a point still in a node's write buffer is not passed by the cursor; a
point written later with an older time than the cursor (a backfill) is not exported.

The instance's target (``host:port`` or an http(s) URL) is added to the hosts its runs may
reach through the egress proxy, still behind the SSRF guard; those runs get workers of their
own (:func:`target_hosts`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forecourt.db.base import utcnow
from forecourt.metrics.models import MetricSeries
from forecourt.metrics.service import Metrics
from forecourt.metrics.service import now_ms as clock_ms
from forecourt.plugins.models import Plugin, PluginExportCursor, PluginInstance

PERMISSION = "metrics_export"
MAX_POINTS_PER_RUN = 10_000  # default and cap of an instance's max_points_per_run
SETTLE_MS = 1000  # on top of the write buffer's flush interval
SERIES_PAGE = 1000
SERIES_PER_QUERY = 5000  # series ids bound in one points query


def is_exporter(plugin: Plugin) -> bool:
    """Whether ``plugin`` is a metrics exporter (its scheduled runs take a batch)."""
    return plugin.type == "export" and bool(_permission(plugin.manifest))


def target_hosts(manifest: dict[str, Any], config: dict[str, Any]) -> tuple[str, ...]:
    """The ``host:port`` an exporter instance's configuration targets, to add to the hosts
    its runs may reach; ``()`` for any other plugin. ``ValueError`` for a target that is
    neither ``host:port`` nor an http(s) URL with a host."""
    field = _permission(manifest)
    if not field or field not in config:
        return ()
    target = str(config[field])
    if "://" not in target:
        return (target,)
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"the export target {target!r} is not an http(s) URL")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return (f"{host}:{parts.port or (443 if parts.scheme == 'https' else 80)}",)


@dataclass(frozen=True)
class Batch:
    """One scheduled run's points: the run's input, and the cursor to keep if it succeeds."""

    instance_id: str
    input: dict[str, Any]
    cursor: tuple[int, int] | None  # None: nothing new, the cursor stays

    async def commit(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        """Keep the cursor past this batch's points (call after a successful run only)."""
        if self.cursor is None:
            return
        ts, series_id = self.cursor
        async with sessionmaker() as session, session.begin():
            row = await session.get(PluginExportCursor, self.instance_id)
            if row is not None:
                row.ts, row.series_id, row.updated_at = ts, series_id, utcnow()
            elif await session.get(PluginInstance, self.instance_id) is not None:
                session.add(
                    PluginExportCursor(instance_id=self.instance_id, ts=ts, series_id=series_id)
                )
            # else: deleted during the run, nothing to keep


async def batch(
    metrics: Metrics,
    sessionmaker: async_sessionmaker[AsyncSession],
    instance: PluginInstance,
    interval_s: int,
) -> Batch:
    """The input of ``instance``'s next scheduled run (see the module docstring)."""
    config = instance.config or {}
    limit = min(int(config.get("max_points_per_run") or MAX_POINTS_PER_RUN), MAX_POINTS_PER_RUN)
    patterns = [str(p) for p in config.get("series") or ["*"]]
    wanted = {str(k): str(v) for k, v in (config.get("labels") or {}).items()}
    settle_ms = SETTLE_MS + int(metrics.settings.metrics_flush_interval_s * 1000)
    until_ms = clock_ms() - settle_ms
    async with sessionmaker() as session:
        saved = await session.get(PluginExportCursor, instance.id)
        if saved is not None:
            after = (saved.ts, saved.series_id)
        else:
            start = instance.created_at - timedelta(seconds=interval_s)
            after = (int(start.timestamp() * 1000), 0)
        series = await _selected(metrics, session, instance.tenant_id, patterns, wanted)
        # In chunks, each under the databases' bound on bound parameters; every chunk's
        # first points in order hold the first points of all.
        points: list[tuple[int, int, float]] = []
        for first in range(0, len(series), SERIES_PER_QUERY):
            chunk = series[first : first + SERIES_PER_QUERY]
            points += await metrics.points_after(session, chunk, after, until_ms, limit + 1)
        points = sorted(points)[: limit + 1]
        await session.commit()
    more = len(points) > limit
    points = points[:limit]
    by_id = {s.id: s for s in series}
    names = {by_id[series_id].name for _, series_id, _ in points}
    grouped: dict[int, list[list[float]]] = {}
    for ts, series_id, value in points:
        grouped.setdefault(series_id, []).append([ts, value])
    payload = {
        "interval_s": interval_s,
        "from_ms": after[0],
        "until_ms": points[-1][0] if more else until_ms,
        "more": more,
        "series": [_entry(s, grouped.get(s.id, [])) for s in series if s.name in names],
    }
    cursor = (points[-1][0], points[-1][1]) if points else None
    return Batch(instance.id, payload, cursor)


def _entry(series: MetricSeries, points: list[list[float]]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": series.name,
        "labels": dict(series.labels),
        "source": series.source,
        "points": points,
    }
    if series.last_ts is not None and series.last_value is not None:
        entry["last"] = [series.last_ts, series.last_value]
    return entry


async def _selected(
    metrics: Metrics,
    session: AsyncSession,
    tenant_id: str,
    patterns: Sequence[str],
    labels: dict[str, str],
) -> list[MetricSeries]:
    """The tenant's series whose name matches a pattern and whose labels include ``labels``
    (a tenant's series are bounded by the metrics store's per-tenant limit)."""
    found: list[MetricSeries] = []
    page_cursor: str | None = None
    while True:
        page, page_cursor = await metrics.list_series(session, tenant_id, page_cursor, SERIES_PAGE)
        found += [
            series
            for series in page
            if any(fnmatch.fnmatchcase(series.name, p) for p in patterns)
            and all(series.labels.get(k) == v for k, v in labels.items())
        ]
        if page_cursor is None:
            return sorted(found, key=lambda series: series.id)


def _permission(manifest: dict[str, Any]) -> str | None:
    value = (manifest.get("permissions") or {}).get(PERMISSION)
    return value if isinstance(value, str) else None
