"""Connections per key across nodes: each open stream holds a seat of its actor (an API key
or a user), and an actor has at most ``limit`` seats.

Without Redis, the hub counts the seats of its own process (the whole installation). With
Redis, the seats are one sorted set per actor (``<prefix>streams:seats:<actor>``): members
are connection ids, scores the time (Redis's clock, in milliseconds) the seat lapses. A node
renews the seats of its connections every ``RENEW_S``; a crashed node's seats lapse after
``LEASE_S`` and are no longer counted, so a crash never keeps a key's connections refused.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis

log = logging.getLogger("forecourt.streams")

LEASE_S = 30.0  # a seat nobody renews lapses after this
RENEW_S = 10.0  # how often a node renews its connections' seats
SEATS_KEY = "streams:seats:"

# KEYS[1] the actor's set; ARGV: connection id, limit, lease (ms). 1: seated, 0: full.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false
   and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""
# KEYS: the actors' sets; ARGV: lease (ms), then one connection id per key.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + lease, ARGV[i + 1])
  redis.call('PEXPIRE', key, lease)
end
return #KEYS
"""
RENEW_BATCH = 500  # seats renewed per script call


class RedisSeats:
    """The seats of every node, in Redis (see the module docstring)."""

    def __init__(self, client: aioredis.Redis, prefix: str, lease_s: float = LEASE_S) -> None:
        self._client = client
        self._prefix = prefix + SEATS_KEY
        self._lease_ms = int(lease_s * 1000)
        self._take: Any = client.register_script(_TAKE)
        self._renew: Any = client.register_script(_RENEW)

    def key(self, actor: str) -> str:
        return self._prefix + actor

    async def take(self, actor: str, connection_id: str, limit: int) -> bool:
        """Seat ``connection_id`` of ``actor``; False when its ``limit`` seats are taken."""
        taken = await self._take(
            keys=[self.key(actor)], args=[connection_id, limit, self._lease_ms]
        )
        return bool(taken)

    async def leave(self, seats: Iterable[tuple[str, str]]) -> None:
        """Free the ``(actor, connection id)`` seats."""
        async with self._client.pipeline(transaction=False) as pipe:
            for actor, connection_id in seats:
                pipe.zrem(self.key(actor), connection_id)
            await pipe.execute()

    async def renew(self, seats: list[tuple[str, str]]) -> None:
        """Extend the ``(actor, connection id)`` seats' leases (seating any that lapsed:
        the connection is open, so it counts)."""
        for start in range(0, len(seats), RENEW_BATCH):
            batch = seats[start : start + RENEW_BATCH]
            await self._renew(
                keys=[self.key(actor) for actor, _ in batch],
                args=[self._lease_ms, *(connection_id for _, connection_id in batch)],
            )
