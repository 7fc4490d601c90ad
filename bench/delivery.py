"""Webhook delivery through the whole path, against a bare HTTP client to the same receiver.

Run from the project root (PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 for the
second line)::

    python -m bench.delivery [--events N] [--latency-duration S] [--postgres-url URL]

Three processes: a Forecourt server (uvicorn, with its delivery worker, like
``forecourt serve``), a loopback aiohttp receiver that answers 200 and notes when each
webhook arrived, and this one, which publishes and measures.

Throughput: N events are published through ``POST /api/v1/events/batch`` to the one endpoint
subscribed; the time runs from the first publish until the receiver has all N webhook-ids and
the database has all N attempts logged as succeeded. The baseline, in the same run, is a bare
aiohttp client (keep-alive, as many connections as the worker's ``delivery_concurrency``)
posting N copies of a delivered request (same body, same headers, a webhook-id each) to the
same receiver: the physical limit of the path on this machine. The server's bound per endpoint
is raised to that concurrency too (``same_concurrency``), so both post at the same
concurrency. The figure is the ratio of the two rates; the bare client runs before and after
Forecourt and its faster run counts.

Latency: at half the measured throughput, events fall due at a steady rate (open loop) for a
few seconds and go out as the throughput run sends them, through the batch endpoint: every
20 ms one request with what fell due since the last one. Per event, receiver arrival minus the
moment it fell due (so the wait for its batch counts). Then, for reference, one request per
event at the same rate, and at a light load (100 events/s).

Once on SQLite, once on PostgreSQL (a fresh database, dropped afterwards) with Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field

import aiohttp
import orjson

from bench._common import (
    DEFAULT_POSTGRES_URL,
    DEFAULT_REDIS_URL,
    JSON_HEADERS,
    LOOPBACK,
    Queue,
    ReceiverClient,
    Server,
    bare,
    bench_settings,
    create_endpoints,
    event_body,
    machine,
    percentile,
    postgres_database,
    postgres_reachable,
    receiver,
    redis_prefix,
    redis_reachable,
    run,
    same_concurrency,
    server,
    wait_until,
)
from bench._common import serve as serve_app

EVENTS = 3_000
WARMUP_EVENTS = 300
BATCH = 100  # events per publish request (the API's maximum)
PUBLISHERS = 4  # batch requests in flight at once
TICK_S = 0.02  # the batched latency run publishes what fell due every 20 ms
LATENCY_S = 5.0
LATENCY_CONNECTIONS = 64
DRAIN_TIMEOUT_S = 60.0
TARGET_RATIO = 0.35
TARGET_P99_MS = 200.0
LIGHT_RATE = 100.0  # events/s of the reference latency run


# -- the server side -----------------------------------------------------------------------


def serve(port: int) -> None:
    from forecourt.app import create_app

    serve_app(create_app(bench_settings()), port)


# -- the load side -------------------------------------------------------------------------


async def publish(api: aiohttp.ClientSession, srv: Server, count: int, first_seq: int) -> None:
    """``count`` events in batches, PUBLISHERS requests at a time."""
    end = first_seq + count
    batches = [
        orjson.dumps({"events": [event_body(s) for s in range(start, min(start + BATCH, end))]})
        for start in range(first_seq, end, BATCH)
    ]
    next_batch = 0

    async def publisher() -> None:
        nonlocal next_batch
        while next_batch < len(batches):
            body = batches[next_batch]
            next_batch += 1
            async with api.post(
                srv.base_url + "/api/v1/events/batch",
                data=body,
                headers={**srv.auth, **JSON_HEADERS},
            ) as response:
                if response.status != 201:
                    raise RuntimeError(f"publish: {response.status} {await response.text()}")

    await asyncio.gather(*(publisher() for _ in range(PUBLISHERS)))


@dataclass
class LatencyRun:
    rate: float
    batched: bool
    sent: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    publish_ms: list[float] = field(default_factory=list)


@dataclass
class Figures:
    events: int
    bare_s: list[float] = field(default_factory=list)
    accepted_s: float = 0.0  # first publish until every batch was answered
    received_s: float = 0.0  # ... until the receiver had every webhook-id
    logged_s: float = 0.0  # ... until every attempt was logged as succeeded
    latency: list[LatencyRun] = field(default_factory=list)

    @property
    def bare_rate(self) -> float:
        return self.events / min(self.bare_s)

    @property
    def rate(self) -> float:
        return self.events / self.logged_s

    @property
    def ratio(self) -> float:
        return self.rate / self.bare_rate


async def measure(srv: Server, rx_url: str, events: int, latency_s: float) -> Figures:
    concurrency = bench_settings().delivery_concurrency
    figures = Figures(events)
    queue = Queue(srv.database_url)
    try:
        async with aiohttp.ClientSession() as api:
            rx = ReceiverClient(rx_url, api)
            await rx.reset()
            await create_endpoints(api, srv, [rx.url("/hook")])

            async def received(n: int) -> bool:
                return await rx.distinct() >= n

            async def logged(n: int) -> bool:
                return await queue.succeeded() >= n

            # Warm-up: connections, caches, and a delivered request for the bare client to copy.
            await publish(api, srv, WARMUP_EVENTS, 0)
            await wait_until(lambda: received(WARMUP_EVENTS), DRAIN_TIMEOUT_S, "warm-up")
            await wait_until(lambda: logged(WARMUP_EVENTS), DRAIN_TIMEOUT_S, "warm-up attempts")
            headers, body = await rx.sample()
            urls = [rx.url("/hook")] * events

            figures.bare_s.append(await bare(urls, headers, body, concurrency))

            await rx.reset()
            before = await queue.succeeded()
            # time.monotonic: the receiver stamps arrivals with it.
            start = time.monotonic()
            await publish(api, srv, events, WARMUP_EVENTS)
            figures.accepted_s = time.monotonic() - start
            # A successful attempt is logged after its answer came back: polling for the
            # logged count alone waits for both, and the arrivals say when the last came in.
            done = await wait_until(lambda: logged(before + events), DRAIN_TIMEOUT_S, "attempts")
            figures.logged_s = done - start
            if await rx.distinct() < events:
                raise RuntimeError("attempts were logged for webhooks the receiver never had")
            figures.received_s = await rx.last_arrival(start)

            figures.bare_s.append(await bare(urls, headers, body, concurrency))

            # The target's load (half the throughput) as the throughput run sends it, through
            # the batch endpoint; then, for reference, one request per event at that rate and
            # at a light one.
            half = figures.rate / 2
            for rate, batched in ((half, True), (half, False), (LIGHT_RATE, False)):
                figures.latency.append(await latency(srv, rx, rate, latency_s, batched=batched))
    finally:
        await queue.aclose()
    return figures


async def latency(
    srv: Server, rx: ReceiverClient, rate: float, duration_s: float, *, batched: bool
) -> LatencyRun:
    """Events fall due at ``rate``/s for ``duration_s``, evenly spread; each one's latency runs
    from the moment it fell due until the receiver had it (open loop: requests start on
    schedule, however long the previous ones take).

    ``batched``: every TICK_S, one ``POST /api/v1/events/batch`` carries the events that fell
    due since the previous tick, as a host app that buffers its events for a few milliseconds
    does. Otherwise each event is its own ``POST /api/v1/events``, sent when it falls due.
    """
    await rx.reset()
    measured = LatencyRun(rate, batched)
    total = max(1, int(rate * duration_s))
    due: dict[str, float] = {}  # event id -> when it fell due (time.monotonic)
    errors = 0
    connector = aiohttp.TCPConnector(limit=LATENCY_CONNECTIONS)
    async with aiohttp.ClientSession(
        connector=connector, headers={**srv.auth, **JSON_HEADERS}
    ) as pub:

        async def send(first: int, times: list[float]) -> None:
            nonlocal errors
            bodies = [event_body(first + i) for i in range(len(times))]
            if batched:
                url, data = srv.base_url + "/api/v1/events/batch", {"events": bodies}
            else:
                url, data = srv.base_url + "/api/v1/events", bodies[0]
            try:
                async with pub.post(url, data=orjson.dumps(data)) as response:
                    if response.status != 201:
                        errors += len(times)
                        return
                    answer = await response.json()
            except aiohttp.ClientError:
                errors += len(times)
                return
            answered = time.monotonic()
            events = answer["events"] if batched else [answer]
            for event, at in zip(events, times, strict=True):
                measured.publish_ms.append((answered - at) * 1000)
                due[event["id"]] = at

        tasks: list[asyncio.Task[None]] = []
        t0 = time.monotonic() + 0.05
        times = [t0 + i / rate for i in range(total)]
        sent = 0
        while sent < total:
            if batched:
                now = time.monotonic()
                ready = sent
                while ready < total and times[ready] <= now and ready - sent < BATCH:
                    ready += 1
                if ready == sent:
                    await asyncio.sleep(max(0.0, min(TICK_S, times[sent] - now)))
                    continue
                tasks.append(asyncio.create_task(send(sent, times[sent:ready])))
                sent = ready
                await asyncio.sleep(TICK_S)
            else:
                delay = times[sent] - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(send(sent, times[sent : sent + 1])))
                sent += 1
        await asyncio.gather(*tasks)

    async def received() -> bool:
        return await rx.distinct() >= total - errors

    await wait_until(received, DRAIN_TIMEOUT_S, "latency deliveries")
    arrivals = await rx.arrivals()
    measured.sent = total
    measured.errors = errors
    measured.latencies_ms = [(a.at - due[a.event_id]) * 1000 for a in arrivals if a.event_id in due]
    return measured


# -- orchestration -------------------------------------------------------------------------


def report(label: str, f: Figures) -> None:
    verdict = "ok" if f.ratio >= TARGET_RATIO else f"BELOW the {TARGET_RATIO} target"
    print(
        f"delivery[{label}]: bare client {f.bare_rate:,.0f} posts/s, "
        f"forecourt {f.rate:,.0f} deliveries/s, "
        f"ratio forecourt/bare = {f.ratio:.2f} (target >= {TARGET_RATIO}: {verdict})",
        flush=True,
    )
    bare_runs = " / ".join(f"{s:.2f} s" for s in f.bare_s)
    print(
        f"delivery[{label}]: {f.events:,} events accepted in {f.accepted_s:.2f} s, "
        f"all received at {f.received_s:.2f} s, all attempts logged at {f.logged_s:.2f} s; "
        f"bare client runs {bare_runs}",
        flush=True,
    )
    for i, measured in enumerate(f.latency):
        report_latency(label, measured, target=i == 0)


def report_latency(label: str, run: LatencyRun, *, target: bool) -> None:
    if not run.latencies_ms:
        print(f"delivery[{label}]: no latency figures at {run.rate:,.0f} events/s", flush=True)
        return
    p50 = percentile(run.latencies_ms, 0.50)
    p99 = percentile(run.latencies_ms, 0.99)
    if target:
        verdict = "ok" if p99 < TARGET_P99_MS else f"ABOVE the {TARGET_P99_MS:g} ms target"
        verdict = f" (target p99 < {TARGET_P99_MS:g} ms at half the throughput: {verdict})"
    else:
        verdict = " (for reference)"
    how = f"batches every {TICK_S * 1000:.0f} ms" if run.batched else "one request per event"
    print(
        f"delivery[{label}]: latency at {run.rate:,.0f} events/s "
        f"({run.sent:,} events, {how}): due->delivered "
        f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {max(run.latencies_ms):.0f} ms{verdict}; "
        f"publish answered p50 {percentile(run.publish_ms, 0.5):.0f} ms, "
        f"p99 {percentile(run.publish_ms, 0.99):.0f} ms",
        flush=True,
    )
    missing = run.sent - run.errors - len(run.latencies_ms)
    if run.errors or missing > 0:
        print(
            f"delivery[{label}]: {run.errors} publishes failed, {missing} deliveries "
            "unmatched; the latency figure is not valid",
            flush=True,
        )


def run_variant(
    label: str, env: dict[str, str], rx_url: str, events: int, latency_s: float
) -> None:
    env = {**env, **same_concurrency(), "FORECOURT_WEBHOOK_ALLOW_PRIVATE": LOOPBACK}
    with server("bench.delivery", env) as srv:
        try:
            figures = run(measure(srv, rx_url, events, latency_s))
        except Exception:
            print(f"delivery[{label}]: failed; server log:\n{srv.log_tail()}", flush=True)
            raise
    report(label, figures)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.delivery", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--events", type=int, default=EVENTS)
    parser.add_argument(
        "--latency-duration", type=float, default=LATENCY_S, help="seconds of steady publishing"
    )
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.port)
        return

    concurrency = bench_settings().delivery_concurrency
    print(
        f"delivery: {args.events:,} events to one loopback endpoint, worker and bare client "
        f"at {concurrency} concurrent posts; {machine()}",
        flush=True,
    )
    with receiver() as rx_url:
        run_variant("sqlite", {}, rx_url, args.events, args.latency_duration)
        if args.sqlite_only:
            return
        if not postgres_reachable(args.postgres_url):
            print(f"delivery[postgresql]: skipped, not reachable at {args.postgres_url}")
            return
        if not redis_reachable(args.redis_url):
            print(f"delivery[postgresql]: skipped, Redis not reachable at {args.redis_url}")
            return
        with postgres_database(args.postgres_url) as url, redis_prefix(args.redis_url) as prefix:
            env = {
                "FORECOURT_DATABASE_URL": url,
                "FORECOURT_REDIS_URL": args.redis_url,
                "FORECOURT_REDIS_PREFIX": prefix,
            }
            run_variant("postgresql+redis", env, rx_url, args.events, args.latency_duration)


if __name__ == "__main__":
    main()
