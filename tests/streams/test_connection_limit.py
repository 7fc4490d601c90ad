"""The connections of one key are limited on every node together (PostgreSQL + Redis, two
nodes): past the limit a WebSocket is closed with 4029 and an event stream is a 429, on
either node; a closed connection frees its place; the places of a crashed node lapse."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from stream_support import RECEIVE_TIMEOUT_S, command, open_socket, receive_type
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from conftest import REDIS_URL
from forecourt.settings import Settings
from forecourt.streams.seats import SEATS_KEY
from served import Served, serve

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
ATTEMPTS = 50  # a closed connection's place is freed after its close: retry a bounded while


async def refusal(socket: ClientConnection) -> tuple[int | None, str]:
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await asyncio.wait_for(socket.recv(), RECEIVE_TIMEOUT_S)
    rcvd = info.value.rcvd
    return (rcvd.code, rcvd.reason) if rcvd is not None else (None, "")


async def admitted(served: Served) -> ClientConnection:
    """A connection of the owner key, once one is admitted."""
    for _ in range(ATTEMPTS):
        socket = await open_socket(served, served.owner_key)
        try:
            await command(socket, {"action": "ping"}, "pong")
        except ConnectionClosed:
            await asyncio.sleep(0.1)
            continue
        return socket
    pytest.fail("no connection was admitted")


async def test_the_limit_holds_across_nodes(
    pg_database: str, redis_prefix: str, tmp_path: Any
) -> None:
    def settings(name: str) -> Settings:
        return Settings(
            data_dir=tmp_path / name,
            secret_key="seats-secret-" + "k" * 20,
            database_url=pg_database,
            redis_url=REDIS_URL,
            redis_prefix=redis_prefix,
            stream_max_connections_per_key=2,
        )

    with serve(settings("a")) as node_a:
        (tmp_path / "b").mkdir()
        (tmp_path / "b" / "owner-key").write_text(node_a.owner_key)
        with serve(settings("b")) as node_b:
            on_a = await open_socket(node_a, node_a.owner_key, "channels=events")
            await receive_type(on_a, "subscribed")
            on_b = await open_socket(node_b, node_b.owner_key, "channels=events")
            await receive_type(on_b, "subscribed")

            # Two held, one on each node: a third is refused on either.
            for node in (node_a, node_b):
                third = await open_socket(node, node.owner_key)
                code, reason = await refusal(third)
                assert code == 4029 and "too many connections" in reason
            async with httpx.AsyncClient(
                base_url=node_b.url, headers=node_b.auth(), timeout=RECEIVE_TIMEOUT_S
            ) as client:
                refused = await client.get("/api/v1/stream", params={"channels": "events"})
                assert refused.status_code == 429, refused.text
            assert (await command(on_a, {"action": "ping"}, "pong"))["type"] == "pong"

            # Closing the one on A frees a place, which B gives.
            await on_a.close()
            again = await admitted(node_b)
            refused_socket = await open_socket(node_a, node_a.owner_key)
            assert (await refusal(refused_socket))[0] == 4029
            await again.close()
            await on_b.close()

            # A crashed node's places lapse: a lapsed one does not count, a live one does.
            first = await admitted(node_a)
            redis = Redis.from_url(REDIS_URL)
            try:
                [seats] = [k async for k in redis.scan_iter(f"{redis_prefix}{SEATS_KEY}*")]
                now_ms = int(time.time() * 1000)
                await redis.zadd(seats, {"lapsed": now_ms - 1})
                second = await admitted(node_b)
                assert await redis.zscore(seats, "lapsed") is None
                await second.close()
                await redis.zadd(seats, {"crashed": now_ms + 60_000})
                for _ in range(ATTEMPTS):  # until the second's place is freed
                    if await redis.zcard(seats) == 2:
                        break
                    await asyncio.sleep(0.1)
                refused_socket = await open_socket(node_b, node_b.owner_key)
                assert (await refusal(refused_socket))[0] == 4029
            finally:
                await redis.aclose()
            await first.close()
