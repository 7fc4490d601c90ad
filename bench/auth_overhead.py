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
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REDIS_URL = os.environ.get("FORECOURT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DURATION_S = 5.0
WARMUP_S = 1.0
ROUNDS = 2
CONNECTIONS = 64
TARGET_RATIO = 0.6
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
BENCH_TIER = "bench"
# High enough never to deny, with as many windows as the standard tiers.
BENCH_LIMITS = {"minute": 1_000_000_000, "hour": 1_000_000_000, "day": 1_000_000_000}
OPEN_PATH = "/bench/open"
AUTH_PATH = "/bench/auth"
PAYLOAD = {"ok": True, "service": "forecourt"}


# -- the server side -------------------------------------------------------------------


def build_app() -> Any:
    """The real app (settings from the environment) plus the two bench routes."""
    from fastapi import Depends

    from forecourt.app import create_app
    from forecourt.http.deps import require
    from forecourt.http.middleware.access import EXCLUDED_PREFIXES, AccessMiddleware
    from forecourt.settings import DEFAULT_TIERS, Settings

    settings = Settings(rate_limit_tiers={**DEFAULT_TIERS, BENCH_TIER: BENCH_LIMITS})
    app = create_app(settings)

    @app.get(OPEN_PATH, include_in_schema=False)
    async def bench_open() -> dict[str, Any]:
        return PAYLOAD

    @app.get(AUTH_PATH, include_in_schema=False, dependencies=[Depends(require("keys:read"))])
    async def bench_auth() -> dict[str, Any]:
        return PAYLOAD

    # The middleware stack is built on the first request, so this still takes effect.
    for middleware in app.user_middleware:
        cls: object = middleware.cls
        if cls is AccessMiddleware:
            kwargs: dict[str, Any] = middleware.kwargs
            excluded: tuple[str, ...] = kwargs.get("excluded", EXCLUDED_PREFIXES)
            kwargs["excluded"] = (*excluded, OPEN_PATH)
            break
    else:
        raise RuntimeError("AccessMiddleware is not installed on the app")
    return app


def serve(port: int) -> None:
    import uvicorn

    uvicorn.run(
        build_app(),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        server_header=False,
    )


# -- the load side ---------------------------------------------------------------------


@dataclass
class Run:
    requests: int
    errors: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


async def load(url: str, headers: dict[str, str], duration_s: float, connections: int) -> Run:
    """Requests/s that ``connections`` keep-alive connections get for ``duration_s``."""
    import aiohttp

    done = errors = 0
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        start = time.perf_counter()
        deadline = start + duration_s

        async def worker() -> None:
            nonlocal done, errors
            while time.perf_counter() < deadline:
                try:
                    async with session.get(url) as response:
                        await response.read()
                        ok = response.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    done += 1
                else:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - start
    return Run(done, errors, elapsed)


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def server(env_extra: dict[str, str]) -> Any:
    """A bench server on a fresh data folder; yields (base_url, a key for /bench/auth)."""
    workdir = Path(tempfile.mkdtemp(prefix="forecourt-bench-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORECOURT_")}
    env.update(env_extra)
    env["FORECOURT_DATA_DIR"] = str(workdir / "data")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    log = (workdir / "server.log").open("wb")
    # cwd is the temp folder so that no .env file of the checkout is read.
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.auth_overhead", "--serve", "--port", str(port)],
        env=env,
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(process, base_url, workdir / "server.log")
        owner = (workdir / "data" / "owner-key").read_text().strip()
        response = httpx.post(
            base_url + "/api/v1/keys",
            headers={"Authorization": f"Bearer {owner}"},
            json={"name": "bench", "scopes": ["keys:read"], "tier": BENCH_TIER},
            timeout=10.0,
        )
        response.raise_for_status()
        yield base_url, response.json()["key"]
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_ready(process: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"bench server exited:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(base_url + "/healthz", timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"bench server did not start:\n{log.read_text(errors='replace')}")


def redis_reachable(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def redis_cleanup(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


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
    with server(env) as (base_url, key):
        figures = asyncio.run(measure(base_url, key, duration_s, connections))
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
    prefix = f"fcbench:{uuid.uuid4().hex[:8]}:"
    try:
        run_variant(
            "sqlite, redis limits",
            {"FORECOURT_REDIS_URL": args.redis_url, "FORECOURT_REDIS_PREFIX": prefix},
            args.duration,
            args.connections,
        )
    finally:
        redis_cleanup(args.redis_url, prefix)


if __name__ == "__main__":
    main()
