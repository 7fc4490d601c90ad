"""Cross-node notifications (cache invalidation): in-process, or Redis pub/sub when configured."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("forecourt.broadcast")

Handler = Callable[[str], Awaitable[None] | None]
RECONNECT_DELAY_S = 1.0
POLL_INTERVAL_S = 0.25
STOP_TIMEOUT_S = 2.0


class Broadcast(Protocol):
    async def publish(self, channel: str, message: str) -> None: ...
    def subscribe(self, channel: str, handler: Handler) -> None: ...
    async def start(self) -> None: ...
    async def aclose(self) -> None: ...


async def _call(handler: Handler, message: str) -> None:
    result = handler(message)
    if result is not None:
        await result


class MemoryBroadcast:
    """One process: handlers run on publish."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {}

    async def publish(self, channel: str, message: str) -> None:
        for handler in self._handlers.get(channel, []):
            await _call(handler, message)

    def subscribe(self, channel: str, handler: Handler) -> None:
        self._handlers.setdefault(channel, []).append(handler)

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class RedisBroadcast:
    """Every node subscribes; a publish reaches all of them, this one included.

    Local handlers also run directly on publish, so this node never depends on Redis
    to invalidate its own cache.
    """

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._handlers: dict[str, list[Handler]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def publish(self, channel: str, message: str) -> None:
        for handler in self._handlers.get(channel, []):
            await _call(handler, message)
        try:
            await self._client.publish(self._prefix + channel, message)
        except (RedisError, OSError):
            log.warning("could not broadcast on %s; other nodes rely on their cache TTL", channel)

    def subscribe(self, channel: str, handler: Handler) -> None:
        self._handlers.setdefault(channel, []).append(handler)

    async def start(self) -> None:
        if self._handlers and self._task is None:
            self._task = asyncio.create_task(self._listen(), name="forecourt-broadcast")

    async def _listen(self) -> None:
        channels = [self._prefix + c for c in self._handlers]
        while not self._stopping:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*channels)
                while not self._stopping:
                    # Poll with a timeout rather than block in listen(): a stop is noticed
                    # within POLL_INTERVAL_S even if the connection hangs.
                    msg = await pubsub.get_message(timeout=POLL_INTERVAL_S)
                    if msg is None or msg.get("type") != "message":
                        continue
                    channel = msg["channel"]
                    channel = channel.decode() if isinstance(channel, bytes) else channel
                    data = msg["data"]
                    data = data.decode() if isinstance(data, bytes) else str(data)
                    for handler in self._handlers.get(channel[len(self._prefix) :], []):
                        await _call(handler, data)
            except (RedisError, OSError):
                if not self._stopping:
                    await asyncio.sleep(RECONNECT_DELAY_S)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def aclose(self) -> None:
        if self._task is not None:
            self._stopping = True
            done, _ = await asyncio.wait({self._task}, timeout=STOP_TIMEOUT_S)
            if not done:
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=STOP_TIMEOUT_S)
            self._task = None
