"""Both ends of a webhook for tests: a receiver, and the endpoint and events aimed at it.

``Receiver`` is a real aiohttp server on 127.0.0.1 that records every request. Each path
answers as configured with ``reply`` (default: 200 "ok"): any status, headers and body, after
a delay, or by closing the connection without an answer. It notes, per ``webhook-id``, how
many requests were in flight at once, so a test can assert that no delivery was ever being
sent twice concurrently.

``add_endpoint`` and ``publish`` write an endpoint (secret ``SECRET``) and queued deliveries
straight through the models, as the endpoint and event services will.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from sqlalchemy import select

from conftest import free_port
from forecourt.core import Forecourt
from forecourt.db.base import utcnow
from forecourt.events.models import Event
from forecourt.ids import new_id
from forecourt.tenants.models import DEFAULT_TENANT_SLUG, Tenant
from forecourt.webhooks import fanout
from forecourt.webhooks.models import Endpoint

WAIT_POLL_S = 0.02
SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
# Three attempts back to back: retries without waiting for the real schedule.
QUICK_RETRIES = {"kind": "linear", "max_attempts": 3, "interval_s": 0}


@dataclass(frozen=True)
class Reply:
    """How the receiver answers one request."""

    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    close: bool = False  # drop the connection without answering (after delay_s)


@dataclass(frozen=True)
class Received:
    """One request as the receiver got it."""

    path: str
    webhook_id: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived


ReplyFor = Reply | Callable[[Received, int], Reply]
"""A fixed reply, or one chosen from the request and how many times its id was seen (1-based)."""


class Receiver:
    """Start with ``await receiver.start()`` (or ``async with``), stop with ``stop()``."""

    def __init__(self, default: ReplyFor | None = None) -> None:
        self.port = free_port()
        self.received: list[Received] = []
        self.completed: list[Received] = []  # requests it finished answering
        self.overlaps: list[str] = []  # webhook-ids seen while a copy was still in flight
        self.max_in_flight = 0
        self._in_flight: Counter[str] = Counter()
        self._seen: Counter[str] = Counter()
        self._routes: dict[str, ReplyFor] = {}
        self._default: ReplyFor = default or Reply()
        self._runner: web.AppRunner | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def reply(self, path: str, how: ReplyFor) -> None:
        """Answer requests to ``path`` with ``how``."""
        self._routes[path] = how

    def ids(self, path: str | None = None) -> list[str]:
        """The webhook-id of every request received (to ``path``), in order of arrival."""
        return [r.webhook_id for r in self.received if path is None or r.path == path]

    def in_flight(self) -> int:
        return sum(self._in_flight.values())

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Receiver:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_for(
        self, condition: Callable[[], bool], timeout_s: float = 5.0, what: str = "condition"
    ) -> None:
        """Poll ``condition`` until it holds; fail after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
            await asyncio.sleep(WAIT_POLL_S)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        webhook_id = request.headers.get("webhook-id", "")
        received = Received(
            path=request.path,
            webhook_id=webhook_id,
            headers=dict(request.headers),
            body=body,
            at=time.monotonic(),
        )
        self.received.append(received)
        self._seen[webhook_id] += 1
        if self._in_flight[webhook_id]:
            self.overlaps.append(webhook_id)
        self._in_flight[webhook_id] += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight())
        try:
            how = self._routes.get(request.path, self._default)
            reply = how(received, self._seen[webhook_id]) if callable(how) else how
            if reply.delay_s:
                await asyncio.sleep(reply.delay_s)
            if reply.close:
                assert request.transport is not None
                request.transport.close()
                raise web.HTTPInternalServerError()  # never written: the socket is gone
            self.completed.append(received)
            return web.Response(status=reply.status, body=reply.body, headers=reply.headers)
        finally:
            self._in_flight[webhook_id] -= 1


# -- the sending side ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def nodes(
    settings_factory: Any, **defaults: Any
) -> AsyncIterator[Callable[..., Awaitable[Forecourt]]]:
    """A factory of Forecourt nodes (no background workers) on the test's database, with
    ``defaults`` under each call's own settings; every node is stopped on exit."""
    started: list[Forecourt] = []

    async def make(**overrides: Any) -> Forecourt:
        fc = Forecourt(settings_factory(**{**defaults, **overrides}))
        await fc.start(run_workers=False)
        started.append(fc)
        return fc

    try:
        yield make
    finally:
        for fc in reversed(started):
            await fc.stop()


async def tenant_id(fc: Forecourt) -> str:
    async with fc.sessionmaker() as session:
        found = await session.scalar(select(Tenant.id).where(Tenant.slug == DEFAULT_TENANT_SLUG))
    assert found is not None
    return found


async def add_endpoint(fc: Forecourt, url: str, **fields: Any) -> Endpoint:
    """An endpoint row written directly (default tenant unless ``tenant_id`` is given)."""
    box = fc.webhook_config.box
    now = utcnow()
    values: dict[str, Any] = {
        "id": new_id("ep"),
        "tenant_id": fields.pop("tenant_id", None) or await tenant_id(fc),
        "url": url,
        "description": "",
        "event_types": [],
        "headers": {},
        "timeout_s": 2.0,
        "retry_policy": QUICK_RETRIES,
        "rate_limit_per_s": None,
        "metadata_": {},
        "secret_encrypted": box.encrypt(SECRET),
        "previous_secret_encrypted": None,
        "previous_secret_expires_at": None,
        "enabled": True,
        "consecutive_failures": 0,
        "created_at": now,
        "updated_at": now,
    }
    values.update(fields)
    endpoint = Endpoint(**values)
    async with fc.sessionmaker() as session, session.begin():
        session.add(endpoint)
    return endpoint


async def publish(
    fc: Forecourt, endpoint: Endpoint, count: int = 1, event_type: str = "dashboard.created"
) -> list[str]:
    """``count`` events, each queued for ``endpoint`` as fanout does; the delivery ids."""
    ids: list[str] = []
    async with fc.sessionmaker() as session, session.begin():
        for index in range(count):
            event_id = new_id("evt")
            session.add(
                Event(
                    id=event_id,
                    tenant_id=endpoint.tenant_id,
                    ce_id=event_id,
                    source="/tests",
                    type=event_type,
                    subject="board/7",
                    time=utcnow(),
                    data={"index": index, "name": "Q3 revenue"},
                    severity="info",
                    size_bytes=0,
                )
            )
            await session.flush()
            queued = fanout.enqueue(session, endpoint.tenant_id, event_id, event_type, [endpoint])
            ids.extend(d.id for d in queued)
    return ids
