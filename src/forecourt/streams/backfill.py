"""Resuming ``events`` channels from the event log, past the replay window.

The replay log keeps the messages of a window (10 minutes by default); the event log keeps
events far longer. A client whose ``last_id`` is past the window gets, on its ``events``
channels, the events it missed from the event log, then what the replay log still holds;
its other channels get ``resync``.

How message ids and events relate. A message id is ``<milliseconds>-<sequence>``, the
milliseconds being when the message entered the stream. An event's message enters the
stream after the event was accepted (its ``created_at``), so its id's milliseconds are never
before the event's acceptance. An event read from the event log is sent with the id of its
place there: ``<the millisecond it was accepted>-<its rank among the events of the
connection's channels accepted in that millisecond, by id>``. A resume from ``(ms, seq)``
past the window sends the events whose place is after it, in the order they were accepted;
so resuming from the id of an event sent from the event log continues exactly after it.
What the replay log still holds follows, without the events already sent (by event id), and
so do live messages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from forecourt.events.envelope import StoredEvent
from forecourt.streams import channels as ch
from forecourt.streams import producers
from forecourt.streams.messages import MessageKey, StreamMessage

PAGE = 200  # events read from the event log at a time
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)


class Archive(Protocol):
    """The event log as a resume reads it (the events service, through a session)."""

    max_events: int  # past this many events to send, the client gets ``resync`` instead

    async def count(
        self, tenant_id: str, types: Sequence[str] | None, since: datetime, until: datetime
    ) -> int:
        """The events from ``since`` to ``until``, counting at most ``max_events + 1``."""
        ...

    async def page(
        self,
        tenant_id: str,
        types: Sequence[str] | None,
        since: datetime,
        until: datetime,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> Sequence[StoredEvent]:
        """Up to ``limit`` events accepted from ``since`` to ``until`` (excluded), in the
        order they were accepted, after ``after`` (an event's ``created_at`` and id)."""
        ...


def milliseconds(moment: datetime) -> int:
    return (moment - EPOCH) // ONE_MS


def moment(ms: int) -> datetime:
    return EPOCH + ms * ONE_MS


def type_patterns(channels: Sequence[ch.Channel]) -> list[str] | None:
    """The type patterns of ``channels``' events channels; None when one takes every type."""
    patterns = []
    for channel in channels:
        if channel.family != ch.EVENTS:
            continue
        if channel.selector is None:
            return None
        patterns.append(channel.selector)
    return patterns


async def archived(
    archive: Archive,
    tenant_id: str,
    types: Sequence[str] | None,
    after: MessageKey,
    until_ms: int,
) -> AsyncIterator[StreamMessage]:
    """The messages of the events accepted after place ``after`` and before ``until_ms``,
    oldest first, each with the id of its place in the event log."""
    since, until = moment(after[0]), moment(until_ms)
    last: tuple[datetime, str] | None = None
    current_ms, rank = -1, -1
    while True:
        page = await archive.page(tenant_id, types, since, until, last, PAGE)
        for event in page:
            ms = milliseconds(event.created_at)
            rank = rank + 1 if ms == current_ms else 0
            current_ms = ms
            if (ms, rank) <= after:
                continue
            message = producers.event_message(event)
            message.key = (ms, rank)
            message.timestamp = event.created_at.isoformat().replace("+00:00", "Z")
            yield message
        if len(page) < PAGE:
            return
        last = (page[-1].created_at, page[-1].id)
