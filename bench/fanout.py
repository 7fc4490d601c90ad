"""Fan-out: one event to many endpoints, against a bare HTTP client making the same posts.

Run from the project root::

    python -m bench.fanout [--endpoints N] [--rounds R] [--postgres]

A Forecourt server (uvicorn, with its delivery worker) on SQLite gets N endpoints (1,000 by
default) through ``POST /api/v1/webhooks``, each a distinct path of one loopback receiver
that runs in a process of its own. One event is published (``POST /api/v1/events``); the time
runs until the receiver has all N webhooks and the database has all N attempts logged as
succeeded. The baseline, in the same run, is a bare aiohttp client posting the same N
requests (a delivered body and its headers, a webhook-id each) to the same N paths with as
many connections as the worker's ``delivery_concurrency``, the bound the server gets for one
receiver host too (``same_concurrency``). Bare client and Forecourt
alternate R times; the figure is the ratio of their mean times (bare / Forecourt). With
``--postgres`` the same runs once more on PostgreSQL with Redis.
"""

from __future__ import annotations

import argparse
import statistics
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

ENDPOINTS = 1_000
ROUNDS = 5  # alternations of bare client and Forecourt: one round is noisy on 2 cores
CREATE_CONCURRENCY = 8
DRAIN_TIMEOUT_S = 60.0
TARGET_RATIO = 0.5


def serve(port: int) -> None:
    from forecourt.app import create_app

    serve_app(create_app(bench_settings()), port)


@dataclass
class Figures:
    endpoints: int
    created_s: float = 0.0
    bare_s: list[float] = field(default_factory=list)
    received_s: list[float] = field(default_factory=list)
    logged_s: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return statistics.mean(self.bare_s) / statistics.mean(self.logged_s)


async def fan_out(
    api: aiohttp.ClientSession, srv: Server, rx: ReceiverClient, queue: Queue, count: int, seq: int
) -> tuple[float, float]:
    """Publish one event; seconds until the ``count`` endpoints received it, and until every
    attempt was logged."""
    await rx.reset()
    before = await queue.succeeded()

    async def logged() -> bool:
        return await queue.succeeded() >= before + count

    # time.monotonic: the receiver stamps arrivals with it.
    start = time.monotonic()
    async with api.post(
        srv.base_url + "/api/v1/events", data=orjson.dumps(event_body(seq)), headers=srv.auth
    ) as response:
        if response.status != 201:
            raise RuntimeError(f"publish: {response.status} {await response.text()}")
    # A successful attempt is logged after its answer came back: polling for the logged count
    # alone waits for both, and the arrivals say when the last came in.
    logged_at = await wait_until(logged, DRAIN_TIMEOUT_S, "fan-out attempts")
    if await rx.distinct() < count:
        raise RuntimeError("attempts were logged for webhooks the receiver never had")
    return await rx.last_arrival(start), logged_at - start


async def measure(srv: Server, rx_url: str, endpoints: int, rounds: int) -> Figures:
    concurrency = bench_settings().delivery_concurrency
    figures = Figures(endpoints)
    queue = Queue(srv.database_url)
    try:
        async with aiohttp.ClientSession(headers=JSON_HEADERS) as api:
            rx = ReceiverClient(rx_url, api)
            urls = [rx.url(f"/hook/{i}") for i in range(endpoints)]
            start = time.perf_counter()
            await create_endpoints(api, srv, urls, CREATE_CONCURRENCY)
            figures.created_s = time.perf_counter() - start

            # Warm-up: one full fan-out, which also gives the bare client a request to copy.
            await fan_out(api, srv, rx, queue, endpoints, 0)
            headers, body = await rx.sample()
            for i in range(rounds):
                await rx.reset()
                figures.bare_s.append(await bare(urls, headers, body, concurrency))
                received_s, logged_s = await fan_out(api, srv, rx, queue, endpoints, i + 1)
                figures.received_s.append(received_s)
                figures.logged_s.append(logged_s)
    finally:
        await queue.aclose()
    return figures


def report(label: str, f: Figures) -> None:
    verdict = "ok" if f.ratio >= TARGET_RATIO else f"BELOW the {TARGET_RATIO} target"
    bare_s = statistics.mean(f.bare_s)
    logged_s = statistics.mean(f.logged_s)
    print(
        f"fanout[{label}]: one event to {f.endpoints:,} endpoints: bare client {bare_s:.2f} s "
        f"({f.endpoints / bare_s:,.0f} posts/s), forecourt {logged_s:.2f} s "
        f"({f.endpoints / logged_s:,.0f} deliveries/s), ratio bare/forecourt time = "
        f"{f.ratio:.2f} (target >= {TARGET_RATIO}: {verdict})",
        flush=True,
    )
    rounds = ", ".join(
        f"{b:.2f}/{r:.2f}/{g:.2f}"
        for b, r, g in zip(f.bare_s, f.received_s, f.logged_s, strict=True)
    )
    print(
        f"fanout[{label}]: per round bare/received/logged s: {rounds}; "
        f"{f.endpoints:,} endpoints created through the API in {f.created_s:.1f} s",
        flush=True,
    )


def run_variant(label: str, env: dict[str, str], rx_url: str, endpoints: int, rounds: int) -> None:
    env = {**env, **same_concurrency(), "FORECOURT_WEBHOOK_ALLOW_PRIVATE": LOOPBACK}
    with server("bench.fanout", env) as srv:
        try:
            figures = run(measure(srv, rx_url, endpoints, rounds))
        except Exception:
            print(f"fanout[{label}]: failed; server log:\n{srv.log_tail()}", flush=True)
            raise
    report(label, figures)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fanout", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--endpoints", type=int, default=ENDPOINTS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--postgres", action="store_true", help="also on PostgreSQL + Redis")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.port)
        return

    concurrency = bench_settings().delivery_concurrency
    print(
        f"fanout: one event to {args.endpoints:,} endpoints of one loopback receiver, worker "
        f"and bare client at {concurrency} concurrent posts, {args.rounds} rounds; {machine()}",
        flush=True,
    )
    with receiver() as rx_url:
        run_variant("sqlite", {}, rx_url, args.endpoints, args.rounds)
        if not args.postgres:
            return
        if not postgres_reachable(args.postgres_url) or not redis_reachable(args.redis_url):
            print("fanout[postgresql]: skipped, PostgreSQL or Redis not reachable")
            return
        with postgres_database(args.postgres_url) as url, redis_prefix(args.redis_url) as prefix:
            env = {
                "FORECOURT_DATABASE_URL": url,
                "FORECOURT_REDIS_URL": args.redis_url,
                "FORECOURT_REDIS_PREFIX": prefix,
            }
            run_variant("postgresql+redis", env, rx_url, args.endpoints, args.rounds)


if __name__ == "__main__":
    main()
