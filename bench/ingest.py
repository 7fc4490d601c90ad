"""Events accepted per second through the REST API, against an endpoint that only parses JSON.

Run from the project root (PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 for the
second variant)::

    python -m bench.ingest [--duration S] [--connections N] [--postgres-url URL]

One Forecourt app (an API node: no delivery worker, like ``forecourt serve --no-workers``)
gets an extra route, ``POST /bench/parse``, outside the access middleware, that parses the
JSON body of the request into a dict and answers a small JSON. ``POST /api/v1/events`` takes
the same body with a key (scope check, three rate-limit windows of a tier that never denies,
usage recorded) and writes the event durably. The server runs under uvicorn in a process of
its own; this process drives it with keep-alive connections for a fixed time, parse and
publish alternated twice. The figure is publish/parse requests per second, same run.

Two lines per database: no webhook endpoint (pure ingest), then one endpoint subscribed to
the type, so each publish also writes a delivery row in the same transaction (nothing is
delivered: there is no worker). Once on SQLite with in-memory limits, once on PostgreSQL (a
fresh database, dropped afterwards) with Redis limits.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from bench._common import (
    DEFAULT_POSTGRES_URL,
    DEFAULT_REDIS_URL,
    JSON_HEADERS,
    LOOPBACK,
    Server,
    bench_settings,
    create_endpoints,
    event_body,
    exclude_from_access,
    free_port,
    load,
    machine,
    postgres_database,
    postgres_reachable,
    redis_prefix,
    redis_reachable,
    run,
    server,
)
from bench._common import serve as serve_app

DURATION_S = 4.0
WARMUP_S = 1.0
ROUNDS = 2
CONNECTIONS = 64
TARGET_RATIO = 0.3
PARSE_PATH = "/bench/parse"
EVENTS_PATH = "/api/v1/events"


# -- the server side -----------------------------------------------------------------------


def build_app() -> Any:
    """An API node (settings from the environment) plus the bare parsing route."""
    from forecourt.app import create_app

    app = create_app(bench_settings(), run_workers=False)

    @app.post(PARSE_PATH, include_in_schema=False)
    async def bench_parse(body: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "fields": len(body)}

    exclude_from_access(app, PARSE_PATH)
    return app


def serve(port: int) -> None:
    serve_app(build_app(), port)


# -- the load side -------------------------------------------------------------------------


@dataclass
class Figures:
    parse_rates: list[float] = field(default_factory=list)
    publish_rates: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def parse_rate(self) -> float:
        return sum(self.parse_rates) / len(self.parse_rates)

    @property
    def publish_rate(self) -> float:
        return sum(self.publish_rates) / len(self.publish_rates)

    @property
    def ratio(self) -> float:
        return self.publish_rate / self.parse_rate


async def measure(srv: Server, duration_s: float, connections: int) -> Figures:
    body = orjson.dumps(event_body(0))
    parse_url, events_url = srv.base_url + PARSE_PATH, srv.base_url + EVENTS_PATH
    auth = {**srv.auth, **JSON_HEADERS}
    # Warm both paths: connections, key cache, route compilation, statement caches.
    await load(parse_url, JSON_HEADERS, WARMUP_S, connections, body=body)
    await load(events_url, auth, WARMUP_S, connections, body=body, expect=201)
    figures = Figures()
    for _ in range(ROUNDS):
        parsed = await load(parse_url, JSON_HEADERS, duration_s, connections, body=body)
        published = await load(events_url, auth, duration_s, connections, body=body, expect=201)
        figures.parse_rates.append(parsed.rate)
        figures.publish_rates.append(published.rate)
        figures.errors += parsed.errors + published.errors
    return figures


async def subscribe(srv: Server) -> None:
    """One endpoint for the published type; its URL is never contacted (no worker runs)."""
    async with aiohttp.ClientSession() as api:
        await create_endpoints(api, srv, [f"http://127.0.0.1:{free_port()}/hook"], 1)


# -- orchestration -------------------------------------------------------------------------


def report(label: str, f: Figures) -> None:
    verdict = "ok" if f.ratio >= TARGET_RATIO else f"BELOW the {TARGET_RATIO} target"
    print(
        f"ingest[{label}]: parse only {f.parse_rate:,.0f} req/s, "
        f"publish {f.publish_rate:,.0f} events/s, "
        f"ratio publish/parse = {f.ratio:.2f} (target >= {TARGET_RATIO}: {verdict})",
        flush=True,
    )
    rounds = ", ".join(
        f"{p:,.0f}/{e:,.0f}" for p, e in zip(f.parse_rates, f.publish_rates, strict=True)
    )
    print(f"ingest[{label}]: parse/publish per round: {rounds}", flush=True)
    if f.errors:
        print(
            f"ingest[{label}]: {f.errors} responses were not as expected; the figure is not valid",
            flush=True,
        )


def run_variant(label: str, env: dict[str, str], duration_s: float, connections: int) -> None:
    env = {**env, "FORECOURT_WEBHOOK_ALLOW_PRIVATE": LOOPBACK}
    with server("bench.ingest", env) as srv:
        try:
            alone = run(measure(srv, duration_s, connections))
            report(f"{label}, no endpoint", alone)
            run(subscribe(srv))
            subscribed = run(measure(srv, duration_s, connections))
            report(f"{label}, 1 endpoint", subscribed)
        except Exception:
            print(f"ingest[{label}]: failed; server log:\n{srv.log_tail()}", flush=True)
            raise


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--duration", type=float, default=DURATION_S, help="seconds of load per measurement"
    )
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.port)
        return

    print(
        f"ingest: {args.connections} connections, {args.duration:g} s per run, "
        f"parse and publish alternated {ROUNDS} times; {machine()}",
        flush=True,
    )
    run_variant("sqlite", {}, args.duration, args.connections)
    if args.sqlite_only:
        return
    if not postgres_reachable(args.postgres_url):
        print(f"ingest[postgresql]: skipped, not reachable at {args.postgres_url}")
        return
    if not redis_reachable(args.redis_url):
        print(f"ingest[postgresql]: skipped, Redis not reachable at {args.redis_url}")
        return
    with postgres_database(args.postgres_url) as url, redis_prefix(args.redis_url) as prefix:
        env = {
            "FORECOURT_DATABASE_URL": url,
            "FORECOURT_REDIS_URL": args.redis_url,
            "FORECOURT_REDIS_PREFIX": prefix,
        }
        run_variant("postgresql+redis", env, args.duration, args.connections)


if __name__ == "__main__":
    main()
