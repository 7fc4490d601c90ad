"""Group commit of published events: requests that arrive while one transaction is being
written go into the next one together.

Each ``POST /api/v1/events`` validates its event(s) on its own, then hands the drafts to the
``EventWriter`` and waits for the commit. The writer stores everything that queued up in one
transaction (two inserts for all events and deliveries, one commit), so under load one commit
carries many requests and an idle server commits each at once. A request's answer is sent
only after its transaction committed: nothing acknowledged can be lost.

A request whose Idempotency-Key repeats with a different body gets its Conflict and changes
nothing, without failing the others. When the transaction fails (a unique constraint: a
concurrent duplicate of another node, or two requests with the same key in one batch; or a
value of one request that the database refuses), every request of the batch is written again
in a transaction of its own, so each gets the answer it would have had alone: a bad request
fails alone and the others are stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forecourt.db.base import utcnow
from forecourt.errors import Conflict, ForecourtError
from forecourt.events import outbox
from forecourt.events.envelope import StoredEvent
from forecourt.events.outbox import Draft, OnPublished, Plan
from forecourt.observability.instruments import events_published
from forecourt.observability.operations import PUBLISH_COMMIT, timed
from forecourt.webhooks.models import DELIVERING
from forecourt.webhooks.queue import Claim

LOG = logging.getLogger("forecourt.events")

BATCH_MAX_EVENTS = 1_000  # events in one transaction

Results = list[tuple[StoredEvent, bool]]


class Handoff(Protocol):
    """A delivery worker of this process that takes new deliveries over at once: they are
    inserted already leased to it, and it gets them in memory after the commit, without
    waking up, claiming and reading them back. What it has no room for is queued as usual."""

    @property
    def worker_id(self) -> str: ...
    @property
    def lease(self) -> timedelta: ...
    def reserve(self, wanted: int) -> int: ...
    def release(self, count: int) -> None: ...
    def adopt(self, claims: Sequence[Claim]) -> None: ...


@dataclass(slots=True)
class _Request:
    drafts: Sequence[Draft]
    future: asyncio.Future[Results] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class EventWriter:
    """Writes drafts of many requests per transaction; ``on_published(deliveries)`` runs
    after each commit that stored events."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        gate: AbstractAsyncContextManager[None],
        *,
        idempotency_window_s: int,
        on_published: OnPublished | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._gate = gate
        self._window_s = idempotency_window_s
        self._on_published = on_published
        self._waiting: deque[_Request] = deque()
        self._task: asyncio.Task[None] | None = None
        self.handoff: Handoff | None = None
        # Called with the events each commit stored (the live streams' producer).
        self.on_stored: Callable[[list[StoredEvent]], None] | None = None

    async def write(self, drafts: Sequence[Draft]) -> Results:
        """Store ``drafts`` (of one tenant) and return ``(event, created)`` for each, once
        committed. The write goes ahead even if the caller stops waiting."""
        request = _Request(drafts)
        self._waiting.append(request)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="event-writer")
        return await asyncio.shield(request.future)

    async def _drain(self) -> None:
        while self._waiting:
            batch: list[_Request] = []
            size = 0
            while self._waiting and (
                not batch or size + len(self._waiting[0].drafts) <= BATCH_MAX_EVENTS
            ):
                request = self._waiting.popleft()
                batch.append(request)
                size += len(request.drafts)
            try:
                await self._write_batch(batch)
            except Exception as exc:  # the database is down, ...: each request hears of it
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(exc)

    async def _write_batch(self, batch: list[_Request]) -> None:
        planned: list[tuple[_Request, Plan]] = []
        refused: list[tuple[_Request, ForecourtError]] = []
        taken: list[Claim] = []
        try:
            async with (
                self._gate,
                timed(PUBLISH_COMMIT),
                self._sessionmaker() as session,
                session.begin(),
            ):
                endpoints: outbox.EndpointCache = {}
                for request in batch:
                    try:
                        plan = await outbox.plan(session, request.drafts, self._window_s, endpoints)
                    except ForecourtError as exc:  # nothing of this request was changed
                        refused.append((request, exc))
                        continue
                    planned.append((request, plan))
                plans = [plan for _, plan in planned]
                taken = self._lease(plans)
                await outbox.write(session, plans)
        except BaseException as exc:
            if taken and self.handoff is not None:
                self.handoff.release(len(taken))
            if not isinstance(exc, Exception) or len(batch) == 1:
                raise
            # A unique constraint, or a value one request holds that the database refuses:
            # each request alone, so a bad one fails by itself and the others are stored.
            for request in batch:
                await self._write_alone(request)
            return
        if taken and self.handoff is not None:
            try:
                self.handoff.adopt(taken)
            except Exception:  # committed: the requests are answered; the leases run out
                LOG.exception("the local worker could not take %d deliveries", len(taken))
        for request, error in refused:
            request.future.set_exception(error)
        for request, plan in planned:
            request.future.set_result(plan.results)
        self._stored([event for _, plan in planned for event, created in plan.results if created])
        events_published(sum(len(plan.events) for _, plan in planned))
        await self._published(
            sum(len(plan.deliveries) for _, plan in planned if plan.events) - len(taken)
        )

    def _lease(self, plans: Sequence[Plan]) -> list[Claim]:
        """Mark as many of the new deliveries as the local worker has room for as leased to
        it (before they are inserted); their claims, for ``adopt`` after the commit."""
        handoff = self.handoff
        if handoff is None:
            return []
        rows = [
            (row, target)
            for plan in plans
            for row, target in zip(plan.deliveries, plan.targets, strict=True)
            if target[1]
        ]
        count = handoff.reserve(len(rows)) if rows else 0
        if not count:
            return []
        until = utcnow() + handoff.lease
        claims = []
        for row, (endpoint, body) in rows[:count]:
            row.update(status=DELIVERING, lease_owner=handoff.worker_id, lease_expires_at=until)
            claims.append(Claim(row["id"], row["tenant_id"], 0, endpoint, body))
        return claims

    async def _write_alone(self, request: _Request) -> None:
        """One request in its own transaction; a lost race with a duplicate is retried once."""
        for attempt in (1, 2):
            try:
                async with self._gate, self._sessionmaker() as session, session.begin():
                    plan = await outbox.plan(session, request.drafts, self._window_s)
                    await outbox.write(session, [plan])
            except IntegrityError:
                if attempt == 2:
                    request.future.set_exception(
                        Conflict("A concurrent request published the same event.")
                    )
                    return
                continue
            except Exception as exc:
                request.future.set_exception(exc)
                return
            request.future.set_result(plan.results)
            self._stored([event for event, created in plan.results if created])
            events_published(len(plan.events))
            if plan.events:
                await self._published(len(plan.deliveries))
            return

    def _stored(self, events: list[StoredEvent]) -> None:
        if self.on_stored is None or not events:
            return
        try:
            self.on_stored(events)
        except Exception:
            LOG.exception("after-commit stream hook failed")

    async def _published(self, deliveries: int) -> None:
        if self._on_published is None:
            return
        try:
            result = self._on_published(deliveries)
            if asyncio.iscoroutine(result):
                await result
        except Exception:
            LOG.exception("after-commit event hook failed")
