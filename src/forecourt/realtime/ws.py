"""The WebSocket transport at ``/ws``.

A connection authenticates during its handshake (see ``auth``), then subscribes to channels
(``?channels=a,b`` or ``subscribe`` messages) and may resume (``?last_id=`` or a ``resume``
message). Two tasks serve it: one reads the client's messages, one sends what the hub
queues. A refused message gets an ``error`` message and changes nothing; close codes:

- 4001 missing or invalid credentials; 4003 forbidden (Origin, suspended tenant, revoked key);
- 4008 the client fell behind (its send queue filled);
- 4029 rate limited, too many connections for the key, or too many messages;
- 1009 a message over ``stream_max_client_message_bytes``; 1001 the server is stopping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from forecourt.errors import ForecourtError, InvalidInput
from forecourt.http.guard import GuardedRoute
from forecourt.observability import connections
from forecourt.realtime import auth, protocol
from forecourt.realtime.archive import EventArchive
from forecourt.streams import channels as ch
from forecourt.streams.messages import SUBSCRIBED, UNSUBSCRIBED, parse_id
from forecourt.streams.subscriber import TOO_MANY, Ended, Subscriber

if TYPE_CHECKING:
    from forecourt.core import Forecourt

log = logging.getLogger("forecourt.realtime")

PATH = "/ws"
MESSAGE_TOO_BIG = 1009
CLOSE_TIMEOUT_S = 10.0
BURST_S = 5.0  # the client-message bucket holds this many seconds' worth

# Built like every router; the guard applies to HTTP routes (a socket authenticates itself).
router = APIRouter(route_class=GuardedRoute)


class _Bucket:
    """Client messages per second, with a burst: a subscribe storm is cut off."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate * BURST_S)
        self.tokens = self.capacity
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def _error_fields(exc: ForecourtError) -> tuple[str, dict[str, object]]:
    code = str(exc.extra.get("code") or exc.slug)
    fields: dict[str, object] = {}
    if isinstance(exc, InvalidInput):
        fields["field"] = exc.field
    elif "field" in exc.extra:
        fields["field"] = exc.extra["field"]
    if "required_scope" in exc.extra:
        fields["required_scope"] = exc.extra["required_scope"]
    return code, fields


class Connection:
    """One WebSocket client: its subscriber and its two loops."""

    def __init__(
        self, websocket: WebSocket, fc: Forecourt, subscriber: Subscriber, scopes: frozenset[str]
    ) -> None:
        self.websocket = websocket
        self.fc = fc
        self.subscriber = subscriber
        self.scopes = scopes
        self.bucket = _Bucket(fc.settings.stream_client_messages_per_s)

    def refuse(self, exc: ForecourtError) -> None:
        code, fields = _error_fields(exc)
        self.subscriber.error(self.fc.streams.head, code, exc.detail, **fields)

    async def act(self, message: protocol.ClientMessage) -> None:
        """Apply one client message (all of it or none of it)."""
        hub, sub = self.fc.streams, self.subscriber
        if message.action == "ping":
            sub.send_control("pong", hub.head)
            return
        if message.action == "unsubscribe":
            remaining = sub.unsubscribe(message.channels)
            sub.send_control(
                UNSUBSCRIBED, hub.head, channels=message.channels, subscriptions=remaining
            )
            return
        channels = ch.parse_all(message.channels, self.scopes) if message.channels else []
        if message.action == "subscribe":
            held = sub.subscribe(channels)
            sub.send_control(SUBSCRIBED, hub.head, channels=ch.names(channels), subscriptions=held)
            return
        assert message.last_id is not None
        last_id = parse_id(message.last_id)
        if channels:
            before = dict(sub.channels)
            held = sub.subscribe(channels)
            try:
                await hub.resume(sub, last_id, EventArchive(self.fc))
            except ForecourtError:
                sub.channels = before
                raise
            sub.send_control(SUBSCRIBED, hub.head, channels=ch.names(channels), subscriptions=held)
        else:
            await hub.resume(sub, last_id, EventArchive(self.fc))

    async def receive_loop(self) -> None:
        settings = self.fc.settings
        limit = settings.stream_max_client_message_bytes
        while True:
            frame = await self.websocket.receive()
            if frame["type"] == "websocket.disconnect":
                return
            text = frame.get("text")
            if text is None:
                data = frame.get("bytes") or b""
                if len(data) > limit:
                    self.subscriber.end(MESSAGE_TOO_BIG, f"messages are at most {limit} bytes")
                    return
                try:
                    text = data.decode()
                except UnicodeDecodeError:
                    self.refuse(
                        InvalidInput(
                            "Messages are UTF-8 JSON text.",
                            field="message",
                            code="malformed_message",
                        )
                    )
                    continue
            if len(text) > limit or len(text.encode()) > limit:
                self.subscriber.end(MESSAGE_TOO_BIG, f"messages are at most {limit} bytes")
                return
            if not self.bucket.take():
                self.subscriber.end(
                    TOO_MANY,
                    f"too many messages (at most {settings.stream_client_messages_per_s:g}/s)",
                )
                return
            try:
                await self.act(protocol.parse(text, limit))
            except ForecourtError as exc:
                self.refuse(exc)

    async def send_loop(self) -> Ended:
        while True:
            item = await self.subscriber.next()
            if isinstance(item, Ended):
                return item
            await self.websocket.send_text(item)
            # Whatever else is queued goes out without waiting on the queue again.
            while (more := self.subscriber.next_nowait()) is not None:
                if isinstance(more, Ended):
                    return more
                await self.websocket.send_text(more)


def _query_message(websocket: WebSocket) -> list[protocol.ClientMessage]:
    """The subscribe and resume a URL asks for (``?channels=a,b&last_id=...``)."""
    params = websocket.query_params
    names = [n for n in (params.get("channels") or "").split(",") if n]
    plugin_ids = [p for p in (params.get("plugin_ids") or "").split(",") if p]
    if plugin_ids:
        names += ch.for_plugins(plugin_ids)
    last_id = params.get("last_id")
    if last_id is not None:
        return [protocol.ClientMessage("resume", names, last_id)]
    return [protocol.ClientMessage("subscribe", names)] if names else []


@router.websocket(PATH)
async def stream_socket(websocket: WebSocket) -> None:
    """Live messages of the caller's tenant on the channels it joins (docs/streams.md)."""
    fc: Forecourt = websocket.app.state.forecourt
    settings = fc.settings
    outcome = await auth.authenticate(websocket, fc)
    await websocket.accept(subprotocol=auth.subprotocol(websocket))
    if isinstance(outcome, Ended):
        await _close(websocket, outcome)
        return
    principal = outcome.principal
    subscriber = fc.streams.subscriber(principal, revalidate=outcome.revalidate)
    if not await fc.streams.admit(subscriber):
        assert subscriber.ended is not None
        await _close(websocket, subscriber.ended)
        return
    connection = Connection(websocket, fc, subscriber, principal.scopes)
    ended: Ended | None = None
    tasks: list[asyncio.Task[Any]] = []
    connections.opened("websocket")
    try:
        try:
            for message in _query_message(websocket):
                await connection.act(message)
        except ForecourtError as exc:
            connection.refuse(exc)
        sender = asyncio.create_task(connection.send_loop())
        receiver = asyncio.create_task(connection.receive_loop())
        watcher = asyncio.create_task(subscriber.ended_event.wait())
        tasks = [sender, receiver, watcher]
        lifetime = settings.stream_max_duration_s or None
        done, _ = await asyncio.wait(tasks, timeout=lifetime, return_when=asyncio.FIRST_COMPLETED)
        if subscriber.ended is not None:
            ended = subscriber.ended
        elif not done:
            ended = Ended(1000, "the connection reached its maximum duration; resume")
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        connections.closed("websocket")
        fc.streams.leave(subscriber)
        if subscriber.ended is None:
            subscriber.end(1000, "closed")
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
    if ended is not None:
        await _close(websocket, ended)


async def _close(websocket: WebSocket, ended: Ended) -> None:
    if websocket.application_state == WebSocketState.DISCONNECTED:
        return
    with contextlib.suppress(Exception):
        await asyncio.wait_for(websocket.close(ended.code, ended.reason), CLOSE_TIMEOUT_S)
