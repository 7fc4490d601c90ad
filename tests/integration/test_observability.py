"""/metrics, operation statistics and the log ring, through the app, on both backends.

- /metrics: after requests to paths with ids, unknown paths and a rate-limited key, every
  ``route`` label is a route template of the app (or ``<unmatched>``) and no label value
  holds an id, a tenant or a raw path; requests, rate-limit decisions and rejections,
  events published and the queue's figures are counted; the queue is read once per cache
  period however many scrapes come.
- /metrics is open on loopback by default, and with ``FORECOURT_METRICS_TOKEN`` set a
  missing or wrong bearer token is a 401 problem; without a token, a server listening
  beyond loopback answers loopback clients only.
- /api/v1/stats/operations{,/slow} show the routes called and a background job's timing;
  /api/v1/system/logs{,/stats} show records logged in the process, filtered by level and
  time, with credentials masked. (Who may call them: test_operator_routes.py.)
- Decisions made by the in-process limiter while Redis is unreachable are counted.
- After real deliveries to a receiver on loopback, ``forecourt_delivery_latency_seconds``
  counts each delivery once, when it ends, by outcome alone, from the event's acceptance:
  a delivery that succeeds on its retry after a ``Retry-After: 1`` counts at least that
  second, which no single attempt took.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from conftest import Harness, free_port, problem
from forecourt.app import create_app
from forecourt.observability.backlog import _age_s
from forecourt.observability.instruments import RATE_LIMIT_FAIL_OPEN, UNMATCHED_ROUTE
from forecourt.observability.logring import RING
from forecourt.observability.operations import OPERATIONS, ROLLUP, timed
from forecourt.ratelimit.failover import FailoverLimiter
from forecourt.ratelimit.memory import MemoryLimiter
from forecourt.ratelimit.policy import to_windows
from forecourt.ratelimit.redis import RedisLimiter
from forecourt.webhooks.queue import backlog
from receivers import Received, Receiver, Reply

RETRY_AFTER_S = 1  # what the receiver asks for: the retry comes no sooner
TOKEN = "metrics-token-" + "x" * 24
WAIT_S = 30.0  # a bound that catches a hang, not a timing
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of a scrape, by name and sorted labels."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(client: httpx.AsyncClient, **headers: str) -> Samples:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def templates(app: Any) -> set[str]:
    return {
        route.path_format or ""
        for route in iter_route_contexts(app.routes)
        if isinstance(route.original_route, APIRoute)
    }


async def test_labels_are_route_templates_never_ids(harness: Harness) -> None:
    before = await scrape(harness.client)
    key = await harness.create_key(["events:read", "events:publish"], rate_limits={"minute": 3})
    published = await harness.client.post(
        "/api/v1/events", json={"type": "dashboard.created", "data": {}}, headers=harness.auth()
    )
    assert published.status_code in (200, 201, 202), published.text
    event_id = published.json()["id"]
    paths = [
        f"/api/v1/events/{event_id}",
        "/api/v1/events/evt_doesnotexist42",
        f"/api/v1/keys/{key['id']}",
        "/no/such/path/abc123",
        "/api/v1/events/../../etc/passwd",
    ]
    for path in paths:
        await harness.client.get(path, headers=harness.auth())
    statuses = [
        (await harness.client.get("/api/v1/events", headers=harness.auth(key["key"]))).status_code
        for _ in range(4)
    ]
    assert statuses[-1] == 429, statuses

    response = await harness.client.get("/metrics")
    found = samples(response.text)
    allowed = templates(create_app(harness.fc.settings, forecourt=harness.fc))
    routes = {dict(labels)["route"] for _, labels in found if "route" in dict(labels)}
    assert routes and routes <= allowed | {UNMATCHED_ROUTE}, routes - allowed
    forbidden = {event_id, key["id"], harness.fc.operator_tenant_id, "abc123", "passwd"}
    for name, labels in found:
        for label, text in labels:
            assert not any(f and f in text for f in forbidden), (name, label, text)

    def grew(name: str, **labels: str) -> float:
        return value(found, name, **labels) - value(before, name, **labels)

    item = {"route": "/api/v1/events/{event_id}", "method": "GET"}
    assert grew("forecourt_http_requests_total", **item, status="2xx") == 1
    assert grew("forecourt_http_requests_total", **item, status="4xx") == 1
    assert grew("forecourt_http_request_duration_seconds_count", **item) == 2
    unmatched = {"route": UNMATCHED_ROUTE, "method": "GET", "status": "4xx"}
    assert grew("forecourt_http_requests_total", **unmatched) >= 2  # the 404s and the 429
    assert grew("forecourt_ratelimit_decisions_total", subject="key", outcome="limited") == 1
    assert grew("forecourt_ratelimit_decisions_total", subject="key", outcome="allowed") >= 3
    assert grew("forecourt_ratelimit_rejections_total", window="minute") == 1
    assert grew("forecourt_events_published_total") == 1
    assert ("forecourt_delivery_queue_depth", ()) in found
    assert ("forecourt_delivery_queue_oldest_due_seconds", ()) in found
    assert ("forecourt_stream_connections", (("kind", "websocket"),)) in found


async def test_queue_figures_cached_between_scrapes(harness_factory: Any) -> None:
    harness: Harness = await harness_factory(webhook_allow_private="127.0.0.0/8")
    endpoint = await harness.client.post(
        "/api/v1/webhooks",
        # Nothing listens there: each delivery fails once, then waits for its retry.
        json={"url": f"http://127.0.0.1:{free_port()}/hook", "event_types": ["dashboard.*"]},
        headers=harness.auth(),
    )
    assert endpoint.status_code == 201, endpoint.text
    for _ in range(3):
        sent = await harness.client.post(
            "/api/v1/events", json={"type": "dashboard.updated", "data": {}}, headers=harness.auth()
        )
        assert sent.status_code in (200, 201, 202), sent.text

    async def waiting() -> int:
        async with harness.fc.sessionmaker() as session:
            return (await backlog(session))[0]

    deadline = asyncio.get_running_loop().time() + WAIT_S
    while await waiting() != 3:
        assert asyncio.get_running_loop().time() < deadline, "the deliveries never waited"
        await asyncio.sleep(0.05)
    counter = harness.fc.backlog
    # A fresh reading for this test, then a clock that stands still: however long twenty
    # scrapes take on a loaded machine, they all fall within one reading's lifetime.
    counter._read_at = -float("inf")
    frozen = time.monotonic()
    counter._clock = lambda: frozen
    queries = counter.queries
    results = [await scrape(harness.client) for _ in range(20)]
    assert counter.queries == queries + 1
    for result in results:
        assert value(result, "forecourt_delivery_queue_depth") == 3
        # Their retries are due later: none is overdue.
        assert value(result, "forecourt_delivery_queue_oldest_due_seconds") == 0


async def test_metrics_open_on_loopback_by_default(harness: Harness) -> None:
    assert harness.fc.settings.metrics_token is None
    await scrape(harness.client)


async def test_metrics_token_required_when_set(harness_factory: Any) -> None:
    harness: Harness = await harness_factory(metrics_token=TOKEN, host="0.0.0.0")
    missing = await harness.client.get("/metrics")
    body = problem(missing, 401, "unauthenticated")
    assert "token" in body["detail"]
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = await harness.client.get("/metrics", headers={"Authorization": "Bearer nope" * 3})
    problem(wrong, 401, "unauthenticated")
    # An API key, even the owner's, is not the metrics token.
    problem(await harness.client.get("/metrics", headers=harness.auth()), 401, "unauthenticated")
    await scrape(harness.client, Authorization=f"Bearer {TOKEN}")


async def test_metrics_beyond_loopback_without_token_only_to_loopback(
    harness_factory: Any,
) -> None:
    harness: Harness = await harness_factory(host="0.0.0.0")
    await scrape(harness.client)  # the harness's client is 127.0.0.1
    app = create_app(harness.fc.settings, forecourt=harness.fc)
    remote = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
    async with httpx.AsyncClient(transport=remote, base_url="http://testserver") as client:
        body = problem(await client.get("/metrics"), 401, "unauthenticated")
        assert "FORECOURT_METRICS_TOKEN" in body["detail"]


async def test_operation_statistics(harness: Harness) -> None:
    OPERATIONS.clear()
    for _ in range(3):
        assert (await harness.client.get("/api/v1/keys", headers=harness.auth())).status_code == 200
    async with timed("probe"):  # a name no background job of the node records
        pass
    response = await harness.client.get("/api/v1/stats/operations", headers=harness.auth())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["windows"] == ["1m", "5m", "1h"]
    by_name = {op["name"]: op for op in body["operations"]}
    keys = by_name["GET /api/v1/keys"]
    assert keys["kind"] == "route"
    for window in body["windows"]:
        figures = keys["windows"][window]
        assert figures["count"] == 3
        assert 0 <= figures["min_ms"] <= figures["p50_ms"] <= figures["p95_ms"]
        assert figures["p95_ms"] <= figures["max_ms"]
        assert figures["min_ms"] <= figures["avg_ms"] <= figures["max_ms"]
    assert by_name["probe"]["kind"] == "job" and by_name["probe"]["windows"]["1m"]["count"] == 1

    jobs = await harness.client.get(
        "/api/v1/stats/operations", params={"kind": "job"}, headers=harness.auth()
    )
    assert {op["kind"] for op in jobs.json()["operations"]} == {"job"}

    slow = await harness.client.get(
        "/api/v1/stats/operations/slow", params={"window": "5m", "limit": 5}, headers=harness.auth()
    )
    assert slow.status_code == 200, slow.text
    listed = slow.json()["operations"]
    assert 1 <= len(listed) <= 5
    durations = [op["duration_ms"] for op in listed]
    assert durations == sorted(durations, reverse=True)
    assert {op["name"] for op in listed} <= set(by_name) | {
        "GET /api/v1/stats/operations",
    }
    bad = await harness.client.get(
        "/api/v1/stats/operations/slow", params={"window": "2d"}, headers=harness.auth()
    )
    problem(bad, 422, "invalid-input")


async def test_logs_ring_and_stats(harness: Harness) -> None:
    log = logging.getLogger("forecourt.test.observability")
    marker = f"ring-marker-{id(harness)}"
    before = datetime.now(UTC) - timedelta(seconds=1)
    stats_before = (
        await harness.client.get("/api/v1/system/logs/stats", headers=harness.auth())
    ).json()
    log.info("%s info", marker)
    log.warning("%s warning with key fck_live_supersecretvalue123 and password=hunter22", marker)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("%s error", marker)

    response = await harness.client.get(
        "/api/v1/system/logs",
        params={"level": "warning", "since": before.isoformat()},
        headers=harness.auth(),
    )
    assert response.status_code == 200, response.text
    mine = [r for r in response.json()["records"] if marker in r["message"]]
    assert [r["level"] for r in mine] == ["warning", "error"]
    assert "fck_live_supersecretvalue123" not in mine[0]["message"]
    assert "hunter22" not in mine[0]["message"]
    assert mine[1]["exception"] == "ValueError"
    assert mine[0]["logger"] == "forecourt.test.observability"

    later = await harness.client.get(
        "/api/v1/system/logs",
        params={"since": (datetime.now(UTC) + timedelta(seconds=5)).isoformat()},
        headers=harness.auth(),
    )
    assert [r for r in later.json()["records"] if marker in r["message"]] == []
    naive = await harness.client.get(
        "/api/v1/system/logs", params={"since": "2026-01-01T00:00:00"}, headers=harness.auth()
    )
    assert problem(naive, 422, "invalid-input")["errors"][0]["field"] == "since"

    stats = await harness.client.get("/api/v1/system/logs/stats", headers=harness.auth())
    assert stats.status_code == 200, stats.text
    grown = {
        level: n - stats_before["by_level"][level] for level, n in stats.json()["by_level"].items()
    }
    assert grown["info"] >= 1 and grown["warning"] >= 1 and grown["error"] >= 1
    assert stats.json()["total"] == sum(stats.json()["by_level"].values())
    assert RING.entries(level=logging.ERROR)[-1].message == f"{marker} error"


@pytest.mark.parametrize("level", ["verbose", "WARN"])
async def test_logs_unknown_level(harness: Harness, level: str) -> None:
    response = await harness.client.get(
        "/api/v1/system/logs", params={"level": level}, headers=harness.auth()
    )
    assert problem(response, 422, "invalid-input")["errors"][0]["field"] == "level"


async def test_fail_open_decisions_are_counted() -> None:
    """A Redis nothing listens on: each decision the fallback makes counts once."""
    client = Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5, socket_timeout=0.5
    )
    limiter = FailoverLimiter(RedisLimiter(client, prefix="obs:"), MemoryLimiter())
    before = RATE_LIMIT_FAIL_OPEN._value.get()
    try:
        windows = to_windows({"minute": 10})
        for _ in range(3):
            assert (await limiter.hit("key:k", windows)).allowed
    finally:
        await limiter.aclose()
        await client.aclose()
    assert limiter.primary_down
    assert RATE_LIMIT_FAIL_OPEN._value.get() - before == 3


def test_queue_age_counts_from_the_earliest_due_time() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert _age_s(None, now) == 0
    assert _age_s(now + timedelta(seconds=30), now) == 0  # due later: not overdue
    assert _age_s(now - timedelta(seconds=90), now) == 90
    assert _age_s((now - timedelta(seconds=5)).replace(tzinfo=None), now) == 5  # SQLite


async def test_points_written_and_rollups_are_counted(harness: Harness) -> None:
    before = value(await scrape(harness.client), "forecourt_metric_points_written_total")
    OPERATIONS.clear()
    points = [{"name": "app.depth", "value": i, "labels": {"q": "a"}} for i in range(7)]
    written = await harness.client.post(
        "/api/v1/metrics", json={"points": points}, headers=harness.auth()
    )
    assert written.status_code in (200, 202), written.text
    await harness.fc.metrics.flush()
    after = value(await scrape(harness.client), "forecourt_metric_points_written_total")
    assert after - before >= 7  # a collector of the node may have written too
    # The node's own rollup pass may have run too; a pass is counted either way.
    passes = OPERATIONS.summaries("1m").get(ROLLUP)
    before_passes = passes[1].count if passes else 0
    await harness.fc.metrics.roll_up()
    assert OPERATIONS.summaries("1m")[ROLLUP][1].count >= before_passes + 1


async def test_delivery_latency_from_acceptance_to_the_end(harness_factory: Any) -> None:
    harness: Harness = await harness_factory(webhook_allow_private="127.0.0.0/8")

    def busy_then_ok(received: Received, seen: int) -> Reply:
        if seen == 1:
            return Reply(status=503, headers={"Retry-After": str(RETRY_AFTER_S)})
        return Reply()

    async with Receiver() as receiver:
        receiver.reply("/ok", busy_then_ok)
        receiver.reply("/bad", Reply(status=400))  # final at once: the delivery fails
        endpoints = {}
        for path in ("/ok", "/bad"):
            created = await harness.client.post(
                "/api/v1/webhooks",
                json={"url": receiver.url(path), "event_types": ["dashboard.*"]},
                headers=harness.auth(),
            )
            assert created.status_code == 201, created.text
            endpoints[path] = created.json()["id"]
        before = await scrape(harness.client)
        began = time.time()
        sent = await harness.client.post(
            "/api/v1/events", json={"type": "dashboard.updated", "data": {}}, headers=harness.auth()
        )
        assert sent.status_code in (200, 201, 202), sent.text

        async def status(endpoint_id: str) -> str | None:
            listed = await harness.client.get(
                f"/api/v1/webhooks/{endpoint_id}/deliveries", headers=harness.auth()
            )
            assert listed.status_code == 200, listed.text
            items = listed.json()["items"]
            return items[0]["status"] if items else None

        deadline = asyncio.get_running_loop().time() + WAIT_S
        while [await status(endpoints[p]) for p in ("/ok", "/bad")] != ["succeeded", "failed"]:
            assert asyncio.get_running_loop().time() < deadline, "the deliveries never ended"
            await asyncio.sleep(0.05)
        after = await scrape(harness.client)
        span = time.time() - began
    assert len(receiver.ids("/ok")) == 2 and len(receiver.ids("/bad")) == 1

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    latency = "forecourt_delivery_latency_seconds"
    for outcome in ("succeeded", "failed"):
        assert grew(f"{latency}_count", outcome=outcome) == 1
        assert grew(f"{latency}_bucket", outcome=outcome, le="+Inf") == 1
    # The retry waited out the receiver's Retry-After: the delivery took at least that long
    # since the event was accepted, and no longer than the test watched it.
    succeeded = grew(f"{latency}_sum", outcome="succeeded")
    assert RETRY_AFTER_S <= succeeded <= span
    assert grew(f"{latency}_bucket", outcome="succeeded", le="0.5") == 0
    assert 0 <= grew(f"{latency}_sum", outcome="failed") <= span
    # A retry is not an end: the 503 of "/ok" counts as an attempt, not as a latency.
    assert grew("forecourt_webhook_attempts_total", outcome="retrying") == 1
    # Each attempt is still timed on its own.
    assert grew("forecourt_webhook_attempt_seconds_count") == 3
    # The outcome is the only label: never an endpoint, a delivery or a tenant.
    for name, found in after:
        if name.startswith(latency):
            keys = {key for key, _ in found}
            assert keys <= {"outcome", "le"}, (name, found)
            assert dict(found)["outcome"] in ("succeeded", "failed"), (name, found)
