"""The replay log: every data message of the last ``window_s`` seconds, by id.

Without Redis, a ring in this process (also bounded by a count). With Redis, one Redis
stream (``XADD`` with ``MINID`` trimming) that every node appends to and reads from, so ids
are the same on every node and a client may resume on any of them.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

import redis.asyncio as aioredis

from forecourt.streams.messages import ZERO, MessageKey, StreamMessage, parse_id

log = logging.getLogger("forecourt.streams")

STREAM_KEY = "streams"
READ_BLOCK_MS = 1000
READ_BATCH = 1000
RANGE_BATCH = 1000
# The in-process ring's bound in bytes of message text, beside its count (events may be large).
MAX_RING_BYTES = 64 * 1024 * 1024


def _key(raw: bytes | str) -> MessageKey:
    return parse_id(raw.decode() if isinstance(raw, bytes) else raw)


class ReplayLog(Protocol):
    window_s: float

    async def head(self) -> MessageKey:
        """The id of the newest message, or ``ZERO``."""
        ...

    async def after(self, key: MessageKey) -> Sequence[StreamMessage]:
        """The messages after ``key``, oldest first."""
        ...

    def lost_after(self, key: MessageKey) -> bool:
        """Whether messages after ``key`` may have been dropped (past the window)."""
        ...


class MemoryLog:
    """A ring of the messages of the last ``window_s`` seconds (at most ``max_messages``
    and ``max_bytes`` of their text)."""

    def __init__(self, window_s: float, max_messages: int, max_bytes: int = MAX_RING_BYTES) -> None:
        self.window_s = window_s
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._ring: deque[StreamMessage] = deque()
        self._bytes = 0
        self._last: MessageKey = ZERO
        self._dropped: MessageKey = ZERO  # the newest id dropped from the ring

    def append(self, message: StreamMessage) -> StreamMessage:
        now_ms = int(time.time() * 1000)
        ms, seq = self._last
        message.key = (now_ms, 0) if now_ms > ms else (ms, seq + 1)
        self._last = message.key
        self._ring.append(message)
        self._bytes += len(message.text())
        self._trim(now_ms)
        return message

    def _trim(self, now_ms: int) -> None:
        oldest_ms = now_ms - int(self.window_s * 1000)
        ring = self._ring
        while ring and (
            len(ring) > self.max_messages
            or self._bytes > self.max_bytes
            or ring[0].key[0] < oldest_ms
        ):
            dropped = ring.popleft()
            self._bytes -= len(dropped.text())
            self._dropped = dropped.key

    async def head(self) -> MessageKey:
        return self._last

    async def after(self, key: MessageKey) -> Sequence[StreamMessage]:
        self._trim(int(time.time() * 1000))
        ring = self._ring
        # Newest first from the end: a resume usually asks for the last few messages.
        start = len(ring)
        while start > 0 and ring[start - 1].key > key:
            start -= 1
        return [ring[i] for i in range(start, len(ring))]

    def lost_after(self, key: MessageKey) -> bool:
        self._trim(int(time.time() * 1000))
        return key < self._dropped


class RedisLog:
    """One Redis stream shared by every node; ``read`` follows it for this node's hub."""

    def __init__(
        self, client: aioredis.Redis, reader: aioredis.Redis, prefix: str, window_s: float
    ) -> None:
        self._client = client
        self._reader = reader  # no socket timeout: XREAD blocks
        self.key = prefix + STREAM_KEY
        self.window_s = window_s

    async def append_many(self, messages: Sequence[StreamMessage]) -> None:
        """Append ``messages`` in one round trip (ids are assigned by Redis)."""
        min_id = f"{int((time.time() - self.window_s) * 1000)}-0"
        async with self._client.pipeline(transaction=False) as pipe:
            for message in messages:
                pipe.xadd(self.key, {"m": message.stored()}, minid=min_id, approximate=True)
            await pipe.execute()

    async def head(self) -> MessageKey:
        entries: Any = await self._client.xrevrange(self.key, count=1)
        return _key(entries[0][0]) if entries else ZERO

    async def after(self, key: MessageKey) -> Sequence[StreamMessage]:
        found: list[StreamMessage] = []
        start = f"({key[0]}-{key[1]}"
        while True:
            entries: Any = await self._client.xrange(self.key, min=start, count=RANGE_BATCH)
            found.extend(_readable(entries))
            if len(entries) < RANGE_BATCH:
                return found
            start = "(" + (
                entries[-1][0].decode() if isinstance(entries[-1][0], bytes) else entries[-1][0]
            )

    def lost_after(self, key: MessageKey) -> bool:
        # Entries older than the window may be trimmed at any time.
        return key[0] < int((time.time() - self.window_s) * 1000)

    async def read(self, after: MessageKey) -> tuple[list[StreamMessage], MessageKey]:
        """The messages after ``after``, waiting up to READ_BLOCK_MS for one, and the id to
        read after next (past any entry skipped as unreadable, so none is read twice)."""
        reply: Any = await self._reader.xread(
            {self.key: f"{after[0]}-{after[1]}"}, count=READ_BATCH, block=READ_BLOCK_MS
        )
        messages: list[StreamMessage] = []
        last = after
        for _stream, entries in reply or ():
            messages.extend(_readable(entries))
            if entries:
                last = max(last, _key(entries[-1][0]))
        return messages, last


def _readable(entries: Sequence[Any]) -> list[StreamMessage]:
    """The messages of stream ``entries``; an entry that is not one (a foreign writer in our
    key) is skipped with a warning, never stopping a reader or a resume."""
    messages: list[StreamMessage] = []
    for raw_id, fields in entries:
        try:
            messages.append(StreamMessage.from_stored(fields[b"m"], _key(raw_id)))
        except Exception:
            log.warning("skipping an unreadable stream entry %r", raw_id)
    return messages
