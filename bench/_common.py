"""What the benchmarks share: processes, load, a loopback receiver, and fresh databases.

A benchmark runs Forecourt under uvicorn in a process of its own (``server``), drives it from
its own process with aiohttp (``load``), and, for webhooks, sends to a ``receiver`` that runs
in a third process. PostgreSQL runs get a fresh, migrated database (``postgres_database``)
that is dropped afterwards, and Redis runs a key prefix of their own (``redis_prefix``).

The receiver is started as ``python -m bench._common receiver --port P``. It answers every
path with 200 and notes, per request, when it arrived (``time.monotonic()``: CLOCK_MONOTONIC,
the same clock in every process of this machine, so it compares with the driver's), its
``webhook-id``, path and body. Its ``/_bench/*`` paths report and reset what it saw.
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
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import orjson

if TYPE_CHECKING:
    import aiohttp
    from sqlalchemy.ext.asyncio import AsyncEngine

    from forecourt.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REDIS_URL = os.environ.get("FORECOURT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# The admin connection: fresh databases are created (and dropped) through it.
DEFAULT_POSTGRES_URL = os.environ.get(
    "FORECOURT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
POLL_S = 0.02
BENCH_TIER = "bench"
# High enough never to deny, with as many windows as the standard tiers.
BENCH_LIMITS = {"minute": 1_000_000_000, "hour": 1_000_000_000, "day": 1_000_000_000}
LOOPBACK = "127.0.0.0/8"  # FORECOURT_WEBHOOK_ALLOW_PRIVATE for receivers on loopback
EVENT_TYPE = "dashboard.created"
JSON_HEADERS = {"Content-Type": "application/json"}
RECEIVER_PREFIX = "/_bench"
# Request headers the HTTP client sets itself; the rest of a delivery's headers are copied.
CLIENT_HEADERS = frozenset(
    {"host", "content-length", "accept", "accept-encoding", "connection", "transfer-encoding"}
)

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def machine() -> str:
    """CPUs and load, printed with each figure: other work on the machine skews them."""
    one, five, _ = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {one:.1f} (1 min) {five:.1f} (5 min)"


def event_body(seq: int) -> dict[str, object]:
    """The event every benchmark publishes: a built-in type, a small payload."""
    return {
        "type": EVENT_TYPE,
        "data": {"dashboard_id": f"d-{seq:08d}", "title": "Revenue by region", "seq": seq},
    }


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when it is installed (as uvicorn does), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout_s: float, what: str, poll_s: float = POLL_S
) -> float:
    """Poll ``condition`` until it holds; the ``monotonic`` time it first held."""
    deadline = time.monotonic() + timeout_s
    while True:
        if await condition():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(poll_s)


# -- the server side -----------------------------------------------------------------------


def bench_settings() -> Settings:
    """Settings from the environment plus a tier whose limits never deny."""
    from forecourt.settings import DEFAULT_TIERS, Settings

    return Settings(rate_limit_tiers={**DEFAULT_TIERS, BENCH_TIER: BENCH_LIMITS})


def same_concurrency() -> dict[str, str]:
    """Server settings under which the worker posts at the bare client's concurrency to one
    receiver: the bound per endpoint (16 by default, to spare a receiver) and the connections
    per receiver host both raised to ``delivery_concurrency``."""
    return {"FORECOURT_ENDPOINT_CONCURRENCY": str(bench_settings().delivery_concurrency)}


def exclude_from_access(app: Any, *paths: str) -> None:
    """Take ``paths`` out of the access middleware (no key, no limit) of a built app.

    The middleware stack is built on the first request, so this still takes effect.
    """
    from forecourt.http.middleware.access import EXCLUDED_PREFIXES, AccessMiddleware

    for middleware in app.user_middleware:
        cls: object = middleware.cls
        if cls is AccessMiddleware:
            kwargs: dict[str, Any] = middleware.kwargs
            excluded: tuple[str, ...] = kwargs.get("excluded", EXCLUDED_PREFIXES)
            kwargs["excluded"] = (*excluded, *paths)
            return
    raise RuntimeError("AccessMiddleware is not installed on the app")


def serve(app: Any, port: int) -> None:
    import uvicorn

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        server_header=False,
    )


@dataclass(frozen=True)
class Server:
    """A running bench server: where it listens, a key of the bench tier, its database."""

    base_url: str
    key: str
    workdir: Path
    database_url: str
    pid: int

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    @property
    def log(self) -> Path:
        return self.workdir / "server.log"

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def server(
    module: str,
    env_extra: dict[str, str],
    scopes: Sequence[str] = ("admin",),
    args: Sequence[str] = (),
) -> Iterator[Server]:
    """``python -m MODULE --serve --port P`` on a fresh data folder, stopped on exit.

    The module serves its app with ``serve``. Yields the server with a new key of the bench
    tier holding ``scopes``.
    """
    workdir = Path(tempfile.mkdtemp(prefix="forecourt-bench-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORECOURT_")}
    env.update(env_extra)
    env["FORECOURT_DATA_DIR"] = str(workdir / "data")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    database_url = env.get("FORECOURT_DATABASE_URL") or (
        f"sqlite+aiosqlite:///{workdir / 'data' / 'forecourt.db'}"
    )
    log = (workdir / "server.log").open("wb")
    # cwd is the temp folder so that no .env file of the checkout is read.
    process = subprocess.Popen(
        [sys.executable, "-m", module, "--serve", "--port", str(port), *args],
        env=env,
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(process, base_url + "/healthz", workdir / "server.log", "bench server")
        owner = (workdir / "data" / "owner-key").read_text().strip()
        response = httpx.post(
            base_url + "/api/v1/keys",
            headers={"Authorization": f"Bearer {owner}"},
            json={"name": "bench", "scopes": list(scopes), "tier": BENCH_TIER},
            timeout=10.0,
        )
        response.raise_for_status()
        yield Server(base_url, response.json()["key"], workdir, database_url, process.pid)
    finally:
        stop_process(process)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a graceful stop), then SIGKILL after STOP_TIMEOUT_S."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start:\n{log.read_text(errors='replace')}")


# -- the load side -------------------------------------------------------------------------


@dataclass
class Run:
    requests: int
    errors: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


async def load(
    url: str,
    headers: dict[str, str],
    duration_s: float,
    connections: int,
    *,
    body: bytes | None = None,
    expect: int = 200,
) -> Run:
    """Requests/s that ``connections`` keep-alive connections get for ``duration_s``:
    GETs, or POSTs of ``body`` when one is given; a status other than ``expect`` is an
    error."""
    import aiohttp

    method = "GET" if body is None else "POST"
    done = errors = 0
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        start = time.perf_counter()
        deadline = start + duration_s

        async def worker() -> None:
            nonlocal done, errors
            while time.perf_counter() < deadline:
                try:
                    async with session.request(method, url, data=body) as response:
                        await response.read()
                        ok = response.status == expect
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    done += 1
                else:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - start
    return Run(done, errors, elapsed)


async def post_all(
    session: aiohttp.ClientSession,
    requests: Sequence[tuple[str, dict[str, str]]],
    body: bytes,
    concurrency: int,
) -> tuple[float, int]:
    """POST ``body`` to each (url, headers) from ``concurrency`` tasks over ``session``:
    the bare client. Returns the seconds it took and how many answers were not 2xx."""
    import aiohttp

    next_index = 0
    failures = 0

    async def worker() -> None:
        nonlocal next_index, failures
        while next_index < len(requests):
            url, headers = requests[next_index]
            next_index += 1
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if not 200 <= response.status < 300:
                        failures += 1
            except aiohttp.ClientError:
                failures += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start, failures


async def bare(
    urls: Sequence[str], headers: dict[str, str], body: bytes, concurrency: int
) -> float:
    """Seconds a bare aiohttp client (keep-alive, ``concurrency`` connections, warmed up)
    takes to POST ``body`` once to each URL, each request with a webhook-id of its own."""
    import aiohttp

    from forecourt.ids import new_id

    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        warm = [(urls[i % len(urls)], sample_headers(headers, new_id("dlv"))) for i in range(256)]
        await post_all(session, warm, body, concurrency)
        requests = [(url, sample_headers(headers, new_id("dlv"))) for url in urls]
        seconds, failures = await post_all(session, requests, body, concurrency)
    if failures:
        raise RuntimeError(f"the bare client got {failures} failed posts")
    return seconds


def sample_headers(headers: dict[str, str], webhook_id: str) -> dict[str, str]:
    """A delivery's headers as the bare client sends them: same names and sizes, its own id."""
    out = {k: v for k, v in headers.items() if k.lower() not in CLIENT_HEADERS}
    for name in out:
        if name.lower() == "webhook-id":
            out[name] = webhook_id
    return out


async def create_endpoints(
    session: aiohttp.ClientSession,
    server: Server,
    urls: Sequence[str],
    concurrency: int = 8,
) -> list[str]:
    """Subscribe each URL to EVENT_TYPE through ``POST /api/v1/webhooks``; the endpoint ids."""
    ids: list[str] = [""] * len(urls)
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(urls):
            i = next_index
            next_index += 1
            async with session.post(
                server.base_url + "/api/v1/webhooks",
                json={"url": urls[i], "event_types": [EVENT_TYPE]},
                headers=server.auth,
            ) as response:
                if response.status != 201:
                    raise RuntimeError(f"creating an endpoint: {await response.text()}")
                ids[i] = (await response.json())["id"]

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ids


# -- the database, seen from the driver ----------------------------------------------------


class Queue:
    """Counts of the server's deliveries, read straight from its database."""

    def __init__(self, database_url: str) -> None:
        from forecourt.db.engine import create_engine

        self.engine: AsyncEngine = create_engine(database_url, pool_size=1, max_overflow=0)

    async def succeeded(self) -> int:
        """Deliveries whose successful attempt is logged."""
        from sqlalchemy import func, select

        from forecourt.webhooks.models import SUCCEEDED, Delivery

        async with self.engine.connect() as conn:
            count = await conn.scalar(
                select(func.count()).select_from(Delivery).where(Delivery.status == SUCCEEDED)
            )
        return int(count or 0)

    async def aclose(self) -> None:
        await self.engine.dispose()


# -- the receiver --------------------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    at: float  # time.monotonic() in the receiver
    webhook_id: str
    path: str
    event_id: str  # the CloudEvents id in the body


class ReceiverClient:
    """The driver's view of a running receiver."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession) -> None:
        self.base_url = base_url
        self._session = session

    def url(self, path: str = "/hook") -> str:
        return self.base_url + path

    async def distinct(self) -> int:
        """Distinct webhook-ids received since the last reset."""
        async with self._session.get(self.base_url + RECEIVER_PREFIX + "/count") as response:
            count: int = (await response.json())["distinct"]
            return count

    async def reset(self) -> None:
        async with self._session.post(self.base_url + RECEIVER_PREFIX + "/reset") as response:
            response.raise_for_status()

    async def arrivals(self) -> list[Arrival]:
        async with self._session.get(self.base_url + RECEIVER_PREFIX + "/arrivals") as response:
            rows = orjson.loads(await response.read())
        return [Arrival(*row) for row in rows]

    async def last_arrival(self, start: float) -> float:
        """Seconds from ``start`` (``time.monotonic()`` here) to the last request received
        since the reset: read from the receiver's own clock after the fact, so no polling
        interval is added to it."""
        return max(arrival.at for arrival in await self.arrivals()) - start

    async def sample(self) -> tuple[dict[str, str], bytes]:
        """The headers and body of the first request received since the last reset."""
        async with self._session.get(self.base_url + RECEIVER_PREFIX + "/sample") as response:
            found = orjson.loads(await response.read())
        return found["headers"], found["body"].encode()


@contextlib.contextmanager
def receiver() -> Iterator[str]:
    """A receiver in a process of its own; yields its base URL."""
    workdir = Path(tempfile.mkdtemp(prefix="forecourt-bench-rx-"))
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    log = (workdir / "receiver.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "bench._common", "receiver", "--port", str(port)],
        env=env,
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(
            process, base_url + RECEIVER_PREFIX + "/count", workdir / "receiver.log", "receiver"
        )
        yield base_url
    finally:
        stop_process(process)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _receive(port: int) -> None:
    from aiohttp import web

    arrivals: list[tuple[float, str, str, bytes]] = []
    seen: set[str] = set()
    first: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        at = time.monotonic()
        webhook_id = request.headers.get("webhook-id", "")
        arrivals.append((at, webhook_id, request.path, body))
        seen.add(webhook_id)
        if not first:
            first.append((dict(request.headers), body))
        return web.Response(text="ok")

    async def count(_: web.Request) -> web.Response:
        return web.json_response({"requests": len(arrivals), "distinct": len(seen)})

    async def reset(_: web.Request) -> web.Response:
        arrivals.clear()
        seen.clear()
        first.clear()
        return web.json_response({})

    async def report(_: web.Request) -> web.Response:
        rows = [(at, wid, path, _event_id(body)) for at, wid, path, body in arrivals]
        return web.Response(body=orjson.dumps(rows), content_type="application/json")

    async def sample(_: web.Request) -> web.Response:
        if not first:
            raise web.HTTPNotFound()
        headers, body = first[0]
        return web.json_response({"headers": headers, "body": body.decode()})

    app = web.Application()
    app.router.add_get(RECEIVER_PREFIX + "/count", count)
    app.router.add_post(RECEIVER_PREFIX + "/reset", reset)
    app.router.add_get(RECEIVER_PREFIX + "/arrivals", report)
    app.router.add_get(RECEIVER_PREFIX + "/sample", sample)
    app.router.add_route("*", "/{tail:.*}", hook)
    loop: asyncio.AbstractEventLoop | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop = uvloop.new_event_loop()
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        access_log=None,
        print=None,
        backlog=1024,
        shutdown_timeout=1.0,
        loop=loop,
    )


def _event_id(body: bytes) -> str:
    try:
        return str(orjson.loads(body).get("id", ""))
    except (orjson.JSONDecodeError, AttributeError):
        return ""


# -- Redis and PostgreSQL ------------------------------------------------------------------


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


@contextlib.contextmanager
def redis_prefix(url: str) -> Iterator[str]:
    """A fresh key prefix, its keys deleted on exit."""
    prefix = f"fcbench:{uuid.uuid4().hex[:8]}:"
    try:
        yield prefix
    finally:
        redis_cleanup(url, prefix)


def _pg_url(admin_url: str, database: str | None, driver: str) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(admin_url).set(drivername=driver)
    if database is not None:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)


def postgres_reachable(admin_url: str) -> bool:
    import asyncpg

    async def ping() -> None:
        conn = await asyncpg.connect(_pg_url(admin_url, None, "postgresql"), timeout=2)
        await conn.close()

    try:
        asyncio.run(ping())
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    return True


@contextlib.contextmanager
def postgres_database(admin_url: str = DEFAULT_POSTGRES_URL) -> Iterator[str]:
    """A new database, migrated to head; yields its SQLAlchemy URL, drops it on exit."""
    import asyncpg
    from sqlalchemy.pool import NullPool

    from forecourt.db import migrate
    from forecourt.db.engine import create_engine

    name = f"fcbench_{uuid.uuid4().hex[:10]}"
    url = _pg_url(admin_url, name, "postgresql+asyncpg")

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(_pg_url(admin_url, None, "postgresql"), timeout=5)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    async def upgrade() -> None:
        engine = create_engine(url, poolclass=NullPool)
        try:
            await migrate.upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        asyncio.run(upgrade())
        yield url
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._common")
    parser.add_argument("role", choices=["receiver"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    _receive(args.port)


if __name__ == "__main__":
    main()
