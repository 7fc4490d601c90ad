"""WebSocket fan-out: events published to Forecourt reach 1,000 WebSocket clients, against a
bare ``websockets`` server broadcasting the same messages to as many clients.

Run from the project root::

    python -m bench.ws_fanout [--clients N] [--messages M] [--postgres]

Two servers run in processes of their own, one after the other: Forecourt (uvicorn, SQLite,
per-message compression off as by default) and a bare ``websockets`` server that broadcasts
with ``websockets.broadcast()`` what a control connection asks for. One driver process opens N
clients (1,000 by default) on each; Forecourt's subscribe to ``events:dashboard.*``.

- Throughput: M messages (100 by default) are produced as fast as the producer can (Forecourt:
  ``POST /api/v1/events`` from 8 connections; bare: M control messages); the rate is N x M
  deliveries over the time from the first production to the last arrival. The figure is
  Forecourt's rate as a ratio of the bare server's (target >= 0.5).
- Latency: M messages produced one at a time, each once every client has the previous one;
  p99 of produce -> receive over all N x M deliveries (``time.monotonic``, one clock for every
  process of the machine; target < 100 ms for Forecourt).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import orjson

from bench._common import (
    BENCH_TIER,
    EVENT_TYPE,
    ROOT,
    event_body,
    free_port,
    machine,
    percentile,
    run,
    server,
)

CLIENTS = 1000
MESSAGES = 100
PUBLISHERS = 8
OPEN_CONCURRENCY = 50
RECEIVE_TIMEOUT_S = 120.0
CHANNEL = "events:dashboard.*"
CONTROL_PATH = "/_control"
WARM_SEQ = 10**9


@dataclass
class Clients:
    """N connected clients; ``arrivals[seq]`` counts deliveries and notes their times."""

    sockets: list[object] = field(default_factory=list)
    arrivals: dict[int, list[float]] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def count(self) -> int:
        return sum(len(v) for v in self.arrivals.values())


async def _open(
    url: str, n: int, headers: dict[str, str] | None, seq_of: Callable[[bytes | str], int | None]
) -> Clients:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    clients = Clients()
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def one() -> None:
        async with gate:
            socket = await connect(
                url, additional_headers=headers, compression=None, max_queue=None, open_timeout=60
            )
        clients.sockets.append(socket)
        with contextlib.suppress(ConnectionClosed):  # the end of a run
            async for raw in socket:
                now = time.monotonic()
                seq = seq_of(raw)
                if seq is not None:
                    clients.arrivals.setdefault(seq, []).append(now)
                    clients.changed.set()

    clients.tasks = [asyncio.create_task(one()) for _ in range(n)]
    return clients


async def _until(clients: Clients, predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + RECEIVE_TIMEOUT_S
    while not predicate():
        for task in clients.tasks:
            if task.done() and task.exception() is not None:
                raise RuntimeError(f"a client failed: {task.exception()!r}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"timed out waiting for {what}")
        clients.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(clients.changed.wait(), min(remaining, 0.5))


async def _close(clients: Clients) -> None:
    for socket in clients.sockets:
        await socket.close()  # type: ignore[attr-defined]
    for task in clients.tasks:
        task.cancel()
    await asyncio.gather(*clients.tasks, return_exceptions=True)


@dataclass
class Figures:
    rate: float  # deliveries per second
    p50_ms: float
    p99_ms: float


async def _measure(
    clients: Clients,
    n: int,
    messages: int,
    produce: Callable[[int], Awaitable[None]],
    produce_all: Callable[[list[int]], Awaitable[None]],
) -> Figures:
    # Throughput: everything produced at once.
    burst = list(range(1, messages + 1))
    started = time.monotonic()
    await produce_all(burst)
    await _until(
        clients,
        lambda: all(len(clients.arrivals.get(s, ())) >= n for s in burst),
        "the burst's deliveries",
    )
    last = max(t for s in burst for t in clients.arrivals[s])
    rate = n * messages / (last - started)
    # Latency: one message at a time.
    latencies: list[float] = []
    for seq in range(messages + 1, 2 * messages + 1):
        produced = time.monotonic()
        await produce(seq)
        await _until(
            clients,
            lambda s=seq: len(clients.arrivals.get(s, ())) >= n,
            "one message",  # type: ignore[misc]
        )
        latencies += [(t - produced) * 1000 for t in clients.arrivals[seq]]
    return Figures(rate, percentile(latencies, 0.5), percentile(latencies, 0.99))


# -- Forecourt ---------------------------------------------------------------------------------


def _forecourt_seq(raw: bytes | str) -> int | None:
    message = orjson.loads(raw)
    if message.get("type") != "event":
        return None
    seq: int = message["event"]["data"]["seq"]
    return seq


async def _forecourt(n: int, messages: int, env: dict[str, str]) -> Figures:
    with server("bench.ws_fanout", env) as srv:
        url = srv.base_url.replace("http://", "ws://") + f"/ws?channels={CHANNEL}"
        clients = await _open(url, n, srv.auth, _forecourt_seq)
        limits = httpx.Limits(max_connections=PUBLISHERS)
        async with httpx.AsyncClient(
            base_url=srv.base_url, headers=srv.auth, limits=limits, timeout=60
        ) as http:
            # Every client is subscribed once a message published now reaches all of them.
            await _until(clients, lambda: len(clients.sockets) >= n, "every client to connect")
            warm = WARM_SEQ
            while True:
                await http.post("/api/v1/events", json=event_body(warm))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        _until(
                            clients, lambda w=warm: len(clients.arrivals.get(w, ())) >= n, "warm"
                        ),
                        2.0,
                    )
                    break
                warm += 1

            async def produce(seq: int) -> None:
                response = await http.post("/api/v1/events", json=event_body(seq))
                response.raise_for_status()

            async def produce_all(seqs: list[int]) -> None:
                queue = list(seqs)

                async def worker() -> None:
                    while queue:
                        await produce(queue.pop(0))

                await asyncio.gather(*(worker() for _ in range(PUBLISHERS)))

            figures = await _measure(clients, n, messages, produce, produce_all)
        await _close(clients)
        return figures


def _serve_forecourt(port: int) -> None:
    import uvicorn

    from bench._common import bench_settings
    from forecourt.app import create_app

    settings = bench_settings()
    uvicorn.run(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        server_header=False,
        ws_per_message_deflate=settings.stream_compression,
    )


# -- the bare websockets server -------------------------------------------------------------------


def _serve_bare(port: int, sample: bytes) -> None:
    """Broadcast a message like Forecourt's to every client when the control connection asks."""
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    template = orjson.loads(sample)
    clients: set[ServerConnection] = set()

    async def handler(socket: ServerConnection) -> None:
        if socket.request is not None and socket.request.path == CONTROL_PATH:
            async for raw in socket:
                seq = int(raw)
                template["id"] = f"{seq}-0"
                template["event"]["data"]["seq"] = seq
                broadcast(clients, orjson.dumps(template).decode())
            return
        clients.add(socket)
        try:
            await socket.wait_closed()
        finally:
            clients.discard(socket)

    async def main() -> None:
        async with serve(handler, "127.0.0.1", port, compression=None):
            await asyncio.Future()

    run(main())


async def _bare(n: int, messages: int, sample: bytes) -> Figures:
    import subprocess
    import sys

    from websockets.asyncio.client import connect

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(  # noqa: ASYNC220 (started once, before anything is measured)
        [
            sys.executable,
            "-m",
            "bench.ws_fanout",
            "--bare-serve",
            "--port",
            str(port),
            "--sample",
            sample.decode(),
        ],
        env=env,
        cwd=ROOT,
    )
    try:
        url = f"ws://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                control = await connect(url + CONTROL_PATH, compression=None)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        clients = await _open(url + "/", n, None, _forecourt_seq)
        warm = WARM_SEQ
        await _until(clients, lambda: len(clients.sockets) >= n, "every client to connect")
        # The server registers a client after its handshake: warm up until all hear one.
        while len(clients.arrivals.get(warm, ())) < n:
            clients.arrivals.pop(warm, None)
            await control.send(str(warm))
            await asyncio.sleep(0.2)

        async def produce(seq: int) -> None:
            await control.send(str(seq))

        async def produce_all(seqs: list[int]) -> None:
            for seq in seqs:
                await control.send(str(seq))

        figures = await _measure(clients, n, messages, produce, produce_all)
        await control.close()
        await _close(clients)
        return figures
    finally:
        process.terminate()
        process.wait(timeout=15)


SAMPLE = {
    "type": "event",
    "id": "0-0",
    "timestamp": "2026-01-01T00:00:00.000000Z",
    "channel": "events:" + EVENT_TYPE,
    "event": {
        "specversion": "1.0",
        "id": "evt_0123456789abcdef",
        "source": "/forecourt",
        "type": EVENT_TYPE,
        "time": "2026-01-01T00:00:00.000000Z",
        "datacontenttype": "application/json",
        "tenant": "ten_0123456789abcdef",
        "severity": "info",
        "data": event_body(0)["data"],
        "event_id": "evt_0123456789abcdef",
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--messages", type=int, default=MESSAGES)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bare-serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--sample", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve_forecourt(args.port)
        return
    if args.bare_serve:
        _serve_bare(args.port, args.sample.encode())
        return
    env = {
        "FORECOURT_STREAM_MAX_CONNECTIONS_PER_KEY": str(args.clients * 2),
        "FORECOURT_DEFAULT_TIER": BENCH_TIER,
    }
    print(f"{args.clients} clients, {args.messages} messages; {machine()}", flush=True)
    sample = orjson.dumps(SAMPLE)
    bare = run(_bare(args.clients, args.messages, sample))
    forecourt = run(_forecourt(args.clients, args.messages, env))
    for name, f in (("bare websockets broadcast()", bare), ("Forecourt /ws", forecourt)):
        print(
            f"{name:28} {f.rate:10,.0f} deliveries/s   p50 {f.p50_ms:6.1f} ms   "
            f"p99 {f.p99_ms:6.1f} ms"
        )
    print(f"throughput ratio (Forecourt / bare): {forecourt.rate / bare.rate:.2f} (target >= 0.5)")
    print(f"Forecourt p99 produce -> receive: {forecourt.p99_ms:.1f} ms (target < 100 ms)")


if __name__ == "__main__":
    main()
