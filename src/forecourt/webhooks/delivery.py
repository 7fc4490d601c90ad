"""The delivery worker: claims due deliveries from the database queue and POSTs them.

Delivery is **at-least-once**. A receiver may get one delivery more than once (a worker that
dies after the POST but before recording it, a lease that ran out while the POST was still
under way); every copy carries the same ``webhook-id``, which is the delivery's id, so a
receiver deduplicates on it.

The worker claims due deliveries in batches under a lease (see ``queue``), as many as it has
free slots for, so nothing waits leased in memory behind a full worker. No database
transaction stays open across an HTTP call. While it works, it extends the leases it holds
every third of a lease. Finished attempts are written by a ``Recorder`` in group commits:
under load hundreds per transaction, when idle each at once.

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
from collections import deque
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Histogram

from forecourt.db.base import utcnow
from forecourt.errors import NotFound
from forecourt.ids import new_id
from forecourt.observability.operations import DELIVER, OPERATIONS
from forecourt.observability.registry import registered
from forecourt.ratelimit.windows import Window
from forecourt.webhooks import sender_pool, signing
from forecourt.webhooks.latency import delivery_ended
from forecourt.webhooks.models import FAILED, RETRYING, SUCCEEDED, Attempt
from forecourt.webhooks.queue import Claim, DeliveryQueue, EndpointDisabledHook, Finished
from forecourt.webhooks.recorder import Recorder, brief
from forecourt.webhooks.schedule import (
    ERROR_INTERNAL,
    Outcome,
    RetryPolicy,
    Rng,
    Verdict,
    classify,
    next_attempt_delay,
)
from forecourt.webhooks.sender import SendResult, WebhookSender
from forecourt.webhooks.service import signing_secrets
from forecourt.webhooks.targets import Target

if TYPE_CHECKING:
    from forecourt.core import Forecourt

__all__ = ["Claim", "DeliveryWorker", "default_worker_id"]

LOG = logging.getLogger("forecourt.webhooks")

HEARTBEATS_PER_LEASE = 3
LAST_ERROR_CHARS = 500
WORKER_ID_CHARS = 64
CLAIM_BACKOFF_MAX_S = 5.0  # longest pause between claims while the database is unreachable
RECORD_STOP_GRACE_S = 5.0  # how long ``stop`` waits for attempts still being recorded
UNEXPECTED_FAILURE_DELAY_S = 30.0  # a delivery whose attempt raised is due again after this
SECRET_CACHE_SIZE = 10_000  # endpoints whose decrypted signing secrets are kept
# Finished attempts waiting for their group commit may hold this many times
# ``delivery_concurrency`` deliveries, counting those being sent.
RECORD_BACKLOG_FACTOR = 2
# The local backlog of handed-off deliveries, in ``delivery_concurrency``s: room for a fan-out
# to a thousand endpoints with the default settings, which then needs no claim at all.
BACKLOG_FACTOR = 4

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
        "Duration of webhook delivery attempts (the HTTP exchange); from an event's "
        "acceptance to its delivery: forecourt_delivery_latency_seconds.",
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    ),
    "forecourt_webhook_attempt_seconds",
)


_ATTEMPTS_BY_STATE = {
    state: ATTEMPTS.labels(outcome=state) for state in (SUCCEEDED, RETRYING, FAILED)
}


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

    ``sender`` defaults to the one the settings ask for (sender processes, see
    ``sender_pool``) and is then closed by ``stop``.
    ``on_endpoint_disabled`` is awaited in the transaction that disables an endpoint.
    ``rng`` draws the jitter of retry delays.
    """

    def __init__(
        self,
        fc: Forecourt,
        *,
        worker_id: str | None = None,
        sender: WebhookSender | None = None,
        on_endpoint_disabled: EndpointDisabledHook | None = None,
        rng: Rng = random.random,
    ) -> None:
        self.fc = fc
        self.settings = settings = fc.settings
        self.worker_id = (worker_id or default_worker_id())[:WORKER_ID_CHARS]
        self.queue = DeliveryQueue(
            fc.sessionmaker,
            self.worker_id,
            lease=timedelta(seconds=settings.delivery_lease_s),
            disable_after=timedelta(seconds=settings.endpoint_disable_after_s),
            disable_min_failures=settings.endpoint_disable_min_failures,
            gate=fc.write_gate,
            on_endpoint_disabled=on_endpoint_disabled,
        )
        self._recorder = Recorder(
            self.queue.record,
            give_up_s=settings.delivery_lease_s,
            on_recorded=fc.deliveries_recorded,
        )
        self._owns_sender = sender is None
        self._sender = sender if sender is not None else sender_pool.from_settings(settings)
        self._rng = rng
        self._box = fc.webhook_config.box
        self._concurrency = settings.delivery_concurrency
        # Deliveries whose lease this worker holds: claimed and not yet recorded or released.
        self._held: dict[str, Claim] = {}
        # Of those, the ones whose HTTP exchange has not ended yet (the rest wait for their
        # attempt to be recorded, and need no connection meanwhile).
        self._exchanging: set[str] = set()
        self._reserved = 0  # places promised to a publisher's hand-off, not adopted yet
        # Handed-off deliveries that found no free slot: leased to this worker (the heartbeat
        # extends them), started in order as slots free up, handed back by ``stop``.
        self._backlog: deque[Claim] = deque()
        self._backlog_max = BACKLOG_FACTOR * self._concurrency
        self._tasks: set[asyncio.Task[None]] = set()
        self._requeues: set[asyncio.Future[None]] = set()
        self._endpoint_slots: dict[str, _Slot] = {}
        self._rate_windows: dict[int, tuple[Window, ...]] = {}
        self._secret_cache: dict[tuple[str, str, str | None, bool], list[str]] = {}
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

    # -- hand-off from a publisher of this process (see forecourt.events.ingest) -----------

    @property
    def lease(self) -> timedelta:
        return self.queue.lease

    def reserve(self, wanted: int) -> int:
        """Promise up to ``wanted`` places to deliveries about to be inserted leased to this
        worker: free slots, then room in the local backlog; how many. None while the worker is
        not running."""
        if not self.running or self._stopping:
            return 0
        room = self._free() + self._backlog_max - len(self._backlog) - self._reserved
        count = max(0, min(wanted, room))
        self._reserved += count
        return count

    def release(self, count: int) -> None:
        """Give back slots of a ``reserve`` whose deliveries were not committed."""
        self._reserved = max(0, self._reserved - count)
        self._slot_free.set()

    def adopt(self, claims: Sequence[Claim]) -> None:
        """Deliver ``claims``, committed leased to this worker under a ``reserve``. Never
        raises: what cannot be started is given back to the queue."""
        self._reserved = max(0, self._reserved - len(claims))
        for i, claim in enumerate(claims):
            try:
                self._held[claim.id] = claim
                if self._stopping:  # ``stop`` hands it back (or its lease runs out)
                    continue
                if self._free() > 0:
                    self._spawn(claim)
                else:
                    self._backlog.append(claim)
            except Exception:
                LOG.exception("could not take %d handed-off deliveries", len(claims) - i)
                self._give_back(claims[i:])
                return

    def _give_back(self, claims: Sequence[Claim]) -> None:
        """Drop ``claims`` from what this worker holds and requeue them in the background
        (if that fails too, their leases run out: nothing extends them any more)."""
        for claim in claims:
            self._held.pop(claim.id, None)
            self._exchanging.discard(claim.id)
            with contextlib.suppress(ValueError):
                self._backlog.remove(claim)
        task = asyncio.ensure_future(self.queue.give_back(list(claims)))
        self._requeues.add(task)
        task.add_done_callback(self._requeues.discard)

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
        self._backlog.clear()  # still held: handed back below
        if self._requeues:
            await asyncio.gather(*self._requeues, return_exceptions=True)
        # Attempts already made are written even if their task was cancelled.
        await self._recorder.drained(RECORD_STOP_GRACE_S)
        await self.queue.give_back(list(self._held.values()))
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
        batch = min(self.settings.delivery_batch_size, self._concurrency)
        backlog = False  # the last claim found more due deliveries than it took
        while not self._stopping:
            capacity = self._capacity()
            # Behind a backlog, wait until half a batch of slots is free: one claim of many
            # rows costs the database about what one claim of a single row does.
            if capacity <= 0 or (backlog and capacity < batch // 2):
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            wanted = min(batch, capacity)
            self._wake.clear()
            try:
                claims = await self.claim(wanted)
            except Exception as exc:
                LOG.warning(
                    "claiming deliveries failed (%s); retrying in %.1f s", brief(exc), backoff_s
                )
                await self._idle(backoff_s)
                backoff_s = min(backoff_s * 2, CLAIM_BACKOFF_MAX_S)
                continue
            backoff_s = poll_s
            for i, claim in enumerate(claims):
                try:
                    self._spawn(claim)
                except Exception:
                    LOG.exception("could not start %d claimed deliveries", len(claims) - i)
                    self._give_back(claims[i:])
                    break
            backlog = len(claims) == wanted
            if not backlog:
                await self._idle(poll_s)

    async def _idle(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    def _free(self) -> int:
        """Deliveries that can start now: up to ``delivery_concurrency`` exchanges at once,
        and as many again finished and waiting to be recorded."""
        exchanges = self._concurrency - len(self._exchanging)
        tasks = RECORD_BACKLOG_FACTOR * self._concurrency - len(self._tasks)
        return min(exchanges, tasks)

    def _capacity(self) -> int:
        """How many due deliveries to claim from the queue now."""
        return self._free() - self._reserved - len(self._backlog)

    def _exchanged(self, claim: Claim) -> None:
        if claim.id in self._exchanging:
            self._exchanging.discard(claim.id)
            self._start_backlog()
            self._slot_free.set()

    def _start_backlog(self) -> None:
        while self._backlog and not self._stopping and self._free() > 0:
            claim = self._backlog.popleft()
            try:
                self._spawn(claim)
            except Exception:
                LOG.exception("could not start a delivery of the backlog")
                self._give_back([claim, *self._backlog])
                return

    def _spawn(self, claim: Claim) -> None:
        self._exchanging.add(claim.id)
        task = asyncio.create_task(self.process(claim), name=f"deliver-{claim.id}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._start_backlog()
        self._slot_free.set()

    async def claim(self, limit: int) -> list[Claim]:
        """Take the lease of up to ``limit`` due deliveries of enabled endpoints.

        The caller must ``process`` every claim (the background loop does); a claim that is
        never processed is taken over by another worker once its lease expires.
        """
        claims = await self.queue.claim(limit)
        for claim in claims:
            self._held[claim.id] = claim
        return claims

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
        claim = await self.queue.claim_one(delivery_id)
        self._held[claim.id] = claim
        claim.once = once
        try:
            attempt = await self._attempt(claim, enforce_limits=False)
        except BaseException:
            if claim.id in self._held:  # not recorded: given back, not held forever
                self._give_back([claim])
            raise
        if attempt is None:
            raise NotFound(f"No delivery {delivery_id!r}.")
        return Attempt(**attempt)

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
            # Due again a while later: a failure that repeats must not spin on one row.
            due = utcnow() + timedelta(seconds=UNEXPECTED_FAILURE_DELAY_S)
            await self.queue.give_back([claim], next_attempt_at=due)
            self._held.pop(claim.id, None)
        finally:
            self._exchanged(claim)

    # -- one attempt -------------------------------------------------------------------------

    async def _attempt(self, claim: Claim, *, enforce_limits: bool) -> dict[str, Any] | None:
        """Make and record one attempt; its ``webhook_attempts`` row once recorded (None when
        the claim was handed back, or the attempt could not be recorded)."""
        endpoint = claim.endpoint
        slot = self._endpoint_slots.get(endpoint.id)
        if slot is None:
            slot = self._endpoint_slots[endpoint.id] = _Slot(self.settings.endpoint_concurrency)
        slot.users += 1
        try:
            async with slot.semaphore:
                sent = await self._send(claim, enforce_limits=enforce_limits)
        finally:
            slot.users -= 1
            if slot.users == 0:
                del self._endpoint_slots[endpoint.id]
            self._exchanged(claim)
        if sent is None:
            return None
        result, started_at = sent
        outcome = classify(result.status_code, result.error_class, result.retry_after_s)
        finished = self._finished(claim, result, outcome, started_at)
        try:
            # The recorder writes it even if this task is cancelled meanwhile (a graceful
            # stop must not lose an attempt that was made).
            recorded = await self._recorder.submit(finished)
        finally:
            self._held.pop(claim.id, None)
        return finished.attempt if recorded else None

    async def _send(
        self, claim: Claim, *, enforce_limits: bool
    ) -> tuple[SendResult, datetime] | None:
        """The attempt's HTTP exchange; None when the claim was handed back instead."""
        endpoint = claim.endpoint
        if enforce_limits:
            if not endpoint.enabled:
                await self._hand_back(claim)
                return None
            wait_s = await self._rate_limited(endpoint)
            if wait_s is not None:
                await self._hand_back(claim, utcnow() + timedelta(seconds=wait_s))
                return None
        started_at = utcnow()
        try:
            headers = signing.build_headers(
                claim.id,
                int(time.time()),
                claim.body,
                self._secrets(endpoint, started_at),
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
            result = await self._sender.send(endpoint.url, claim.body, headers, endpoint.timeout_s)
        return result, started_at

    def _finished(
        self, claim: Claim, result: SendResult, outcome: Outcome, started_at: datetime
    ) -> Finished:
        attempt_no = claim.attempts + 1
        now = utcnow()
        status, next_at = self._next_state(claim, outcome, attempt_no, now)
        attempt = {
            "id": new_id("att"),
            "tenant_id": claim.tenant_id,
            "delivery_id": claim.id,
            "endpoint_id": claim.endpoint.id,
            "attempt_no": attempt_no,
            "started_at": started_at,
            "duration_ms": result.duration_ms,
            "status_code": result.status_code,
            "response_excerpt": result.response_excerpt,
            "error_class": result.error_class,
            "error_message": result.error_message,
            "worker_id": self.worker_id,
        }
        _ATTEMPTS_BY_STATE[status].inc()
        ATTEMPT_SECONDS.observe(result.duration_ms / 1000)
        delivery_ended(claim.id, status)
        OPERATIONS.record(DELIVER, result.duration_ms / 1000)
        return Finished(claim, attempt, outcome, status, next_at, _last_error(result), now)

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

    async def _hand_back(self, claim: Claim, due_at: datetime | None = None) -> None:
        """Give a delivery back without an attempt: at its old time, or due at ``due_at``."""
        try:
            await self.queue.requeue([claim], next_attempt_at=due_at)
        finally:
            self._held.pop(claim.id, None)

    def _secrets(self, endpoint: Target, now: datetime) -> list[str]:
        """The endpoint's signing secrets, decrypted once per version of the endpoint row."""
        expires = endpoint.previous_secret_expires_at
        key = (
            endpoint.id,
            endpoint.secret_encrypted,
            endpoint.previous_secret_encrypted,
            expires is not None and expires > now,
        )
        found = self._secret_cache.get(key)
        if found is None:
            if len(self._secret_cache) >= SECRET_CACHE_SIZE:
                self._secret_cache.clear()
            found = self._secret_cache[key] = signing_secrets(self._box, endpoint, now)
        return found

    async def _rate_limited(self, endpoint: Target) -> float | None:
        """Seconds to wait when the endpoint's deliveries-per-second limit is reached."""
        per_s = endpoint.rate_limit_per_s
        if not per_s:
            return None
        windows = self._rate_windows.get(per_s)
        if windows is None:
            windows = self._rate_windows[per_s] = (Window("second", per_s, 1),)
        decision = await self.fc.limiter.hit(f"endpoint:{endpoint.id}", windows)
        return None if decision.allowed else float(max(1, decision.retry_after_s))

    # -- leases ------------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        interval_s = self.settings.delivery_lease_s / HEARTBEATS_PER_LEASE
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.extend_leases()
            except Exception as exc:
                LOG.warning("extending delivery leases failed: %s", brief(exc))

    async def extend_leases(self) -> int:
        """Push the lease of every delivery this worker holds one lease ahead; how many."""
        ids = list(self._held)
        return await self.queue.extend(ids) if ids else 0


class _Slot:
    """The per-endpoint concurrency bound, dropped when nothing uses it."""

    __slots__ = ("semaphore", "users")

    def __init__(self, limit: int) -> None:
        self.semaphore = asyncio.Semaphore(limit)
        self.users = 0


def _policy(endpoint: Target) -> RetryPolicy:
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
