"""Events to hook and alert instances: a durable queue, and the router that works it.

:func:`enqueue` runs inside ``events.outbox.store``, in the transaction that stores the
events: for each new event, one ``plugin_event_queue`` row per enabled hook or alert instance
of the tenant whose plugin subscribes to the type (``permissions.events``) and whose own filter
(``event_types``; empty: everything the plugin subscribes to) takes it, if that plugin is
usable for the instance's tenant (available to it and enabled by it: ``policy.usable_clause``,
checked again when the row is run). So an accepted event never misses a plugin, and
publishing never waits for one.

The :class:`EventRouter` (on nodes that run workers) claims due rows under a lease, as the
delivery workers do (PostgreSQL: ``FOR UPDATE SKIP LOCKED``), runs each instance on
``{"event": <envelope>}`` and deletes the row. A run that timed out or whose worker died is
tried again, after 1, 4, 16... times ``plugin_event_retry_base_s``, until
``plugin_event_max_attempts``; every attempt is an execution record. Attempts are counted when
a row is claimed, so a run whose node dies (its lease then expires and another node takes the
row over) counts too: a row claimed past the limit is not run again but recorded as an
``AttemptsExhausted`` error and dropped. Runs are independent
tasks, so a slow or failing plugin holds up neither publishing nor other plugins.

Plugins publish events too (follow-ups, ``plugin.failed``...). Each carries the instance as
its ``source`` and is never routed back to that instance, and the events of a run that was
itself :data:`MAX_DEPTH` hops away from an outside event are not routed at all, so plugins
cannot trigger each other forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from forecourt.db.base import utcnow
from forecourt.ids import new_id
from forecourt.plugins import policy
from forecourt.plugins.models import EVENT_PLUGIN_TYPES, Plugin, PluginInstance, PluginQueueItem
from forecourt.webhooks.fanout import type_matches

if TYPE_CHECKING:
    from forecourt.plugins.runner import PluginRunner

log = logging.getLogger("forecourt.plugins")

DEPTH_KEY = "forecourt.plugins.depth"  # session.info: plugin runs behind the events stored
WAKE_KEY = "forecourt.plugins.wake"  # session.info: called after a commit that queued rows
MAX_DEPTH = 2  # hops from an outside event: at most three plugin runs in a chain
LEASE_MARGIN_S = 60.0  # a lease outlasts the longest run by this much
RETRY_FACTOR = 4
TRANSIENT = frozenset({"timeout", "killed"})

_QUEUE = cast(Table, PluginQueueItem.__table__)


def source(tenant_id: str, instance_id: str) -> str:
    """The CloudEvents ``source`` of the events an instance publishes."""
    return f"/forecourt/{tenant_id}/plugin-instances/{instance_id}"


async def enqueue(session: AsyncSession, events: Sequence[Mapping[str, Any]]) -> int:
    """Queue new ``events`` (``events`` rows, of any tenants) for the hook and alert
    instances that take them, in one insert; how many rows were queued."""
    depth = int(session.info.get(DEPTH_KEY, 0))
    if not events or depth > MAX_DEPTH:
        return 0
    tenants = {event["tenant_id"] for event in events}
    instances = (
        await session.execute(
            select(
                PluginInstance.id,
                PluginInstance.tenant_id,
                PluginInstance.event_types,
                Plugin.event_types,
            )
            .join(Plugin, Plugin.id == PluginInstance.plugin_version_id)
            .where(
                PluginInstance.tenant_id.in_(tenants),
                PluginInstance.plugin_type.in_(EVENT_PLUGIN_TYPES),
                PluginInstance.enabled.is_(True),
                policy.usable_clause(PluginInstance.tenant_id),
            )
        )
    ).all()
    if not instances:
        return 0
    now = utcnow()
    rows = [
        {
            "id": new_id("pq"),
            "tenant_id": tenant_id,
            "instance_id": instance_id,
            "event_id": event["id"],
            "event_type": event["type"],
            "depth": depth,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for event in events
        for instance_id, tenant_id, wanted, subscribed in instances
        if event["tenant_id"] == tenant_id
        and event["source"] != source(tenant_id, instance_id)
        and bool(subscribed)
        and type_matches(subscribed, event["type"])
        and type_matches(wanted, event["type"])
    ]
    if not rows:
        return 0
    await session.execute(insert(_QUEUE), rows)
    wake = session.info.get(WAKE_KEY)
    if wake is not None:
        from forecourt.events.outbox import after_commit  # outbox imports this module

        after_commit(session, len(rows), wake)
    return len(rows)


@dataclass(frozen=True, slots=True)
class Claim:
    id: str
    instance_id: str
    event_id: str
    attempts: int  # including this one
    depth: int


class EventRouter:
    """Claims queued events and runs their instances (see the module docstring)."""

    def __init__(self, runner: PluginRunner, worker_id: str) -> None:
        self.runner = runner
        self.sessionmaker = runner.sessionmaker
        self.settings = runner.settings
        self.worker_id = worker_id
        self.lease = timedelta(seconds=self.settings.plugin_max_timeout_s + LEASE_MARGIN_S)
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False

    def wake(self, _queued: int = 0) -> None:
        """Look for queued events now."""
        self._wake.set()

    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name="forecourt-plugin-router")

    async def stop(self, grace_s: float) -> None:
        """Stop claiming; runs in flight finish within ``grace_s``, the rest are handed back."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._running:
            await asyncio.wait(self._running, timeout=grace_s)
        for task in list(self._running):
            task.cancel()
        for task in list(self._running):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        async with self.sessionmaker() as session, session.begin():
            await session.execute(
                update(_QUEUE)
                .where(_QUEUE.c.lease_owner == self.worker_id)
                .values(lease_owner=None, lease_expires_at=None)
            )

    async def _loop(self) -> None:
        interval = self.settings.plugin_poll_interval_s
        while not self._stopping:
            free = self.settings.plugin_event_concurrency - len(self._running)
            claims: list[Claim] = []
            if free > 0:
                try:
                    claims = await self.claim(free)
                except Exception:
                    log.exception("claiming queued plugin events failed")
            for claim in claims:
                task = asyncio.create_task(self._handle(claim))
                self._running.add(task)
                task.add_done_callback(self._done)
            if not claims:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), interval)
                self._wake.clear()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("a plugin event run failed", exc_info=task.exception())

    async def claim(self, limit: int) -> list[Claim]:
        """The lease of up to ``limit`` due rows: waiting ones, then abandoned ones."""
        now = utcnow()
        q = PluginQueueItem
        waiting = (q.lease_owner.is_(None), q.next_attempt_at <= now)
        claims = await self._take(waiting, q.next_attempt_at, now, limit)
        if len(claims) < limit:
            expired = (q.lease_owner.is_not(None), q.lease_expires_at < now)
            claims += await self._take(expired, q.lease_expires_at, now, limit - len(claims))
        return claims

    async def _take(
        self, where: tuple[Any, ...], order: Any, now: datetime, limit: int
    ) -> list[Claim]:
        q = PluginQueueItem
        picked = (
            select(q.id)
            .where(*where)
            .order_by(order)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .cte("picked")
        )
        statement = (
            update(q)
            .where(q.id.in_(select(picked.c.id)))
            .values(
                lease_owner=self.worker_id,
                lease_expires_at=now + self.lease,
                attempts=q.attempts + 1,
            )
            .returning(q.id, q.instance_id, q.event_id, q.attempts, q.depth)
            .execution_options(synchronize_session=False)
        )
        async with self.sessionmaker() as session, session.begin():
            rows = (await session.execute(statement)).all()
        return [Claim(*row) for row in rows]

    async def _handle(self, claim: Claim) -> None:
        """Run a claim; whatever fails on the way, the row is retried or finished, not left
        leased until its lease expires."""
        try:
            await self._work(claim)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("handling queued plugin event %s failed", claim.id)
            await self._after_failure(claim, f"{type(exc).__name__}: {exc}")

    async def _after_failure(self, claim: Claim, error: str) -> None:
        if claim.attempts < self.settings.plugin_event_max_attempts:
            await self._retry(claim, self._delay(claim), error)
        else:
            await self._finish(claim)

    def _delay(self, claim: Claim) -> float:
        return float(self.settings.plugin_event_retry_base_s * RETRY_FACTOR ** (claim.attempts - 1))

    async def _work(self, claim: Claim) -> None:
        from forecourt.events.envelope import envelope
        from forecourt.events.models import Event

        async with self.sessionmaker() as session:
            found = (
                await session.execute(
                    select(PluginInstance, Plugin)
                    .join(Plugin, Plugin.id == PluginInstance.plugin_version_id)
                    .where(
                        PluginInstance.id == claim.instance_id,
                        PluginInstance.enabled.is_(True),
                        policy.usable_clause(PluginInstance.tenant_id),
                    )
                )
            ).first()
            event = await session.get(Event, claim.event_id)
            body = None if event is None else envelope(event)
        if found is None or event is None or body is None:
            # Deleted, disabled, or no longer usable for its tenant meanwhile: nothing to do.
            await self._finish(claim)
            return
        instance, plugin = found
        limit = self.settings.plugin_event_max_attempts
        if claim.attempts > limit:
            # The attempts before this claim were taken and never finished: their node
            # stopped or their lease ran out mid-run. Counted when claimed, they end here:
            # the row first, so that a node taking it over meanwhile records nothing twice.
            if not await self._finish(claim):
                return
            await self.runner.record_unrun(
                instance,
                plugin,
                trigger="event",
                error_class="AttemptsExhausted",
                message=(
                    f"not run again: {claim.attempts - 1} attempts were started and did not "
                    f"finish (their node stopped or their lease expired); the limit is {limit}"
                ),
                event_id=event.id,
                attempt=claim.attempts,
            )
            return
        run = await self.runner.run(
            instance,
            plugin,
            {"event": body},
            trigger="event",
            event_id=event.id,
            attempt=claim.attempts,
            depth=claim.depth,
        )
        status = run.execution.status
        if status in TRANSIENT and claim.attempts < limit:
            error = f"{status}: {run.execution.error_message or ''}"
            await self._retry(claim, self._delay(claim), error)
        else:
            await self._finish(claim)

    async def _retry(self, claim: Claim, delay_s: float, error: str) -> None:
        async with self.sessionmaker() as session, session.begin():
            await session.execute(
                update(_QUEUE)
                .where(
                    _QUEUE.c.id == claim.id,
                    _QUEUE.c.lease_owner == self.worker_id,
                    _QUEUE.c.attempts == claim.attempts,  # not taken over since
                )
                .values(
                    lease_owner=None,
                    lease_expires_at=None,
                    next_attempt_at=utcnow() + timedelta(seconds=delay_s),
                    last_error=error[:500],
                )
            )

    async def _finish(self, claim: Claim) -> bool:
        """Delete the claim's row; False if this node no longer holds it (taken over)."""
        async with self.sessionmaker() as session, session.begin():
            result = await session.execute(
                delete(_QUEUE).where(
                    _QUEUE.c.id == claim.id,
                    _QUEUE.c.lease_owner == self.worker_id,
                    _QUEUE.c.attempts == claim.attempts,
                )
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]
