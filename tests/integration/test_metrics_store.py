"""The metrics store on both backends: rollups compose (Hypothesis, against a direct
computation over the raw points), retention prunes in bounded batches, the per-tenant bound
on series, a full write buffer, and no accepted point lost on a clean stop."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, text

from conftest import Harness, problem
from forecourt.core import Forecourt
from forecourt.metrics.series import REFUSED_CARDINALITY
from forecourt.metrics.service import Point, SeriesQuery

QUIET = {"metrics_rollup_interval_s": 3600.0, "metrics_flush_interval_s": 3600.0}
AGGS = ["avg", "min", "max", "sum", "count", "last"]
_names = itertools.count()


@pytest.fixture
def store(settings_factory: Any) -> Iterator[tuple[asyncio.Runner, Forecourt]]:
    """A started node driven from a synchronous (Hypothesis) test on a loop of its own."""
    runner = asyncio.Runner()
    fc = Forecourt(settings_factory(**QUIET))
    runner.run(fc.start(run_workers=False))
    try:
        yield runner, fc
    finally:
        runner.run(fc.stop())
        runner.close()


def expected(points: list[tuple[int, float]], base_s: int, step: int, agg: str) -> list[Any]:
    latest: dict[int, float] = {}
    for offset_ms, value in points:
        latest[offset_ms] = value  # a repeated time keeps the last value written
    groups: dict[int, list[tuple[int, float]]] = {}
    for offset_ms, value in sorted(latest.items()):
        ts_s = base_s + offset_ms // 1000
        groups.setdefault(ts_s - ts_s % step, []).append((offset_ms, value))
    out = []
    for key, items in sorted(groups.items()):
        values = [v for _, v in items]
        result = {
            "avg": math.fsum(values) / len(values),
            "min": min(values),
            "max": max(values),
            "sum": math.fsum(values),
            "count": float(len(values)),
            "last": items[-1][1],
        }[agg]
        out.append((key, result))
    return out


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    points=st.lists(
        st.tuples(
            st.integers(0, 3 * 3600 * 1000 - 1),
            st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
        ),
        min_size=1,
        max_size=150,
    ),
    step=st.sampled_from([60, 120, 300, 900, 3600, 7200, 10800]),
    agg=st.sampled_from(AGGS),
)
def test_rollups_compose(
    store: tuple[asyncio.Runner, Forecourt],
    points: list[tuple[int, float]],
    step: int,
    agg: str,
) -> None:
    runner, fc = store
    name = f"compose.n{next(_names)}"
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=4)
    base_s = int(base.timestamp())
    tenant = fc.metrics.default_tenant_id
    assert tenant is not None

    async def run() -> tuple[str, list[Any]]:
        batch = [Point(name, v, {"k": "v"}, base_s * 1000 + off) for off, v in points]
        accepted, refused = await fc.metrics.write(tenant, "app", batch)
        assert (accepted, refused) == (len(batch), [])
        await fc.metrics.flush()
        await fc.metrics.roll_up()
        query = SeriesQuery(name, {}, base, base + timedelta(hours=3), step, agg)
        async with fc.sessionmaker() as session:
            how, found = await fc.metrics.query(session, tenant, query)
        [(_, answer)] = found
        return ("1h" if how.resolution == 3600 else "1m"), answer

    resolution, answer = runner.run(run())
    assert resolution == ("1h" if step % 3600 == 0 else "1m")
    want = expected(points, base_s, step, agg)
    assert [k for k, _ in answer] == [k for k, _ in want]
    for (_, got), (_, value) in zip(answer, want, strict=True):
        assert math.isclose(got, value, rel_tol=1e-9, abs_tol=1e-6), (got, value)


async def test_retention_prunes_in_bounded_batches(harness_factory: Any) -> None:
    h: Harness = await harness_factory(metrics_prune_batch=7, **QUIET)
    fc = h.fc
    tenant = fc.metrics.default_tenant_id
    assert tenant is not None
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    now_s = int(now.timestamp())
    # A point every 10 minutes over the last 20 hours, in two series: 20 rows of minutes each.
    points = [
        Point("keep.me", float(i), {"s": s}, (now_s - 20 * 3600 + i * 600) * 1000)
        for i in range(120)
        for s in ("a", "b")
    ]
    assert (await fc.metrics.write(tenant, "app", points))[0] == 240
    await fc.metrics.flush()
    await fc.metrics.roll_up()

    deletes: list[int] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM METRIC_"):
            deletes.append(cursor.rowcount)

    sync_engine = fc.engine.sync_engine
    event.listen(sync_engine, "after_cursor_execute", count)
    try:
        # Raw points older than 10 hours go (60 per series); buckets stay.
        later = now + timedelta(days=fc.settings.metrics_raw_retention_days, hours=-10)
        done = await fc.metrics.prune(now=later)
        assert done == {"raw": 120, "1m": 0, "1h": 0}
        assert deletes and max(deletes) <= 7
        assert sum(deletes) == 120
        deletes.clear()
        # Past 1-minute retention too: every raw point, and the rows of minutes whose whole
        # hour is older than 10 hours (10 per series).
        later = now + timedelta(days=fc.settings.metrics_minute_retention_days, hours=-10)
        done = await fc.metrics.prune(now=later)
        assert done == {"raw": 120, "1m": 20, "1h": 0}
        assert max(deletes) <= 7
    finally:
        event.remove(sync_engine, "after_cursor_execute", count)
    async with fc.engine.connect() as conn:
        raw = (await conn.execute(text("SELECT count(*) FROM metric_points"))).scalar()
        minutes = (
            await conn.execute(text("SELECT count(*) FROM metric_buckets WHERE resolution = 60"))
        ).scalar()
        days = (
            await conn.execute(text("SELECT count(*) FROM metric_buckets WHERE resolution = 3600"))
        ).scalar()
    assert (raw, minutes) == (0, 20)
    assert days in (2 * 1, 2 * 2)  # the days the 20 hours span, per series
    # What is left still answers: the last 10 hours' minutes, and all 20 hours.
    async with fc.sessionmaker() as session:
        span = (now - timedelta(hours=10), now)
        _, found = await fc.metrics.query(
            session, tenant, SeriesQuery("keep.me", {"s": "a"}, *span, 60, "count")
        )
        assert [v for _, v in found[0][1]] == [1.0] * 60
        _, found = await fc.metrics.query(
            session,
            tenant,
            SeriesQuery("keep.me", {"s": "a"}, now - timedelta(hours=20), now, 3600, "count"),
        )
        assert [v for _, v in found[0][1]] == [6.0] * 20


async def test_series_past_the_tenant_bound_are_refused(
    harness_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    h: Harness = await harness_factory(metrics_max_series_per_tenant=3, **QUIET)
    points = [{"name": "bounded", "value": 1, "labels": {"n": str(i)}} for i in range(5)]
    with caplog.at_level(logging.WARNING, logger="forecourt.metrics"):
        response = await h.client.post("/api/v1/metrics", json={"points": points}, headers=h.auth())
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 3
    assert [(r["labels"], r["reason"]) for r in body["refused"]] == [
        ({"n": "3"}, REFUSED_CARDINALITY),
        ({"n": "4"}, REFUSED_CARDINALITY),
    ]
    assert h.fc.metrics.registry.refused[REFUSED_CARDINALITY] == 2
    assert any("refused 2 new series" in r.getMessage() for r in caplog.records)
    # Known series still take points; another tenant has a bound of its own.
    again = await h.client.post("/api/v1/metrics", json={"points": points[:3]}, headers=h.auth())
    assert again.json() == {"accepted": 3, "refused": []}
    other = await h.create_tenant("other")
    theirs = await h.client.post(
        "/api/v1/metrics", json={"points": points[:3]}, headers=h.auth(other["admin_key"])
    )
    assert theirs.json() == {"accepted": 3, "refused": []}
    await h.fc.metrics.flush()
    listed = await h.client.get("/api/v1/metrics", headers=h.auth())
    assert len(listed.json()["items"]) == 3


async def test_a_full_buffer_answers_503_and_accepts_nothing(harness_factory: Any) -> None:
    h: Harness = await harness_factory(metrics_buffer_points=10, metrics_buffer_wait_s=0.0, **QUIET)
    points = [{"name": "full", "value": i} for i in range(8)]
    ok = await h.client.post("/api/v1/metrics", json={"points": points}, headers=h.auth())
    assert ok.json()["accepted"] == 8
    full = await h.client.post("/api/v1/metrics", json={"points": points[:5]}, headers=h.auth())
    problem(full, 503, "metrics-buffer-full")
    assert full.headers["retry-after"] == "1"
    assert h.fc.metrics.writer.pending == 8
    assert await h.fc.metrics.flush() == 8
    again = await h.client.post("/api/v1/metrics", json={"points": points[:5]}, headers=h.auth())
    assert again.json()["accepted"] == 5


async def test_a_clean_stop_writes_every_accepted_point(settings_factory: Any) -> None:
    settings = settings_factory(**QUIET)
    fc = Forecourt(settings)
    await fc.start(run_workers=False)
    start_ms = int(time.time() * 1000) - 10_000
    for i in range(25):
        at = datetime.fromtimestamp((start_ms + i) / 1000, UTC)
        assert await fc.metrics.record("stop.me", float(i), {"i": str(i % 5)}, at=at)
    assert await fc.metrics.record("stop.me", 1.0)  # now
    assert fc.metrics.writer.pending == 26
    await fc.stop()

    again = Forecourt(settings)
    await again.start(run_workers=False)
    try:
        async with again.engine.connect() as conn:
            stored = (await conn.execute(text("SELECT count(*) FROM metric_points"))).scalar()
            sources = (
                await conn.execute(text("SELECT DISTINCT source FROM metric_series"))
            ).scalars()
            assert (stored, list(sources)) == (26, ["forecourt"])
    finally:
        await again.stop()
