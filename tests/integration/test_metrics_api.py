"""The metrics API on both backends: points written through POST /api/v1/metrics are
listed as series and answered by /api/v1/metrics/query at every resolution (raw, 1-minute
and 1-hour rollups), and every bad input is a 422 naming its field that stores nothing."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conftest import Harness, problem

QUIET = {"metrics_rollup_interval_s": 3600.0}  # rollups run when the test says


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def hour_start(hours_ago: int) -> datetime:
    """An even hour at least ``hours_ago`` back: steps of 2 h start at even hours."""
    now = datetime.now(UTC)
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours_ago)
    return start - timedelta(hours=start.hour % 2)


async def write(h: Harness, points: list[dict[str, Any]], key: str | None = None) -> Any:
    response = await h.client.post("/api/v1/metrics", json={"points": points}, headers=h.auth(key))
    assert response.status_code == 202, response.text
    return response.json()


async def query(h: Harness, key: str | None = None, **params: Any) -> Any:
    response = await h.client.get("/api/v1/metrics/query", params=params, headers=h.auth(key))
    assert response.status_code == 200, response.text
    return response.json()


async def test_write_then_query_at_each_resolution(harness_factory: Any) -> None:
    h: Harness = await harness_factory(**QUIET)
    base = hour_start(3)
    # Two hours of a point every 10 s: values 0, 1, 2, ... on host a; twice that on host b.
    points = []
    for i in range(720):
        at = iso(base + timedelta(seconds=10 * i))
        points.append({"name": "app.load", "value": i, "labels": {"host": "a"}, "time": at})
        points.append({"name": "app.load", "value": 2 * i, "labels": {"host": "b"}, "time": at})
    for chunk in range(0, len(points), 500):
        assert (await write(h, points[chunk : chunk + 500]))["accepted"] == len(
            points[chunk : chunk + 500]
        )
    await h.fc.metrics.flush()
    await h.fc.metrics.roll_up()

    span = {"from": iso(base), "to": iso(base + timedelta(hours=2))}
    raw = await query(h, name="app.load", labels="host:a", step=30, agg="sum", **span)
    assert raw["resolution"] == "raw"
    [series] = raw["series"]
    assert series["labels"] == {"host": "a"}
    assert series["points"][:2] == [
        [iso(base), 0 + 1 + 2],
        [iso(base + timedelta(seconds=30)), 3 + 4 + 5],
    ]

    minute = await query(h, name="app.load", labels="host:b", step=300, agg="max", **span)
    assert minute["resolution"] == "1m"
    [series] = minute["series"]
    assert len(series["points"]) == 24
    assert series["points"][0] == [iso(base), 2 * 29.0]

    hour = await query(h, name="app.load", step=3600, agg="avg", **span)
    assert hour["resolution"] == "1h"
    by_host = {s["labels"]["host"]: s["points"] for s in hour["series"]}
    assert by_host["a"] == [[iso(base), 179.5], [iso(base + timedelta(hours=1)), 539.5]]
    assert by_host["b"] == [[iso(base), 359.0], [iso(base + timedelta(hours=1)), 1079.0]]

    counts = await query(h, name="app.load", labels="host:a", step=7200, agg="count", **span)
    assert counts["series"][0]["points"] == [[iso(base), 720.0]]
    last = await query(h, name="app.load", labels="host:a", step=3600, agg="last", **span)
    assert [v for _, v in last["series"][0]["points"]] == [359.0, 719.0]
    p95 = await query(h, name="app.load", labels="host:a", step=3600, agg="p95", **span)
    assert p95["resolution"] == "raw"
    assert [v for _, v in p95["series"][0]["points"]] == [341.0, 701.0]

    listed = await h.client.get("/api/v1/metrics", headers=h.auth())
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert {(s["name"], s["labels"]["host"], s["source"]) for s in items} == {
        ("app.load", "a", "app"),
        ("app.load", "b", "app"),
    }
    a = next(s for s in items if s["labels"] == {"host": "a"})
    assert a["first_point_at"].startswith(iso(base)[:19])
    assert a["last_value"] == 719.0


async def test_series_list_pages(harness_factory: Any) -> None:
    h: Harness = await harness_factory(**QUIET)
    await write(h, [{"name": "page.me", "value": 1, "labels": {"n": str(i)}} for i in range(5)])
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        response = await h.client.get("/api/v1/metrics", params=params, headers=h.auth())
        assert response.status_code == 200, response.text
        body = response.json()
        seen += [s["id"] for s in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 5
    problem(
        await h.client.get("/api/v1/metrics", params={"cursor": "zz!"}, headers=h.auth()),
        422,
        "invalid-input",
    )


async def test_scopes(harness: Harness) -> None:
    reader = (await harness.create_key(["metrics:read"]))["key"]
    writer = (await harness.create_key(["metrics:write"]))["key"]
    body = {"points": [{"name": "x.y", "value": 1}]}
    problem(
        await harness.client.post("/api/v1/metrics", json=body, headers=harness.auth(reader)),
        403,
        "forbidden",
    )
    assert (await write(harness, body["points"], key=writer))["accepted"] == 1
    other = (await harness.create_key(["events:read"]))["key"]
    problem(
        await harness.client.get("/api/v1/metrics", headers=harness.auth(other)), 403, "forbidden"
    )
    response = await harness.client.get("/api/v1/metrics", headers=harness.auth(reader))
    assert response.status_code == 200


BAD_WRITES = [
    ({"points": [{"name": "9bad", "value": 1}]}, "points.0.name"),
    ({"points": [{"name": "bad name", "value": 1}]}, "points.0.name"),
    ({"points": [{"name": "x" * 201, "value": 1}]}, "points.0.name"),
    ({"points": [{"name": "ok", "value": "1"}]}, "points.0.value"),
    ({"points": [{"name": "ok", "value": True}]}, "points.0.value"),
    ({"points": [{"name": "ok", "value": 1, "labels": {"bad-key": "v"}}]}, "points.0.labels"),
    ({"points": [{"name": "ok", "value": 1, "labels": {"k": 1}}]}, "points.0.labels.k"),
    (
        {"points": [{"name": "ok", "value": 1, "labels": {f"k{i}": "v" for i in range(17)}}]},
        "points.0.labels",
    ),
    ({"points": [{"name": "ok", "value": 1, "time": "2001-01-01T00:00:00Z"}]}, "points.0.time"),
    ({"points": [{"name": "ok", "value": 1, "time": "2999-01-01T00:00:00Z"}]}, "points.0.time"),
    ({"points": [{"name": "ok", "value": 1, "time": "2026-01-01T00:00:00"}]}, "points.0.time"),
    ({"points": [{"name": "ok", "value": 1}] * 5001}, "points"),
    ({"points": []}, "points"),
    ({"points": [{"name": "ok", "value": 1}], "source": "forecourt"}, "source"),
    ({"points": [{"name": "ok", "value": 1}], "source": "pin_abc"}, "source"),
    ({"points": [{"name": "ok", "value": 1, "extra": 1}]}, "points.0.extra"),
]


@pytest.mark.parametrize(("body", "field"), BAD_WRITES)
async def test_bad_writes_store_nothing(harness: Harness, body: Any, field: str) -> None:
    found = problem(
        await harness.client.post("/api/v1/metrics", json=body, headers=harness.auth()),
        422,
        "invalid-input",
    )
    assert any(e["field"].startswith(field) for e in found["errors"]), found
    await harness.fc.metrics.flush()
    listed = await harness.client.get("/api/v1/metrics", headers=harness.auth())
    assert listed.json()["items"] == []


async def test_non_finite_values_are_refused(harness: Harness) -> None:
    for text in ("NaN", "Infinity", "-Infinity", "1e999"):
        raw = '{"points": [{"name": "ok", "value": ' + text + "}]}"
        response = await harness.client.post(
            "/api/v1/metrics",
            content=raw,
            headers={**harness.auth(), "content-type": "application/json"},
        )
        assert response.status_code in (400, 422), (text, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    await harness.fc.metrics.flush()
    listed = await harness.client.get("/api/v1/metrics", headers=harness.auth())
    assert listed.json()["items"] == []


BAD_QUERIES = [
    ({"name": "x", "from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from"),
    ({"name": "x", "step": 0}, "step"),
    ({"name": "x", "step": -60}, "step"),
    ({"name": "x", "step": "abc"}, "step"),
    ({"name": "x", "agg": "median"}, "agg"),
    ({"name": "x", "labels": "novalue"}, "labels"),
    ({"name": "x", "labels": "bad-key:v"}, "labels"),
    ({"name": "x", "labels": ":v"}, "labels"),
    ({"name": "bad name"}, "name"),
    ({}, "name"),
    ({"name": "x", "from": "2026-01-01T00:00:00"}, "from"),
    (
        {"name": "x", "from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z", "step": 1},
        "step",
    ),
]


@pytest.mark.parametrize(("params", "field"), BAD_QUERIES)
async def test_bad_queries(harness: Harness, params: dict[str, Any], field: str) -> None:
    found = problem(
        await harness.client.get("/api/v1/metrics/query", params=params, headers=harness.auth()),
        422,
        "invalid-input",
    )
    assert any(e["field"].startswith(field) for e in found["errors"]), found


def expected_points(
    points: list[tuple[int, float]], start_s: int, end_s: int, step: int, agg: str
) -> list[list[Any]]:
    """The answer computed from the points themselves: one pair per step holding points."""
    steps: dict[int, list[float]] = {}
    for ts, value in sorted(points):
        if start_s <= ts < end_s:
            steps.setdefault(ts - ts % step, []).append(value)
    pick = {
        "avg": lambda v: math.fsum(v) / len(v),
        "sum": math.fsum,
        "min": min,
        "max": max,
        "last": lambda v: v[-1],
        "count": lambda v: float(len(v)),
    }[agg]
    return [[iso(datetime.fromtimestamp(k, UTC)), pick(v)] for k, v in sorted(steps.items())]


@pytest.mark.parametrize("agg", ["avg", "sum", "min", "max", "last", "count"])
async def test_answers_through_the_api_match_the_points(harness_factory: Any, agg: str) -> None:
    """Rollups answered bucket by bucket and composed, through the JSON answer: windows that
    cut rows of buckets, minutes and hours without points, values of every size."""
    h: Harness = await harness_factory(**QUIET)
    base = hour_start(4)
    base_s = int(base.timestamp())
    points = []
    for i in range(4 * 60):
        if i % 7 in (3, 4) or 100 <= i < 170:  # empty minutes, and a whole empty hour
            continue
        for k in range(1 + i % 3):
            value = ((i * 7919 + k * 104729) % 2001 - 1000) / 7 * 10.0 ** (i % 5 - 2)
            points.append((base_s + i * 60 + k * 13, value))
    body = [
        {"name": "exact.me", "value": v, "time": iso(datetime.fromtimestamp(ts, UTC))}
        for ts, v in points
    ]
    for chunk in range(0, len(body), 500):
        await write(h, body[chunk : chunk + 500])
    await h.fc.metrics.flush()
    await h.fc.metrics.roll_up()

    for step, start_min, end_min in [
        (60, 0, 240),
        (60, 17, 163),
        (120, 44, 239),
        (300, 5, 240),
        (3600, 0, 240),
        (7200, 0, 240),
    ]:
        start_s, end_s = base_s + start_min * 60, base_s + end_min * 60 - 1
        answer = await query(
            h,
            name="exact.me",
            step=step,
            agg=agg,
            **{
                "from": iso(datetime.fromtimestamp(start_s, UTC)),
                "to": iso(datetime.fromtimestamp(end_s, UTC)),
            },
        )
        assert answer["resolution"] == ("1h" if step % 3600 == 0 else "1m")
        [series] = answer["series"]
        want = expected_points(points, start_s - start_s % step, end_s, step, agg)
        assert [t for t, _ in series["points"]] == [t for t, _ in want], (step, start_min)
        for (_, got), (_, value) in zip(series["points"], want, strict=True):
            assert math.isclose(got, value, rel_tol=1e-9, abs_tol=1e-9), (step, got, value)
