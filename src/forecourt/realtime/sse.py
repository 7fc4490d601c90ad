"""Server-Sent Events at ``GET /api/v1/stream?channels=a,b``: the same channels and message
ids as the WebSocket, ``Last-Event-ID`` (or ``?last_id=``) to resume, and a keep-alive
comment every ``stream_keepalive_s``. A client that falls behind has its stream ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from starlette.responses import StreamingResponse

from forecourt import codec
from forecourt.errors import RateLimited
from forecourt.http.deps import current_principal
from forecourt.http.guard import GuardedRoute
from forecourt.observability import connections
from forecourt.principal import Principal
from forecourt.realtime.archive import EventArchive
from forecourt.streams import channels as ch
from forecourt.streams.messages import ID_PATTERN, SUBSCRIBED, parse_id
from forecourt.streams.subscriber import Ended, Subscriber

if TYPE_CHECKING:
    from forecourt.core import Forecourt

MEDIA_TYPE = "text/event-stream"
RETRY_MS = 2000  # how long an EventSource waits before it reconnects

# One event of the stream (what a client's SSE parser yields).
EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "The message id (resume after it)."},
        "event": {"type": "string", "description": "The message type."},
        "data": {"type": "string", "description": "The message as JSON."},
        "retry": {"type": "integer", "description": "Milliseconds before reconnecting."},
    },
}

router = APIRouter(prefix="/api/v1", tags=["streams"], route_class=GuardedRoute)


class EventStreamResponse(StreamingResponse):
    media_type = MEDIA_TYPE


def _frame(text: str) -> str:
    """An SSE event of a message's JSON: its id and type as the event's id and name."""
    # Forecourt wrote ``text``: an event's data at the depth limit sits deeper inside it.
    value = codec.loads_stored(text)
    return f"id: {value['id']}\nevent: {value['type']}\ndata: {text}\n\n"


@router.get(
    "/stream",
    response_class=EventStreamResponse,
    responses={
        200: {
            "description": "An event stream: each event's id is the message id, its name the "
            "message type and its data the message as JSON (see docs/streams.md).",
            "content": {MEDIA_TYPE: {"schema": EVENT_SCHEMA}},
        },
        409: {"description": "Last-Event-ID (or last_id) is ahead of the stream."},
    },
    summary="Live messages over Server-Sent Events",
)
async def stream(
    request: Request,
    principal: Annotated[Principal, Depends(current_principal)],
    channels: Annotated[
        str,
        Query(
            min_length=1,
            max_length=4000,
            # Documented, and checked by the route itself to name the channel that is wrong.
            json_schema_extra={"pattern": ch.LIST_PATTERN},
            description="Comma-separated channels: events[:<type pattern>], "
            "deliveries[:<endpoint id>], metrics[:<plugin id or series pattern>], "
            "executions[:<plugin id>], alerts.",
        ),
    ],
    last_id: Annotated[
        str | None,
        Query(
            pattern=ID_PATTERN.pattern,
            description="Resume after this message id (as Last-Event-ID).",
        ),
    ] = None,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", max_length=40, include_in_schema=False)
    ] = None,
) -> EventStreamResponse:
    """The caller's tenant's messages on ``channels``, live; each channel needs its scope."""
    fc: Forecourt = request.app.state.forecourt
    settings = fc.settings
    names = [name.strip() for name in channels.split(",")]
    joined = ch.parse_all(names, principal.scopes, field="channels")
    resume_from = last_event_id or last_id
    since = None
    if resume_from is not None:
        since = parse_id(resume_from, "Last-Event-ID" if last_event_id else "last_id")
    subscriber = fc.streams.subscriber(principal, heartbeats=False)
    subscriber.subscribe(joined)
    if not await fc.streams.admit(subscriber):
        raise RateLimited(
            f"This key holds {settings.stream_max_connections_per_key} streams already.",
            headers={"Retry-After": "1"},
        )
    try:
        if since is not None:
            await fc.streams.resume(subscriber, since, EventArchive(fc))
    except BaseException:
        fc.streams.leave(subscriber)
        raise
    subscriber.send_control(
        SUBSCRIBED, fc.streams.head, channels=ch.names(joined), subscriptions=ch.names(joined)
    )
    return EventStreamResponse(_events(fc, subscriber), headers={"Cache-Control": "no-cache"})


async def _events(fc: Forecourt, subscriber: Subscriber) -> AsyncIterator[str]:
    settings = fc.settings
    keepalive = settings.stream_keepalive_s
    lifetime = settings.stream_max_duration_s
    deadline = time.monotonic() + lifetime if lifetime else None
    connections.opened("sse")
    try:
        yield f"retry: {RETRY_MS}\n\n"
        while True:
            wait = keepalive
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return
            try:
                item = await asyncio.wait_for(subscriber.next(), wait)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if isinstance(item, Ended):
                ended = codec.dumps({"code": item.code, "reason": item.reason}).decode()
                yield f"event: end\ndata: {ended}\n\n"
                return
            yield _frame(item)
    finally:
        connections.closed("sse")
        fc.streams.leave(subscriber)
        with contextlib.suppress(Exception):
            subscriber.end(1000, "closed")
