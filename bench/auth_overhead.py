"""What authentication and rate limiting cost on the hot path, through a real server.

Run from the project root (Redis on 127.0.0.1:6379 for the second line)::

    python -m bench.auth_overhead [--duration S] [--connections N] [--redis-url URL]

One Forecourt app gets two extra routes that return the same small JSON: ``/bench/open``
(outside the access middleware: no key, no limit) and ``/bench/auth`` (a key checked for the
``keys:read`` scope, three rate-limit windows, usage recorded). The server runs under uvicorn
in a process of its own; this process drives it with keep-alive connections for a fixed time,
open and auth alternated twice. The figure is auth/open requests per second, measured in the
same run: once embedded (SQLite, in-memory limits), once with Redis limits.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from typing import Any

from bench._common import (
    DEFAULT_REDIS_URL,
    bench_settings,
    exclude_from_access,
    load,
    redis_prefix,
    redis_reachable,
    server,
)
from bench._common import serve as serve_app

DURATION_S = 5.0
WARMUP_S = 1.0
ROUNDS = 2
CONNECTIONS = 64
TARGET_RATIO = 0.6
OPEN_PATH = "/bench/open"
AUTH_PATH = "/bench/auth"
PAYLOAD = {"ok": True, "service": "forecourt"}


# -- the server side -------------------------------------------------------------------


def build_app() -> Any:
    """The real app (settings from the environment) plus the two bench routes."""
    from fastapi import Depends

    from forecourt.app import create_app
    from forecourt.http.deps import require

    app = create_app(bench_settings())

    @app.get(OPEN_PATH, include_in_schema=False)
    async def bench_open() -> dict[str, Any]:
        return PAYLOAD

    @app.get(AUTH_PATH, include_in_schema=False, dependencies=[Depends(require("keys:read"))])
    async def bench_auth() -> dict[str, Any]:
        return PAYLOAD

    exclude_from_access(app, OPEN_PATH)
    return app


def serve(port: int) -> None:
    serve_app(build_app(), port)


# -- the load side ---------------------------------------------------------------------


@dataclass
class Figures:
    open_rates: list[float]
    auth_rates: list[float]
    errors: int

    @property
    def open_rate(self) -> float:
        return sum(self.open_rates) / len(self.open_rates)

    @property
    def auth_rate(self) -> float:
        return sum(self.auth_rates) / len(self.auth_rates)

    @property
    def ratio(self) -> float:
        return self.auth_rate / self.open_rate


async def measure(base_url: str, key: str, duration_s: float, connections: int) -> Figures:
    auth = {"Authorization": f"Bearer {key}"}
    # Warm both paths: connections, key cache, route compilation.
    await load(base_url + OPEN_PATH, {}, WARMUP_S, connections)
    await load(base_url + AUTH_PATH, auth, WARMUP_S, connections)
    figures = Figures([], [], 0)
    for _ in range(ROUNDS):
        opened = await load(base_url + OPEN_PATH, {}, duration_s, connections)
        authed = await load(base_url + AUTH_PATH, auth, duration_s, connections)
        figures.open_rates.append(opened.rate)
        figures.auth_rates.append(authed.rate)
        figures.errors += opened.errors + authed.errors
    return figures


# -- orchestration ---------------------------------------------------------------------


def report(label: str, figures: Figures) -> None:
    verdict = "ok" if figures.ratio >= TARGET_RATIO else f"BELOW the {TARGET_RATIO} target"
    print(
        f"auth_overhead[{label}]: open {figures.open_rate:,.0f} req/s, "
        f"auth+limit {figures.auth_rate:,.0f} req/s, "
        f"ratio auth/open = {figures.ratio:.2f} (target >= {TARGET_RATIO}: {verdict})",
        flush=True,
    )
    rounds = ", ".join(
        f"{o:,.0f}/{a:,.0f}" for o, a in zip(figures.open_rates, figures.auth_rates, strict=True)
    )
    print(f"auth_overhead[{label}]: open/auth per round: {rounds}", flush=True)
    if figures.errors:
        print(
            f"auth_overhead[{label}]: {figures.errors} responses were not 200; "
            "the figure is not valid",
            flush=True,
        )


def run_variant(label: str, env: dict[str, str], duration_s: float, connections: int) -> None:
    with server("bench.auth_overhead", env, scopes=["keys:read"]) as running:
        figures = asyncio.run(measure(running.base_url, running.key, duration_s, connections))
    report(label, figures)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.auth_overhead", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--duration", type=float, default=DURATION_S, help="seconds of load per measurement"
    )
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.port)
        return

    print(
        f"auth_overhead: {args.connections} connections, {args.duration:g} s per run, "
        f"open and auth alternated {ROUNDS} times",
        flush=True,
    )
    run_variant("sqlite, memory limits", {}, args.duration, args.connections)
    if not redis_reachable(args.redis_url):
        print(f"auth_overhead[redis]: skipped, Redis not reachable at {args.redis_url}")
        return
    with redis_prefix(args.redis_url) as prefix:
        run_variant(
            "sqlite, redis limits",
            {"FORECOURT_REDIS_URL": args.redis_url, "FORECOURT_REDIS_PREFIX": prefix},
            args.duration,
            args.connections,
        )


if __name__ == "__main__":
    main()
