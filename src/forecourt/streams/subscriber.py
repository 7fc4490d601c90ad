"""One client's side of the hub: its channels, its position in the stream, and a bounded
queue of messages waiting to be sent.

The hub offers every message of the subscriber's tenant; the subscriber keeps those its
channels take. The queue is bounded: a client that falls so far behind that it fills, is
ended (``SLOW_CLIENT``) and its queue dropped, so a slow client never grows memory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from forecourt.errors import InvalidInput
from forecourt.streams.channels import EVENTS, Channel
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

# How long after a resume from the event log live messages of the events it sent are
# dropped: an event read from the log may reach the stream only after the resume.
SENT_MEMORY_S = 60.0


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
        self.seat: str | None = None  # its seat among the actor's connections (with Redis)
        self.max_subscriptions = max_subscriptions
        self.channels: dict[str, Channel] = {}
        self.cursor: MessageKey = head  # every message up to here was offered to the queue
        self.revalidate = revalidate
        self.heartbeats = heartbeats
        self.ended: Ended | None = None
        self.ended_event = asyncio.Event()  # set by ``end``: a transport stuck sending wakes
        self._queue: asyncio.Queue[str | Ended] = asyncio.Queue(maxsize=queue_size)
        self._held: list[StreamMessage] | None = None  # live messages held during a replay
        self._sent: set[str] = set()  # ids of the events a resume sent from the event log
        self._sent_until = 0.0  # (monotonic) when ``_sent`` is forgotten
        # After a partial ``resync``: held messages up to here of its channels are dropped.
        self._resynced: tuple[MessageKey, frozenset[str]] | None = None

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
        if self._sent and self._already_sent(message):
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

    async def replay(self, messages: Sequence[StreamMessage], family: str | None = None) -> None:
        """Queue the missed ``messages`` of a resume (of ``family`` only, when given),
        waiting for room (the client's pace); live messages meanwhile wait in the hold,
        which is bounded like the queue."""
        for message in messages:
            if self.ended is not None:
                return
            if message.tenant_id != self.tenant_id or message.key <= self.cursor:
                continue
            if family is not None and message.family != family:
                continue
            if self._sent and self._already_sent(message):
                continue
            if any(channel.matches(message) for channel in self.channels.values()):
                self.cursor = message.key
                await self._queue.put(message.text())
        if messages and family is not None:
            # Every message up to the last was replayed or is of a channel that resyncs.
            self.cursor = max(self.cursor, messages[-1].key)

    async def replay_archived(self, message: StreamMessage) -> None:
        """Queue an event a resume read from the event log (its id is its place there, not
        a position in the stream: the cursor stays); its live message, if any comes, is
        dropped."""
        if self.ended is not None or message.tenant_id != self.tenant_id:
            return
        if any(channel.matches(message) for channel in self.channels.values()):
            self._sent.add(message.data["event"]["event_id"])
            self._sent_until = time.monotonic() + SENT_MEMORY_S
            await self._queue.put(message.text())

    def _already_sent(self, message: StreamMessage) -> bool:
        if time.monotonic() > self._sent_until:
            self._sent.clear()
            return False
        if message.family != EVENTS:
            return False
        return message.data["event"]["event_id"] in self._sent

    def resync(self, head: MessageKey, channels: Sequence[str] | None = None) -> None:
        """The messages after the resume's id are gone: the client reloads; live from here.
        With ``channels``, only those reload: the others resumed, so the cursor stays and
        the held messages of ``channels`` up to ``head`` (older than the reload) are
        dropped."""
        fields: dict[str, object] = {}
        if channels is None:
            self.cursor = max(self.cursor, head)
        else:
            fields["channels"] = list(channels)
            self._resynced = (head, frozenset(channels))
        self._put(
            control(
                RESYNC,
                self.cursor,
                reason="the messages after last_id are past the replay window; reload",
                **fields,
            )
        )

    def release(self) -> None:
        """End a resume: queue the live messages held meanwhile (those not replayed)."""
        held, self._held = self._held or [], None
        resynced, self._resynced = self._resynced, None
        for message in held:
            if self.ended is not None:
                return
            if resynced is not None and message.key <= resynced[0]:
                reloaded = [self.channels[n] for n in resynced[1] if n in self.channels]
                if any(channel.matches(message) for channel in reloaded):
                    continue
            self._accept(message)

    @property
    def position(self) -> str:
        return format_id(self.cursor)
