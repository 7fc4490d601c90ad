"""Messages as the replay log stores them: an event whose data is at the codec's depth
limit reaches subscribers (the message around it is deeper than the limit), and with Redis
an entry in the stream that is not a message is skipped once, never read again, while the
messages after it arrive."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from redis.asyncio import Redis
from stream_support import RECEIVE_TIMEOUT_S, command, open_socket, publish, receive_type

from conftest import REDIS_URL
from forecourt import codec
from forecourt.streams.messages import parse_id
from forecourt.streams.replay import STREAM_KEY
from served import serve


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth - 1):
        value = {"a": value}
    return value


async def test_data_at_the_depth_limit_reaches_subscribers(settings_factory: Any) -> None:
    deep = nested(codec.max_depth())
    with serve(settings_factory()) as served:
        socket = await open_socket(served, served.owner_key)
        await command(socket, {"action": "subscribe", "channels": ["events:deep.*"]})
        async with httpx.AsyncClient(timeout=RECEIVE_TIMEOUT_S) as client:
            await publish(client, served, served.owner_key, "deep.one", deep)
            await publish(client, served, served.owner_key, "deep.two")
        first = await receive_type(socket, "event")
        second = await receive_type(socket, "event")
        assert first["event"]["type"] == "deep.one" and first["event"]["data"] == deep
        assert second["event"]["type"] == "deep.two"
        await socket.close()


async def test_an_entry_that_is_no_message_is_skipped_once(
    backend: str, settings_factory: Any
) -> None:
    if backend != "postgres":
        return  # without Redis the log is a ring in the process: nothing foreign gets in
    settings = settings_factory()
    with serve(settings) as served:
        socket = await open_socket(served, served.owner_key)
        await command(socket, {"action": "subscribe", "channels": ["events:after.*"]})
        redis = Redis.from_url(REDIS_URL)
        try:
            raw = await redis.xadd(settings.redis_prefix + STREAM_KEY, {"m": b"{not a message"})
        finally:
            await redis.aclose()
        foreign = parse_id(raw.decode())
        # With nothing after it, the node's reader still moves past it (it would read it
        # again and again otherwise).
        deadline = time.monotonic() + RECEIVE_TIMEOUT_S
        while served.fc.streams.head < foreign:
            assert time.monotonic() < deadline, "the reader never moved past the entry"
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(timeout=RECEIVE_TIMEOUT_S) as client:
            await publish(client, served, served.owner_key, "after.one")
        message = await receive_type(socket, "event")
        assert message["event"]["type"] == "after.one"
        await socket.close()
