"""One client's side of the hub: its channels, its position in the stream, and a bounded
queue of messages waiting to be sent.

The hub offers every message of the subscriber's tenant; the subscriber keeps those its
channels take. The queue is bounded: a client that falls so far behind that it fills, is
ended (``SLOW_CLIENT``) and its queue dropped, so a slow client never grows memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from forecourt.errors import InvalidInput
from forecourt.streams.channels import Channel
from forecourt.streams.messages import (
    ERROR,
    RESYNC,
    MessageKey,
    StreamMessage,
    control,
    format_id,
)

# Close codes (WebSocket); an SSE stream simply ends.
SLOW_CLIENT = 4008
FORBIDDEN = 4003
UNAUTHENTICATED = 4001
TOO_MANY = 4029
GOING_AWAY = 1001


@dataclass(frozen=True, slots=True)
class Ended:
    """Why the hub ended a subscriber: a close code and a reason for the client."""

    code: int
    reason: str


Revalidate = Callable[[], Awaitable[bool]]


class Subscriber:
    """A connected client of one tenant, as the hub sees it."""

    def __init__(
        self,
        *,
        tenant_id: str,
        actor: str,
        queue_size: int,
        max_subscriptions: int,
        head: MessageKey,
        revalidate: Revalidate | None = None,
        heartbeats: bool = True,
    ) -> None:
        self.tenant_id = tenant_id
        self.actor = actor  # "key:<id>" or "user:<id>": connections are counted per actor
        self.max_subscriptions = max_subscriptions
        self.channels: dict[str, Channel] = {}
        self.cursor: MessageKey = head  # every message up to here was offered to the queue
        self.revalidate = revalidate
        self.heartbeats = heartbeats
        self.ended: Ended | None = None
        self.ended_event = asyncio.Event()  # set by ``end``: a transport stuck sending wakes
        self._queue: asyncio.Queue[str | Ended] = asyncio.Queue(maxsize=queue_size)
        self._held: list[StreamMessage] | None = None  # live messages held during a replay

    # -- what the hub calls ---------------------------------------------------------------

    def offer(self, message: StreamMessage) -> None:
        """A live message of this subscriber's tenant."""
        if self.ended is not None:
            return
        if self._held is not None:
            if len(self._held) >= self._queue.maxsize:
                self.end(SLOW_CLIENT, "the client fell behind the stream during a resume")
                return
            self._held.append(message)
            return
        self._accept(message)

    def _accept(self, message: StreamMessage) -> None:
        if message.key <= self.cursor:
            return
        if not any(channel.matches(message) for channel in self.channels.values()):
            return
        self.cursor = message.key
        self._put(message.text())

    def _put(self, text: str) -> None:
        try:
            self._queue.put_nowait(text)
        except asyncio.QueueFull:
            self.end(
                SLOW_CLIENT,
                f"the client fell behind: {self._queue.maxsize} messages were waiting",
            )

    def end(self, code: int, reason: str) -> None:
        """End the subscriber: what is queued is dropped and ``next`` answers ``Ended``."""
        if self.ended is not None:
            return
        self.ended = Ended(code, reason[:120])  # a close reason fits in 123 bytes
        self._held = None
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(self.ended)
        self.ended_event.set()

    # -- what the transport calls ---------------------------------------------------------

    async def next(self) -> str | Ended:
        """The next message to send (JSON text), or ``Ended``."""
        return await self._queue.get()

    def next_nowait(self) -> str | Ended | None:
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def send_control(self, type: str, head: MessageKey, **fields: object) -> str:
        """Queue a message of the connection itself, at the connection's position."""
        if self._held is None and head > self.cursor:
            self.cursor = head
        text = control(type, self.cursor, **fields)
        if self.ended is None:
            self._put(text)
        return text

    def error(self, head: MessageKey, code: str, message: str, **fields: object) -> None:
        self.send_control(ERROR, head, code=code, message=message, **fields)

    def subscribe(self, channels: Sequence[Channel]) -> list[str]:
        """Add ``channels`` (all of them, or none when that would pass the limit)."""
        new = {c.name: c for c in channels if c.name not in self.channels}
        if len(self.channels) + len(new) > self.max_subscriptions:
            raise InvalidInput(
                f"A connection may hold {self.max_subscriptions} subscriptions; it holds "
                f"{len(self.channels)} and asked for {len(new)} more.",
                field="channels",
                code="too_many_subscriptions",
            )
        self.channels.update(new)
        return sorted(self.channels)

    def unsubscribe(self, names: Sequence[str]) -> list[str]:
        for name in names:
            self.channels.pop(name, None)
        return sorted(self.channels)

    def hold(self, since: MessageKey) -> None:
        """Start a resume from ``since``: live messages wait until ``release``."""
        self._held = []
        self.cursor = since

    async def replay(self, messages: Sequence[StreamMessage]) -> None:
        """Queue the missed ``messages`` of a resume, waiting for room (the client's pace);
        live messages meanwhile wait in the hold, which is bounded like the queue."""
        for message in messages:
            if self.ended is not None:
                return
            if message.tenant_id != self.tenant_id or message.key <= self.cursor:
                continue
            if any(channel.matches(message) for channel in self.channels.values()):
                self.cursor = message.key
                await self._queue.put(message.text())

    def resync(self, head: MessageKey) -> None:
        """The messages after the resume's id are gone: the client reloads; live from here."""
        self.cursor = max(self.cursor, head)
        self._put(
            control(
                RESYNC,
                self.cursor,
                reason="the messages after last_id are past the replay window; reload",
            )
        )

    def release(self) -> None:
        """End a resume: queue the live messages held meanwhile (those not replayed)."""
        held, self._held = self._held or [], None
        for message in held:
            if self.ended is not None:
                return
            self._accept(message)

    @property
    def position(self) -> str:
        return format_id(self.cursor)
