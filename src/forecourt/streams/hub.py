"""The stream hub: producers ``publish``, subscribers join, and every message of a tenant
reaches that tenant's subscribers on every node.

Without Redis, ``publish`` appends to the in-process replay ring and offers the message to
this node's subscribers at once. With Redis, ``publish`` queues the message for one writer
task that appends it to the shared Redis stream (a pipeline per batch); one reader task per
node follows the stream and offers each message to the node's subscribers. Every node so
sees every message once, in the stream's order, with the stream's id.

``publish`` never blocks and never raises: a producer (an after-commit hook, a worker) is
never held up by streams. Messages a Redis outage keeps from the stream are dropped (live
streams are best effort; the event log keeps events).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from forecourt.broadcast import Broadcast
from forecourt.errors import Conflict
from forecourt.keys.cache import INVALIDATE_CHANNEL
from forecourt.principal import Principal
from forecourt.streams import backfill
from forecourt.streams import channels as ch
from forecourt.streams.backfill import Archive
from forecourt.streams.messages import HEARTBEAT, ZERO, MessageKey, StreamMessage, format_id
from forecourt.streams.replay import MemoryLog, RedisLog
from forecourt.streams.seats import RENEW_S, RedisSeats
from forecourt.streams.subscriber import (
    FORBIDDEN,
    GOING_AWAY,
    TOO_MANY,
    Revalidate,
    Subscriber,
)
from forecourt.tenants.service import SUSPENSION_CHANNEL

log = logging.getLogger("forecourt.streams")

# Messages waiting for the Redis writer; past this (Redis down) the oldest are dropped.
MAX_PENDING = 10_000
WRITE_BATCH = 500
RETRY_DELAY_S = 1.0

Gauge = Callable[[int], None]


class StreamHub:
    """See the module docstring. ``start`` before use, ``aclose`` after."""

    def __init__(
        self,
        broadcast: Broadcast,
        *,
        window_s: float,
        max_messages: int,
        heartbeat_s: float,
        max_connections_per_actor: int,
        queue_size: int,
        max_subscriptions: int,
        redis: aioredis.Redis | None = None,
        reader: aioredis.Redis | None = None,
        prefix: str = "fc:",
    ) -> None:
        self.heartbeat_s = heartbeat_s
        self.max_connections_per_actor = max_connections_per_actor
        self.queue_size = queue_size  # of each subscriber's send queue
        self.max_subscriptions = max_subscriptions  # channels per subscriber
        self._memory: MemoryLog | None = None
        self._redis: RedisLog | None = None
        self._seats: RedisSeats | None = None  # without Redis, ``_by_actor`` counts them
        if redis is not None and reader is not None:
            self._redis = RedisLog(redis, reader, prefix, window_s)
            self._seats = RedisSeats(redis, prefix)
        else:
            self._memory = MemoryLog(window_s, max_messages)
        self._head: MessageKey = ZERO  # the newest message offered to this node's subscribers
        self._by_tenant: dict[str, set[Subscriber]] = {}
        self._by_actor: dict[str, set[Subscriber]] = {}
        self._pending: deque[StreamMessage] = deque(maxlen=MAX_PENDING)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._checks: set[asyncio.Task[None]] = set()  # also seats being freed
        self.dropped = 0
        broadcast.subscribe(SUSPENSION_CHANNEL, self._on_suspension)
        broadcast.subscribe(INVALIDATE_CHANNEL, self._on_key_changed)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        if self._redis is not None:
            try:
                self._head = await self._redis.head()
            except (RedisError, OSError):
                log.warning("could not read the stream's head; following it from its start")
            self._tasks.append(asyncio.create_task(self._write_loop(), name="streams-writer"))
            self._tasks.append(asyncio.create_task(self._read_loop(), name="streams-reader"))
            self._tasks.append(asyncio.create_task(self._renew_loop(), name="streams-seats"))
        self._tasks.append(asyncio.create_task(self._heartbeat_loop(), name="streams-heartbeat"))

    async def aclose(self) -> None:
        if self._redis is not None and self._pending:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(self._flush(), timeout=2.0)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        seated = []
        for subscriber in list(self.subscribers()):
            subscriber.end(GOING_AWAY, "the server is shutting down")
            if subscriber.seat is not None:
                seated.append((subscriber.actor, subscriber.seat))
                subscriber.seat = None
        if self._seats is not None and seated:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(self._seats.leave(seated), timeout=2.0)
        self._started = False

    # -- producers --------------------------------------------------------------------------

    def publish(
        self,
        tenant_id: str,
        type: str,
        family: str,
        channel: str,
        data: dict[str, Any],
        keys: Sequence[str] = (),
    ) -> None:
        """Produce a message for ``tenant_id``'s subscribers of ``family`` channels."""
        self.publish_message(StreamMessage(type, tenant_id, family, channel, data, tuple(keys)))

    def publish_message(self, message: StreamMessage) -> None:
        """Produce ``message`` (its id is given by the replay log)."""
        if self._memory is not None:
            self._dispatch(self._memory.append(message))
            return
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self._pending.append(message)
        self._wake.set()

    # -- subscribers ------------------------------------------------------------------------

    @property
    def head(self) -> MessageKey:
        return self._head

    @property
    def active_connections(self) -> int:
        return sum(len(s) for s in self._by_tenant.values())

    def subscribers(self) -> list[Subscriber]:
        return [s for group in self._by_tenant.values() for s in group]

    def subscriber(
        self, principal: Principal, *, revalidate: Revalidate | None = None, heartbeats: bool = True
    ) -> Subscriber:
        """A new subscriber for ``principal``'s connection, at the head, not yet joined."""
        return Subscriber(
            tenant_id=principal.tenant_id,
            actor=f"{principal.actor_type}:{principal.actor_id}",
            queue_size=self.queue_size,
            max_subscriptions=self.max_subscriptions,
            head=self._head,
            revalidate=revalidate,
            heartbeats=heartbeats,
        )

    async def admit(self, subscriber: Subscriber) -> bool:
        """Register ``subscriber`` if its actor has a connection left of
        ``max_connections_per_actor``, counted on every node with Redis (see ``seats``);
        False (and it is ended) when it has none."""
        if self._seats is None or not self._room(subscriber):
            return self.join(subscriber)
        seat = uuid.uuid4().hex
        try:
            taken = await self._seats.take(subscriber.actor, seat, self.max_connections_per_actor)
        except (RedisError, OSError):
            # Redis is away: this node's own count holds until it is back.
            log.warning("could not count a stream connection in Redis", exc_info=True)
            return self.join(subscriber)
        if not taken:
            self._refuse(subscriber)
            return False
        subscriber.seat = seat
        if not self.join(subscriber):
            self._free(subscriber)
            return False
        return True

    def join(self, subscriber: Subscriber) -> bool:
        """Register ``subscriber``; False (and it is ended) past the connections per actor
        on this node. ``admit`` counts them on every node."""
        if not self._room(subscriber):
            self._refuse(subscriber)
            return False
        same = self._by_actor.setdefault(subscriber.actor, set())
        same.add(subscriber)
        self._by_tenant.setdefault(subscriber.tenant_id, set()).add(subscriber)
        subscriber.cursor = max(subscriber.cursor, self._head)
        return True

    def _room(self, subscriber: Subscriber) -> bool:
        return len(self._by_actor.get(subscriber.actor, ())) < self.max_connections_per_actor

    def _refuse(self, subscriber: Subscriber) -> None:
        subscriber.end(
            TOO_MANY, f"too many connections for this key ({self.max_connections_per_actor})"
        )

    def _free(self, subscriber: Subscriber) -> None:
        """Give ``subscriber``'s seat back (in the background: ``leave`` never waits)."""
        seat, subscriber.seat = subscriber.seat, None
        if seat is None or self._seats is None:
            return
        seats = self._seats

        async def run() -> None:
            try:
                await seats.leave([(subscriber.actor, seat)])
            except (RedisError, OSError):  # it lapses by itself
                log.warning("could not free a stream connection's seat", exc_info=True)

        task = asyncio.get_running_loop().create_task(run())
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    def leave(self, subscriber: Subscriber) -> None:
        self._free(subscriber)
        for index, key in (
            (self._by_tenant, subscriber.tenant_id),
            (self._by_actor, subscriber.actor),
        ):
            group = index.get(key)
            if group is not None:
                group.discard(subscriber)
                if not group:
                    del index[key]

    async def resume(
        self, subscriber: Subscriber, last_id: MessageKey, archive: Archive | None = None
    ) -> None:
        """Queue what ``subscriber`` missed after ``last_id`` on its channels, then go on
        live. Past the window, its ``events`` channels resume from ``archive`` (the event
        log; see ``backfill``) and its other channels get a ``resync``. Conflict for an id
        the stream has not reached (nothing changes)."""
        log_ = self._memory or self._redis
        assert log_ is not None
        if last_id > self._head:
            newest = await log_.head()
            if last_id > newest:
                raise Conflict(
                    f"last_id {format_id(last_id)} is ahead of the stream (its newest message "
                    f"is {format_id(newest)}).",
                    field="last_id",
                    code="invalid_last_id",
                )
        subscriber.hold(last_id)
        try:
            if not log_.lost_after(last_id):
                await subscriber.replay(await log_.after(last_id))
            elif archive is None or not await self._backfill(subscriber, last_id, archive):
                subscriber.resync(self._head)
        finally:
            subscriber.release()

    async def _backfill(
        self, subscriber: Subscriber, last_id: MessageKey, archive: Archive
    ) -> bool:
        """The events after ``last_id`` from the event log, then the events the replay log
        still holds, then ``resync`` for the other channels; False (nothing sent) when the
        subscriber has no events channel or more events than the archive sends."""
        channels = list(subscriber.channels.values())
        if not any(c.family == ch.EVENTS for c in channels):
            return False
        log_ = self._memory or self._redis
        assert log_ is not None
        backlog = await log_.after(last_id)
        # Every event whose message the log holds was accepted by its id's millisecond:
        # the event log gives the events up to the end of the log's first millisecond.
        until_ms = (backlog[0].key[0] if backlog else int(time.time() * 1000)) + 1
        types = backfill.type_patterns(channels)
        since = backfill.moment(last_id[0])
        total = await archive.count(subscriber.tenant_id, types, since, backfill.moment(until_ms))
        if total > archive.max_events:
            return False
        async for message in backfill.archived(
            archive, subscriber.tenant_id, types, last_id, until_ms
        ):
            await subscriber.replay_archived(message)
        await subscriber.replay(backlog, family=ch.EVENTS)
        others = sorted(c.name for c in channels if c.family != ch.EVENTS)
        if others:
            subscriber.resync(self._head, others)
        return True

    # -- delivery to this node's subscribers ------------------------------------------------

    def _dispatch(self, message: StreamMessage) -> None:
        if message.key > self._head:
            self._head = message.key
        for subscriber in tuple(self._by_tenant.get(message.tenant_id, ())):
            subscriber.offer(message)

    async def _write_loop(self) -> None:
        assert self._redis is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush()
            except (RedisError, OSError):
                log.warning("could not append to the stream; retrying", exc_info=True)
                await asyncio.sleep(RETRY_DELAY_S)
                self._wake.set()

    async def _flush(self) -> None:
        assert self._redis is not None
        while self._pending:
            batch = [self._pending[i] for i in range(min(WRITE_BATCH, len(self._pending)))]
            await self._redis.append_many(batch)
            for _ in batch:
                self._pending.popleft()

    async def _read_loop(self) -> None:
        assert self._redis is not None
        while True:
            try:
                messages, last = await self._redis.read(self._head)
            except (RedisError, OSError):
                log.warning("could not read the stream; retrying", exc_info=True)
                await asyncio.sleep(RETRY_DELAY_S)
                continue
            for message in messages:
                self._dispatch(message)
            self._head = max(self._head, last)

    async def _renew_loop(self) -> None:
        assert self._seats is not None
        while True:
            await asyncio.sleep(RENEW_S)
            seated = [(s.actor, s.seat) for s in self.subscribers() if s.seat is not None]
            if not seated:
                continue
            try:
                await self._seats.renew(seated)
            except (RedisError, OSError):
                log.warning("could not renew the stream connections' seats", exc_info=True)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            count = self.active_connections
            for subscriber in self.subscribers():
                if subscriber.heartbeats:
                    subscriber.send_control(HEARTBEAT, self._head, active_connections=count)
                if subscriber.revalidate is not None:
                    self._revalidate(subscriber)

    # -- revocation and suspension ----------------------------------------------------------

    def _on_suspension(self, message: str) -> None:
        action, _, tenant_id = message.partition(" ")
        if action == "suspend":
            for subscriber in tuple(self._by_tenant.get(tenant_id, ())):
                subscriber.end(FORBIDDEN, "the tenant is suspended")

    def _on_key_changed(self, key_id: str) -> None:
        for subscriber in tuple(self._by_actor.get(f"key:{key_id}", ())):
            self._revalidate(subscriber)

    def _revalidate(self, subscriber: Subscriber) -> None:
        check = subscriber.revalidate
        if check is None:
            return

        async def run() -> None:
            try:
                valid = await check()
            except Exception:  # the database is away: keep the connection, check later
                log.warning("could not check a stream client's credentials", exc_info=True)
                return
            if not valid:
                subscriber.end(FORBIDDEN, "the credentials were revoked or expired")

        task = asyncio.get_running_loop().create_task(run())
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)
