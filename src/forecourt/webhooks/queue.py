"""The delivery queue in the database: claims under a lease, hand-backs, lease extensions, and
attempts recorded in batches.

A delivery is *due* when it is ``pending`` or ``retrying`` with ``next_attempt_at`` in the
past, or ``delivering`` with an expired lease (its worker died). ``claim`` marks due
deliveries of enabled endpoints ``delivering`` under this worker's lease in one short
statement (PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so workers never wait on each other or
claim the same row; SQLite: one writer at a time does the same).

A claim never strands what it took: a delivery whose body cannot be built (its event cannot
be encoded as JSON) or whose endpoint cannot be read is ``failed`` with the reason in
``last_error``, alone; and when reading the claimed rows fails (the database, a cancellation),
every row of the claim is given back before the error propagates.

``record`` writes many finished attempts in one transaction: the attempt rows (one
multi-row insert), each delivery's new state (updated only where this worker still holds the
lease; the attempt row is kept either way), and each endpoint's run of failures. A batch is
all-or-nothing; when one of its rows cannot be written (its delivery was deleted meanwhile)
the batch is written again one attempt per transaction, so the others are not held back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, func, literal, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forecourt import codec
from forecourt.db import bulk
from forecourt.db.base import utcnow
from forecourt.db.gate import WriteGate
from forecourt.errors import Conflict, NotFound
from forecourt.events.envelope import ENVELOPE_COLUMNS, envelope
from forecourt.events.models import Event
from forecourt.observability.operations import CLAIM, timed
from forecourt.webhooks import targets
from forecourt.webhooks.latency import delivery_ended
from forecourt.webhooks.models import (
    DELIVERING,
    FAILED,
    LEASED_SQL,
    PENDING,
    RETRYING,
    WAITING_SQL,
    Attempt,
    Delivery,
    Endpoint,
)
from forecourt.webhooks.schedule import Outcome
from forecourt.webhooks.targets import Target

LOG = logging.getLogger("forecourt.webhooks")

DISABLED_REASON_CHARS = 200
LAST_ERROR_CHARS = 500  # the column's length
GONE_REASON = "The receiver answered 410 Gone."

EndpointDisabledHook = Callable[[AsyncSession, Endpoint], Awaitable[None]]
"""Called inside the transaction that disables an endpoint (to insert ``endpoint.disabled``)."""

_DELIVERIES = cast(Table, Delivery.__table__)
_ATTEMPTS = cast(Table, Attempt.__table__)
_ENDPOINTS = cast(Table, Endpoint.__table__)
_EVENTS = cast(Table, Event.__table__)

# Each delivery's new state, in one statement for a batch, where the lease is still held.
_STATE_COLUMNS = (
    "status",
    "next_attempt_at",
    "last_status_code",
    "last_error",
    "updated_at",
    "finished_at",
)
_STATE_FIXED = {"attempts": "attempts + 1", "lease_owner": "NULL", "lease_expires_at": "NULL"}


@dataclass(slots=True)
class Claim:
    """A delivery this worker holds the lease of, with what it needs to send it."""

    id: str
    tenant_id: str
    attempts: int  # attempts made before this claim
    endpoint: Target
    body: bytes  # the event's envelope as JSON, as it is posted
    once: bool = False  # a single attempt on request: never retried in the background


@dataclass(slots=True)
class Finished:
    """A made attempt waiting to be recorded: its row, and the delivery's next state."""

    claim: Claim
    attempt: dict[str, Any]  # the ``webhook_attempts`` row
    outcome: Outcome
    status: str
    next_attempt_at: datetime | None
    last_error: str | None
    recorded_at: datetime = field(default_factory=utcnow)

    def state_row(self) -> tuple[Any, ...]:
        """The delivery's id and new values of ``_STATE_COLUMNS``."""
        return (
            self.claim.id,
            self.status,
            self.next_attempt_at,
            self.attempt["status_code"],
            self.last_error,
            self.recorded_at,
            None if self.status == RETRYING else self.recorded_at,
        )


class DeliveryQueue:
    """The queue as one worker (``worker_id``) sees it."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        worker_id: str,
        *,
        lease: timedelta,
        disable_after: timedelta,
        disable_min_failures: int,
        gate: AbstractAsyncContextManager[None] | None = None,
        on_endpoint_disabled: EndpointDisabledHook | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.gate = gate if gate is not None else WriteGate(serialize=False)
        self.worker_id = worker_id
        self.lease = lease
        self.disable_after = disable_after
        self.disable_min_failures = disable_min_failures
        self.on_endpoint_disabled = on_endpoint_disabled

    # -- claiming ----------------------------------------------------------------------------

    async def claim(self, limit: int) -> list[Claim]:
        """Take the lease of up to ``limit`` due deliveries of enabled endpoints: waiting ones
        first (oldest due first), then those whose worker's lease ran out."""
        now = utcnow()
        with timed(CLAIM):
            column = Delivery.next_attempt_at
            waiting = self._due(WAITING_SQL, column, column <= now, limit)
            claims = await self._take(waiting, now)
            if len(claims) < limit:
                column = Delivery.lease_expires_at
                expired = self._due(LEASED_SQL, column, column < now, limit - len(claims))
                claims += await self._take(expired, now)
        return claims

    @staticmethod
    def _due(state_sql: str, order: Any, due: Any, limit: int) -> Any:
        # The order is that of a partial index, so the statement reads ``limit`` rows of it
        # instead of sorting the whole backlog. A CTE that locks is evaluated exactly once on
        # PostgreSQL, so the LIMIT holds.
        picked = (
            select(Delivery.id)
            .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
            .where(text(state_sql), due, Endpoint.enabled.is_(True))
            .order_by(order)
            .limit(limit)
            .with_for_update(skip_locked=True, of=Delivery)
            .cte("picked")
        )
        return _DELIVERIES.c.id == picked.c.id  # UPDATE ... FROM picked: by primary key

    async def claim_one(self, delivery_id: str) -> Claim:
        """The lease of one delivery, due or not; NotFound, or Conflict while another worker
        holds it."""
        now = utcnow()
        free = or_(
            Delivery.status != DELIVERING,
            Delivery.lease_expires_at.is_(None),
            Delivery.lease_expires_at < now,
        )
        broken: dict[str, str] = {}
        claims = await self._take(and_(Delivery.id == delivery_id, free), now, broken)
        if claims:
            return claims[0]
        if delivery_id in broken:
            raise Conflict(f"The delivery cannot be sent: {broken[delivery_id]}")
        async with self.sessionmaker() as session:
            exists = await session.scalar(select(Delivery.id).where(Delivery.id == delivery_id))
        if exists is None:
            raise NotFound(f"No delivery {delivery_id!r}.")
        raise Conflict("The delivery is being attempted right now.")

    async def _take(
        self, where: Any, now: datetime, broken: dict[str, str] | None = None
    ) -> list[Claim]:
        """Lease the deliveries ``where`` selects and read what sending them needs. Those
        that cannot be sent are failed (their reasons, by id, in ``broken``); on any error
        every leased row is given back."""
        d = _DELIVERIES.c
        statement = (
            update(_DELIVERIES)
            .where(where)
            .values(
                status=DELIVERING,
                lease_owner=self.worker_id,
                lease_expires_at=now + self.lease,
                updated_at=now,
            )
            .returning(d.id, d.tenant_id, d.endpoint_id, d.event_id, d.attempts)
        )
        async with self.sessionmaker() as session:
            async with self.gate, session.begin():
                conn = await session.connection()
                rows = (await conn.execute(statement)).all()
            if not rows:
                return []
            try:
                conn = await session.connection()
                endpoints, bad_endpoints = await targets.by_id_checked(
                    conn, {row.endpoint_id for row in rows}
                )
                bodies, bad_bodies = await _bodies(session, {row.event_id for row in rows})
            except BaseException:
                await asyncio.shield(self.give_back([_Held(row.id, row.attempts) for row in rows]))
                raise
        claims: list[Claim] = []
        failed: dict[str, str] = {}
        for row in rows:
            reason = bad_endpoints.get(row.endpoint_id) or bad_bodies.get(row.event_id)
            if reason is not None:
                failed[row.id] = reason
                continue
            endpoint = endpoints.get(row.endpoint_id)
            body = bodies.get(row.event_id)
            if endpoint is None or body is None:
                continue  # deleted meanwhile (the delivery goes with them)
            claims.append(Claim(row.id, row.tenant_id, row.attempts, endpoint, body))
        if failed:
            try:
                await self._fail(failed, now)
            except BaseException:
                await asyncio.shield(self.give_back(claims))
                raise
            if broken is not None:
                broken.update(failed)
        return claims

    async def _fail(self, reasons: dict[str, str], now: datetime) -> None:
        """End deliveries that cannot be sent (``failed``, the reason as ``last_error``)."""
        LOG.error(
            "%d deliveries cannot be sent and were failed: %s",
            len(reasons),
            "; ".join(f"{i}: {r}" for i, r in sorted(reasons.items())[:10]),
        )
        async with self.gate, self.sessionmaker() as session, session.begin():
            for delivery_id, reason in reasons.items():
                await session.execute(
                    update(_DELIVERIES)
                    .where(
                        _DELIVERIES.c.id == delivery_id,
                        _DELIVERIES.c.lease_owner == self.worker_id,
                    )
                    .values(
                        status=FAILED,
                        last_error=reason[:LAST_ERROR_CHARS],
                        lease_owner=None,
                        lease_expires_at=None,
                        updated_at=now,
                        finished_at=now,
                    )
                )
        for delivery_id in reasons:
            delivery_ended(delivery_id, FAILED)

    # -- handing back, leases ----------------------------------------------------------------

    async def give_back(
        self, claims: Sequence[Claim | _Held], *, next_attempt_at: datetime | None = None
    ) -> None:
        """``requeue`` that never raises: if it fails, the error is logged and the leases
        run out instead."""
        if not claims:
            return
        try:
            await self.requeue(claims, next_attempt_at=next_attempt_at)
        except Exception:
            LOG.exception(
                "could not give back %d deliveries; their leases will run out", len(claims)
            )

    async def requeue(
        self, claims: Sequence[Claim | _Held], *, next_attempt_at: datetime | None = None
    ) -> None:
        """Give deliveries back, due at ``next_attempt_at`` (default: their old time)."""
        now = utcnow()
        async with self.gate, self.sessionmaker() as session, session.begin():
            for fresh, chunk in _split_by_attempts(claims):
                values: dict[str, Any] = {
                    "status": PENDING if fresh else RETRYING,
                    "lease_owner": None,
                    "lease_expires_at": None,
                    "updated_at": now,
                }
                if next_attempt_at is not None:
                    values["next_attempt_at"] = next_attempt_at
                await session.execute(
                    update(_DELIVERIES)
                    .where(
                        _DELIVERIES.c.id.in_(chunk),
                        _DELIVERIES.c.lease_owner == self.worker_id,
                    )
                    .values(**values)
                )

    async def extend(self, ids: Sequence[str]) -> int:
        """Push the lease of ``ids`` (those this worker still holds) one lease ahead."""
        until = utcnow() + self.lease
        extended = 0
        async with self.gate, self.sessionmaker() as session, session.begin():
            for chunk in bulk.chunks(ids):
                result = await session.execute(
                    update(_DELIVERIES)
                    .where(
                        _DELIVERIES.c.id.in_(chunk),
                        _DELIVERIES.c.lease_owner == self.worker_id,
                    )
                    .values(lease_expires_at=until)
                )
                extended += bulk.rowcount(result)
        return extended

    # -- recording ---------------------------------------------------------------------------

    async def record(self, batch: Sequence[Finished]) -> None:
        """Write ``batch`` in one transaction, or (when a row of it cannot be written) one
        attempt per transaction. Database errors other than integrity ones propagate."""
        try:
            async with self.gate, self.sessionmaker() as session, session.begin():
                await self._write(session, batch)
        except IntegrityError:
            if len(batch) == 1:
                # The attempt is there already (its commit was acknowledged too late), or the
                # delivery was deleted meanwhile: either way there is nothing to write.
                return
            for finished in batch:
                await self.record([finished])

    async def _write(self, session: AsyncSession, batch: Sequence[Finished]) -> None:
        conn = await session.connection()
        await bulk.insert_rows(conn, _ATTEMPTS, [f.attempt for f in batch])
        updated = await bulk.update_rows(
            conn,
            _DELIVERIES,
            [f.state_row() for f in batch],
            key="id",
            columns=_STATE_COLUMNS,
            fixed=_STATE_FIXED,
            guard=("lease_owner", self.worker_id),
        )
        taken_over = len(batch) - updated
        if 0 < taken_over <= len(batch):
            LOG.info("%d deliveries were taken over by another worker; attempts kept", taken_over)
        now = batch[-1].recorded_at
        failing = {f.claim.endpoint.id for f in batch if not f.outcome.succeeded}
        healthy = {f.claim.endpoint.id for f in batch} - failing
        # Conditional, so a healthy endpoint's row is not written (or locked) per batch.
        await bulk.update_rows(
            conn,
            _ENDPOINTS,
            [(endpoint_id,) for endpoint_id in sorted(healthy)],
            key="id",
            columns=(),
            fixed={"consecutive_failures": "0", "failing_since": "NULL"},
            condition="consecutive_failures != 0 OR failing_since IS NOT NULL",
        )
        for finished in batch:
            if finished.claim.endpoint.id in failing:
                await self._endpoint_health(session, finished.claim.endpoint.id, finished, now)

    async def _endpoint_health(
        self, session: AsyncSession, endpoint_id: str, finished: Finished, now: datetime
    ) -> None:
        """Track the endpoint's run of failures; disable it on 410 or a long enough run."""
        if finished.outcome.succeeded:
            await session.execute(
                update(_ENDPOINTS)
                .where(_ENDPOINTS.c.id == endpoint_id)
                .values(consecutive_failures=0, failing_since=None)
            )
            return
        since_type = _ENDPOINTS.c.failing_since.type
        row = (
            await session.execute(
                update(_ENDPOINTS)
                .where(_ENDPOINTS.c.id == endpoint_id)
                .values(
                    consecutive_failures=_ENDPOINTS.c.consecutive_failures + 1,
                    failing_since=func.coalesce(
                        _ENDPOINTS.c.failing_since, literal(now, since_type)
                    ),
                )
                .returning(
                    _ENDPOINTS.c.consecutive_failures,
                    _ENDPOINTS.c.failing_since,
                    _ENDPOINTS.c.enabled,
                )
            )
        ).one_or_none()
        if row is None or not row.enabled:
            return
        reason = self._disable_reason(
            finished.outcome, row.consecutive_failures, row.failing_since, now
        )
        if reason is None:
            return
        disabled = await session.execute(
            update(_ENDPOINTS)
            .where(_ENDPOINTS.c.id == endpoint_id, _ENDPOINTS.c.enabled.is_(True))
            .values(
                enabled=False,
                disabled_reason=reason[:DISABLED_REASON_CHARS],
                disabled_at=now,
                updated_at=now,
            )
        )
        if bulk.rowcount(disabled) == 0:
            return
        LOG.warning("endpoint %s disabled: %s", endpoint_id, reason)
        if self.on_endpoint_disabled is not None:
            endpoint = await session.get(Endpoint, endpoint_id, populate_existing=True)
            if endpoint is not None:
                await self.on_endpoint_disabled(session, endpoint)

    def _disable_reason(
        self, outcome: Outcome, failures: int, since: datetime | None, now: datetime
    ) -> str | None:
        if outcome.disable_endpoint:
            return GONE_REASON
        if (
            since is not None
            and since <= now - self.disable_after
            and failures >= self.disable_min_failures
        ):
            return (
                f"Every attempt failed since {since.isoformat(timespec='seconds')} "
                f"({failures} in a row)."
            )
        return None


@dataclass(frozen=True, slots=True)
class _Held:
    """A leased row given back before its claim was built."""

    id: str
    attempts: int


def _split_by_attempts(
    claims: Sequence[Claim | _Held],
) -> Iterable[tuple[bool, Sequence[str]]]:
    """Claim ids in chunks, split into never-attempted (pending) and attempted (retrying)."""
    fresh = [c.id for c in claims if c.attempts == 0]
    tried = [c.id for c in claims if c.attempts > 0]
    for chunk in bulk.chunks(fresh):
        yield True, chunk
    for chunk in bulk.chunks(tried):
        yield False, chunk


def build_body(row: Any) -> bytes:
    """What a delivery of the event ``row`` posts: its envelope as JSON."""
    return codec.dumps(envelope(row), field="event")


async def _bodies(session: AsyncSession, ids: set[str]) -> tuple[dict[str, bytes], dict[str, str]]:
    """Each event's envelope as JSON (read as plain rows: no objects to build), and why the
    body of an event that cannot be encoded could not be built."""
    conn = await session.connection()
    columns = [_EVENTS.c[name] for name in ENVELOPE_COLUMNS]
    found: dict[str, bytes] = {}
    broken: dict[str, str] = {}
    for chunk in bulk.chunks(sorted(ids)):
        for row in await conn.execute(select(*columns).where(_EVENTS.c.id.in_(chunk))):
            try:
                found[row.id] = build_body(row)
            except Exception as exc:
                broken[row.id] = f"the event's body cannot be built: {exc}"
    return found, broken


async def backlog(session: AsyncSession) -> tuple[int, datetime | None]:
    """Deliveries waiting (pending or retrying), and the earliest time one of them is due:
    one statement over the partial index of waiting deliveries."""
    row = (
        await session.execute(
            select(func.count(), func.min(Delivery.next_attempt_at)).where(text(WAITING_SQL))
        )
    ).one()
    return int(row[0]), row[1]
