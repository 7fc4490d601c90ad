"""The delivery worker: claims due deliveries from the database queue and POSTs them.

Delivery is **at-least-once**. A receiver may get one delivery more than once (a worker that
dies after the POST but before recording it, a lease that ran out while the POST was still
under way); every copy carries the same ``webhook-id``, which is the delivery's id, so a
receiver deduplicates on it.

The queue
---------
A delivery is *due* when it is ``pending`` or ``retrying`` with ``next_attempt_at`` in the
past, or ``delivering`` with an expired lease (its worker died). A worker claims due
deliveries of enabled endpoints in one short statement that marks them ``delivering`` under
its lease (PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so workers never wait on each other or
claim the same row; SQLite: one writer at a time does the same). No database transaction
stays open across an HTTP call. While it works, the worker extends the leases it holds every
third of a lease. Each attempt is recorded in one short transaction (the attempt row, the
delivery's new state, the endpoint's failure run), and the delivery is only updated if this
worker still holds its lease; the attempt row is kept either way.

Deliveries of a disabled endpoint are not claimed; re-enabling the endpoint resumes them.
A graceful ``stop`` stops claiming, lets in-flight deliveries finish within a deadline and
hands the rest back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import Counter, Histogram
from sqlalchemy import and_, func, literal, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession

from forecourt.db.base import utcnow
from forecourt.errors import Conflict, NotFound
from forecourt.events.envelope import envelope
from forecourt.events.models import Event
from forecourt.ids import new_id
from forecourt.prometheus import registered
from forecourt.ratelimit.windows import Window
from forecourt.webhooks import signing
from forecourt.webhooks.models import (
    DELIVERING,
    FAILED,
    PENDING,
    RETRYING,
    SUCCEEDED,
    Attempt,
    Delivery,
    Endpoint,
)
from forecourt.webhooks.schedule import (
    ERROR_INTERNAL,
    Outcome,
    RetryPolicy,
    Rng,
    Verdict,
    classify,
    next_attempt_delay,
)
from forecourt.webhooks.sender import Sender, SendResult
from forecourt.webhooks.service import signing_secrets

if TYPE_CHECKING:
    from forecourt.core import Forecourt

LOG = logging.getLogger("forecourt.webhooks")

HEARTBEATS_PER_LEASE = 3
LAST_ERROR_CHARS = 500
DISABLED_REASON_CHARS = 200
WORKER_ID_CHARS = 64
IDS_PER_STATEMENT = 500  # ids in one IN (...) list
CLAIM_BACKOFF_MAX_S = 5.0  # longest pause between claims while the database is unreachable
RECORD_BACKOFF_FIRST_S = 0.05
RECORD_BACKOFF_MAX_S = 2.0
RECORD_STOP_GRACE_S = 5.0  # how long ``stop`` waits for attempts still being recorded
GONE_REASON = "The receiver answered 410 Gone."

EndpointDisabledHook = Callable[[AsyncSession, Endpoint], Awaitable[None]]
"""Called inside the transaction that disables an endpoint (to insert ``endpoint.disabled``)."""

ATTEMPTS = registered(
    lambda: Counter(
        "forecourt_webhook_attempts",
        "Webhook delivery attempts, by the delivery state they led to.",
        ["outcome"],
    ),
    "forecourt_webhook_attempts_total",
)
"""``forecourt_webhook_attempts_total{outcome="succeeded"|"retrying"|"failed"}``."""

ATTEMPT_SECONDS = registered(
    lambda: Histogram(
        "forecourt_webhook_attempt_seconds",
        "Duration of webhook delivery attempts (the HTTP exchange).",
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    ),
    "forecourt_webhook_attempt_seconds",
)


@dataclass(slots=True)
class Claim:
    """A delivery this worker holds the lease of, with what it needs to send it."""

    id: str
    tenant_id: str
    attempts: int  # attempts made before this claim
    endpoint: Endpoint
    event: Event
    once: bool = False  # a single attempt on request: never retried in the background


def default_worker_id() -> str:
    """``host-pid-random``: unique per worker object, readable in the attempts log."""
    host = socket.gethostname().split(".")[0][:32]
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"[:WORKER_ID_CHARS]


class DeliveryWorker:
    """Delivers due webhooks of ``fc``'s database until stopped.

    ``start``/``stop`` run it in the background; ``run_once`` claims and processes one batch
    (for tests and tools); ``deliver_now`` makes one attempt of one delivery at once (the
    "test endpoint" API). ``wake`` cuts the idle wait short, for a publisher that has just
    committed new deliveries.

    ``sender`` defaults to one built from the settings and is then closed by ``stop``.
    ``on_endpoint_disabled`` is awaited in the transaction that disables an endpoint.
    ``rng`` draws the jitter of retry delays.
    """

    def __init__(
        self,
        fc: Forecourt,
        *,
        worker_id: str | None = None,
        sender: Sender | None = None,
        on_endpoint_disabled: EndpointDisabledHook | None = None,
        rng: Rng = random.random,
    ) -> None:
        self.fc = fc
        self.settings = fc.settings
        self.worker_id = (worker_id or default_worker_id())[:WORKER_ID_CHARS]
        self._owns_sender = sender is None
        self._sender = sender if sender is not None else Sender.from_settings(fc.settings)
        self.on_endpoint_disabled = on_endpoint_disabled
        self._rng = rng
        self._box = fc.webhook_config.box
        self._lease = timedelta(seconds=self.settings.delivery_lease_s)
        self._concurrency = self.settings.delivery_concurrency
        # Deliveries whose lease this worker holds: claimed and not yet recorded or released.
        self._held: dict[str, Claim] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._recording: set[asyncio.Task[Attempt | None]] = set()
        self._endpoint_slots: dict[str, _Slot] = {}
        self._rate_windows: dict[int, tuple[Window, ...]] = {}
        self._wake = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    @property
    def in_flight(self) -> int:
        """Deliveries this worker holds right now."""
        return len(self._held)

    async def start(self) -> None:
        """Start claiming and delivering in the background."""
        if self._loop_task is not None:
            return
        self._stopping = False
        self._loop_task = asyncio.create_task(self._run(), name=f"delivery-{self.worker_id}")
        self._heartbeat_task = asyncio.create_task(
            self._heartbeat(), name=f"delivery-heartbeat-{self.worker_id}"
        )

    def wake(self) -> None:
        """Claim now instead of at the end of the idle wait (new deliveries were committed)."""
        self._wake.set()

    async def stop(self, deadline_s: float | None = None) -> None:
        """Stop claiming; wait up to ``deadline_s`` (default: the shutdown grace setting) for
        in-flight deliveries, then hand the unfinished ones back to the queue."""
        if deadline_s is None:
            deadline_s = self.settings.delivery_shutdown_grace_s
        self._stopping = True
        self._wake.set()
        self._slot_free.set()
        if self._loop_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        if self._tasks:
            _, unfinished = await asyncio.wait(set(self._tasks), timeout=deadline_s)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        if self._recording:
            # Recording is shielded from cancellation; it is short unless the database is down.
            await asyncio.wait(set(self._recording), timeout=RECORD_STOP_GRACE_S)
        if self._held:
            try:
                await self._release(list(self._held.values()))
            except Exception:
                LOG.exception(
                    "could not release %d deliveries; their leases will expire", len(self._held)
                )
            self._held.clear()
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat_task
            self._heartbeat_task = None
        if self._owns_sender:
            await self._sender.aclose()

    # -- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        poll_s = self.settings.delivery_poll_interval_s
        backoff_s = poll_s
        while not self._stopping:
            capacity = self._concurrency - len(self._tasks)
            if capacity <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            wanted = min(self.settings.delivery_batch_size, capacity)
            self._wake.clear()
            try:
                claims = await self.claim(wanted)
            except Exception as exc:
                LOG.warning(
                    "claiming deliveries failed (%s); retrying in %.1f s", _brief(exc), backoff_s
                )
                await self._idle(backoff_s)
                backoff_s = min(backoff_s * 2, CLAIM_BACKOFF_MAX_S)
                continue
            backoff_s = poll_s
            for claim in claims:
                self._spawn(claim)
            if len(claims) < wanted:
                await self._idle(poll_s)

    async def _idle(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    def _spawn(self, claim: Claim) -> None:
        task = asyncio.create_task(self.process(claim), name=f"deliver-{claim.id}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slot_free.set()

    async def run_once(self) -> int:
        """Claim one batch, deliver all of it, and return how many deliveries it held."""
        wanted = min(self.settings.delivery_batch_size, self._concurrency)
        claims = await self.claim(wanted)
        await asyncio.gather(*(self.process(claim) for claim in claims))
        return len(claims)

    async def deliver_now(self, delivery_id: str, *, once: bool = False) -> Attempt:
        """Make one attempt of ``delivery_id`` right away, due or not, and return it.

        The endpoint's rate limit and enabled flag are not consulted: this is an explicit
        request. With ``once`` a failure is final (``failed``) instead of scheduling a retry.
        Raises ``NotFound`` for an unknown delivery and ``Conflict`` while another worker
        holds its lease.
        """
        claim = await self._claim_one(delivery_id)
        claim.once = once
        attempt = await self._attempt(claim, enforce_limits=False)
        if attempt is None:
            raise NotFound(f"No delivery {delivery_id!r}.")
        return attempt

    async def process(self, claim: Claim) -> None:
        """Make one attempt of a claimed delivery and record it (or hand the claim back when
        its endpoint is disabled or over its rate limit). Never raises for a delivery's
        failure."""
        try:
            await self._attempt(claim, enforce_limits=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            LOG.exception("delivery %s failed unexpectedly; handing it back", claim.id)
            with contextlib.suppress(Exception):
                await self._release([claim])
            self._held.pop(claim.id, None)

    # -- claiming ----------------------------------------------------------------------------

    async def claim(self, limit: int) -> list[Claim]:
        """Take the lease of up to ``limit`` due deliveries of enabled endpoints.

        The caller must ``process`` every claim (the background loop does); a claim that is
        never processed is taken over by another worker once its lease expires.
        """
        now = utcnow()
        due = or_(
            and_(Delivery.status.in_((PENDING, RETRYING)), Delivery.next_attempt_at <= now),
            and_(Delivery.status == DELIVERING, Delivery.lease_expires_at < now),
        )
        # A CTE that locks is evaluated exactly once on PostgreSQL, so the LIMIT holds.
        picked = (
            select(Delivery.id)
            .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
            .where(due, Endpoint.enabled.is_(True))
            .order_by(Delivery.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True, of=Delivery)
            .cte("picked")
        )
        where = Delivery.id.in_(select(picked.c.id))
        return await self._take(where, now)

    async def _claim_one(self, delivery_id: str) -> Claim:
        now = utcnow()
        free = or_(
            Delivery.status != DELIVERING,
            Delivery.lease_expires_at.is_(None),
            Delivery.lease_expires_at < now,
        )
        claims = await self._take(and_(Delivery.id == delivery_id, free), now)
        if claims:
            return claims[0]
        async with self.fc.sessionmaker() as session:
            exists = await session.scalar(select(Delivery.id).where(Delivery.id == delivery_id))
        if exists is None:
            raise NotFound(f"No delivery {delivery_id!r}.")
        raise Conflict("The delivery is being attempted right now.")

    async def _take(self, where: Any, now: datetime) -> list[Claim]:
        statement = (
            update(Delivery)
            .where(where)
            .values(
                status=DELIVERING,
                lease_owner=self.worker_id,
                lease_expires_at=now + self._lease,
                updated_at=now,
            )
            .returning(
                Delivery.id,
                Delivery.tenant_id,
                Delivery.endpoint_id,
                Delivery.event_id,
                Delivery.attempts,
            )
            .execution_options(synchronize_session=False)
        )
        async with self.fc.sessionmaker() as session:
            async with session.begin():
                rows = (await session.execute(statement)).all()
            if not rows:
                return []
            endpoints = await _by_id(session, Endpoint, {row.endpoint_id for row in rows})
            events = await _by_id(session, Event, {row.event_id for row in rows})
        claims: list[Claim] = []
        orphans: list[str] = []
        for row in rows:
            endpoint = endpoints.get(row.endpoint_id)
            event = events.get(row.event_id)
            if endpoint is None or event is None:
                orphans.append(row.id)  # deleted meanwhile (the delivery goes with them)
                continue
            claim = Claim(row.id, row.tenant_id, row.attempts, endpoint, event)
            self._held[claim.id] = claim
            claims.append(claim)
        if orphans:
            LOG.debug("claimed %d deliveries whose endpoint or event is gone", len(orphans))
        return claims

    # -- one attempt -------------------------------------------------------------------------

    async def _attempt(self, claim: Claim, *, enforce_limits: bool) -> Attempt | None:
        endpoint = claim.endpoint
        async with self._endpoint_slot(endpoint.id):
            if enforce_limits:
                if not endpoint.enabled:
                    await self._release([claim])
                    return None
                wait_s = await self._rate_limited(endpoint)
                if wait_s is not None:
                    await self._postpone(claim, wait_s)
                    return None
            started_at = utcnow()
            try:
                body = orjson.dumps(envelope(claim.event))
                headers = signing.build_headers(
                    claim.id,
                    int(time.time()),
                    body,
                    signing_secrets(self._box, endpoint, started_at),
                    custom=endpoint.headers,
                )
            except Exception as exc:
                # A stored secret that no longer decrypts, a header that is not valid HTTP:
                # nothing the receiver did, so it is logged as an attempt and retried.
                result = SendResult(
                    status_code=None,
                    duration_ms=0,
                    error_class=ERROR_INTERNAL,
                    error_message=f"could not build the request: {type(exc).__name__}: {exc}",
                )
            else:
                result = await self._sender.send(endpoint.url, body, headers, endpoint.timeout_s)
        outcome = classify(result.status_code, result.error_class, result.retry_after_s)
        return await self._shielded(self._record(claim, result, outcome, started_at))

    async def _rate_limited(self, endpoint: Endpoint) -> float | None:
        """Seconds to wait when the endpoint's deliveries-per-second limit is reached."""
        per_s = endpoint.rate_limit_per_s
        if not per_s:
            return None
        windows = self._rate_windows.get(per_s)
        if windows is None:
            windows = self._rate_windows[per_s] = (Window("second", per_s, 1),)
        decision = await self.fc.limiter.hit(f"endpoint:{endpoint.id}", windows)
        return None if decision.allowed else float(max(1, decision.retry_after_s))

    @contextlib.asynccontextmanager
    async def _endpoint_slot(self, endpoint_id: str) -> AsyncIterator[None]:
        slot = self._endpoint_slots.get(endpoint_id)
        if slot is None:
            slot = self._endpoint_slots[endpoint_id] = _Slot(self.settings.endpoint_concurrency)
        slot.users += 1
        try:
            async with slot.semaphore:
                yield
        finally:
            slot.users -= 1
            if slot.users == 0:
                del self._endpoint_slots[endpoint_id]

    async def _shielded(self, coro: Awaitable[Attempt | None]) -> Attempt | None:
        """Run ``coro`` to completion even if the caller is cancelled (a graceful stop must
        not lose an attempt that was made)."""
        task: asyncio.Task[Attempt | None] = asyncio.ensure_future(coro)
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)
        return await asyncio.shield(task)

    # -- recording ---------------------------------------------------------------------------

    async def _record(
        self, claim: Claim, result: SendResult, outcome: Outcome, started_at: datetime
    ) -> Attempt | None:
        attempt_no = claim.attempts + 1
        now = utcnow()
        status, next_at = self._next_state(claim, outcome, attempt_no, now)
        attempt = Attempt(
            id=new_id("att"),
            tenant_id=claim.tenant_id,
            delivery_id=claim.id,
            endpoint_id=claim.endpoint.id,
            attempt_no=attempt_no,
            started_at=started_at,
            duration_ms=result.duration_ms,
            status_code=result.status_code,
            response_excerpt=result.response_excerpt,
            error_class=result.error_class,
            error_message=result.error_message,
            worker_id=self.worker_id,
        )
        values: dict[str, Any] = {
            "status": status,
            "attempts": Delivery.attempts + 1,
            "next_attempt_at": next_at,
            "last_status_code": result.status_code,
            "last_error": _last_error(result),
            "lease_owner": None,
            "lease_expires_at": None,
            "updated_at": now,
            "finished_at": None if status == RETRYING else now,
        }
        ATTEMPTS.labels(outcome=status).inc()
        ATTEMPT_SECONDS.observe(result.duration_ms / 1000)
        backoff_s = RECORD_BACKOFF_FIRST_S
        give_up = time.monotonic() + self.settings.delivery_lease_s
        try:
            while True:
                try:
                    await self._write_attempt(claim, attempt, values, outcome, now)
                    return attempt
                except IntegrityError:
                    # The attempt is there already (its commit was acknowledged too late), or
                    # the delivery was deleted meanwhile: either way there is nothing to write.
                    return attempt
                except (DBAPIError, PoolTimeout, OSError) as exc:
                    if time.monotonic() + backoff_s > give_up:
                        LOG.error(
                            "could not record attempt %d of %s (%s); it will be made again",
                            attempt_no,
                            claim.id,
                            _brief(exc),
                        )
                        return None
                    LOG.warning(
                        "recording delivery %s failed (%s); retrying", claim.id, _brief(exc)
                    )
                    await asyncio.sleep(backoff_s)
                    backoff_s = min(backoff_s * 2, RECORD_BACKOFF_MAX_S)
        finally:
            self._held.pop(claim.id, None)

    def _next_state(
        self, claim: Claim, outcome: Outcome, attempt_no: int, now: datetime
    ) -> tuple[str, datetime | None]:
        if outcome.verdict is Verdict.SUCCESS:
            return SUCCEEDED, None
        if outcome.verdict is Verdict.RETRY and not claim.once:
            policy = _policy(claim.endpoint)
            delay = next_attempt_delay(policy, attempt_no, outcome.retry_after_s, self._rng)
            if delay is not None:
                return RETRYING, now + timedelta(seconds=delay)
        return FAILED, None

    async def _write_attempt(
        self,
        claim: Claim,
        attempt: Attempt,
        values: dict[str, Any],
        outcome: Outcome,
        now: datetime,
    ) -> None:
        async with self.fc.sessionmaker() as session, session.begin():
            session.add(attempt)
            await session.flush()
            updated = await session.execute(
                update(Delivery)
                .where(Delivery.id == claim.id, Delivery.lease_owner == self.worker_id)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if _rowcount(updated) == 0:
                LOG.info(
                    "delivery %s was taken over by another worker; attempt %d kept",
                    claim.id,
                    attempt.attempt_no,
                )
            await self._endpoint_health(session, claim.endpoint.id, outcome, now)

    async def _endpoint_health(
        self, session: AsyncSession, endpoint_id: str, outcome: Outcome, now: datetime
    ) -> None:
        """Track the endpoint's run of failures; disable it on 410 or a long enough run."""
        if outcome.succeeded:
            # Conditional, so a healthy endpoint's row is not written (or locked) per delivery.
            await session.execute(
                update(Endpoint)
                .where(
                    Endpoint.id == endpoint_id,
                    or_(Endpoint.consecutive_failures != 0, Endpoint.failing_since.is_not(None)),
                )
                .values(consecutive_failures=0, failing_since=None)
                .execution_options(synchronize_session=False)
            )
            return
        since_type = Endpoint.__table__.c.failing_since.type
        row = (
            await session.execute(
                update(Endpoint)
                .where(Endpoint.id == endpoint_id)
                .values(
                    consecutive_failures=Endpoint.consecutive_failures + 1,
                    failing_since=func.coalesce(Endpoint.failing_since, literal(now, since_type)),
                )
                .returning(Endpoint.consecutive_failures, Endpoint.failing_since, Endpoint.enabled)
                .execution_options(synchronize_session=False)
            )
        ).one_or_none()
        if row is None or not row.enabled:
            return
        reason = self._disable_reason(outcome, row.consecutive_failures, row.failing_since, now)
        if reason is None:
            return
        disabled = await session.execute(
            update(Endpoint)
            .where(Endpoint.id == endpoint_id, Endpoint.enabled.is_(True))
            .values(
                enabled=False,
                disabled_reason=reason[:DISABLED_REASON_CHARS],
                disabled_at=now,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if _rowcount(disabled) == 0:
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
        window = timedelta(seconds=self.settings.endpoint_disable_after_s)
        if (
            since is not None
            and since <= now - window
            and failures >= self.settings.endpoint_disable_min_failures
        ):
            return (
                f"Every attempt failed since {since.isoformat(timespec='seconds')} "
                f"({failures} in a row)."
            )
        return None

    # -- handing deliveries back -------------------------------------------------------------

    async def _release(self, claims: Sequence[Claim]) -> None:
        """Give deliveries back to the queue as they were, due at their old time."""
        await self._requeue(claims, next_attempt_at=None)

    async def _postpone(self, claim: Claim, wait_s: float) -> None:
        """Give a delivery back, due after ``wait_s``; no attempt is counted."""
        await self._requeue([claim], next_attempt_at=utcnow() + timedelta(seconds=wait_s))

    async def _requeue(self, claims: Sequence[Claim], *, next_attempt_at: datetime | None) -> None:
        now = utcnow()
        async with self.fc.sessionmaker() as session, session.begin():
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
                    update(Delivery)
                    .where(Delivery.id.in_(chunk), Delivery.lease_owner == self.worker_id)
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
        for claim in claims:
            self._held.pop(claim.id, None)

    # -- leases ------------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        interval_s = self.settings.delivery_lease_s / HEARTBEATS_PER_LEASE
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.extend_leases()
            except Exception as exc:
                LOG.warning("extending delivery leases failed: %s", _brief(exc))

    async def extend_leases(self) -> int:
        """Push the lease of every delivery this worker holds one lease ahead; how many."""
        ids = list(self._held)
        if not ids:
            return 0
        now = utcnow()
        extended = 0
        async with self.fc.sessionmaker() as session, session.begin():
            for chunk in _chunks(ids, IDS_PER_STATEMENT):
                result = await session.execute(
                    update(Delivery)
                    .where(Delivery.id.in_(chunk), Delivery.lease_owner == self.worker_id)
                    .values(lease_expires_at=now + self._lease)
                    .execution_options(synchronize_session=False)
                )
                extended += _rowcount(result)
        return extended


class _Slot:
    """The per-endpoint concurrency bound, dropped when nothing uses it."""

    __slots__ = ("semaphore", "users")

    def __init__(self, limit: int) -> None:
        self.semaphore = asyncio.Semaphore(limit)
        self.users = 0


def _policy(endpoint: Endpoint) -> RetryPolicy:
    try:
        return RetryPolicy.from_dict(endpoint.retry_policy)
    except (ValueError, TypeError):
        LOG.warning("endpoint %s has an unreadable retry policy; using the default", endpoint.id)
        return RetryPolicy()


def _last_error(result: SendResult) -> str | None:
    if result.error_class is not None:
        text = f"{result.error_class}: {result.error_message or ''}".rstrip(": ")
    elif result.status_code is not None and not 200 <= result.status_code < 300:
        text = f"HTTP {result.status_code}"
    else:
        return None
    return text[:LAST_ERROR_CHARS]


def _brief(exc: BaseException) -> str:
    """The first line of an error: database errors otherwise carry the whole statement."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(cause).strip().splitlines()
    text = lines[0] if lines else ""
    return f"{type(cause).__name__}: {text}"[:300] if text else type(cause).__name__


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _split_by_attempts(claims: Sequence[Claim]) -> Iterable[tuple[bool, Sequence[str]]]:
    """Claim ids in chunks, split into never-attempted (pending) and attempted (retrying)."""
    fresh = [c.id for c in claims if c.attempts == 0]
    tried = [c.id for c in claims if c.attempts > 0]
    for chunk in _chunks(fresh, IDS_PER_STATEMENT):
        yield True, chunk
    for chunk in _chunks(tried, IDS_PER_STATEMENT):
        yield False, chunk


async def _by_id(session: AsyncSession, model: Any, ids: set[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    ordered = sorted(ids)
    for chunk in _chunks(ordered, IDS_PER_STATEMENT):
        for item in await session.scalars(select(model).where(model.id.in_(chunk))):
            found[item.id] = item
    return found
