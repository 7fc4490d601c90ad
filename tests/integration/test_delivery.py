"""The delivery worker against real receivers on 127.0.0.1, on SQLite and on PostgreSQL.

Receivers answer 200, 500, 410, 429 with Retry-After, hang past the timeout, or close the
connection; every attempt must be logged with its status, latency, excerpt and error class,
retried with the same webhook-id, and the queue must survive stops, dead workers and a
second worker racing the first.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any, Literal

import orjson
import pytest
import standardwebhooks
from prometheus_client import REGISTRY
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from conftest import free_port
from forecourt.core import Forecourt
from forecourt.crypto import SecretBox
from forecourt.db.base import utcnow
from forecourt.errors import Conflict, NotFound
from forecourt.events.models import Event
from forecourt.ids import new_id
from forecourt.webhooks import signing
from forecourt.webhooks.delivery import DeliveryWorker
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
from forecourt.webhooks.sender import EXCERPT_BYTES
from receivers import SECRET, Receiver, Reply, add_endpoint, nodes, publish

OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()
FAST = {
    "webhook_allow_private": "127.0.0.0/8",
    "delivery_poll_interval_s": 0.05,
    "delivery_lease_s": 10.0,
    "delivery_shutdown_grace_s": 2.0,
}
SETTLE_TIMEOUT_S = 10.0
HANG_S = 60.0  # only catches a hang: nothing here waits on how fast the machine is
NEVER_S = 3600.0  # a poll interval or a receiver delay that no test outlives
FINAL = (SUCCEEDED, FAILED)

MakeForecourt = Callable[..., Awaitable[Forecourt]]
MakeWorker = Callable[..., DeliveryWorker]


@pytest.fixture
async def forecourt(settings_factory: Any) -> AsyncIterator[MakeForecourt]:
    """Start Forecourt nodes (no background workers) on this test's database."""
    async with nodes(settings_factory, **FAST) as make:
        yield make


@pytest.fixture
async def workers() -> AsyncIterator[MakeWorker]:
    """Build delivery workers; every one is stopped after the test."""
    made: list[DeliveryWorker] = []

    def make(fc: Forecourt, **kwargs: Any) -> DeliveryWorker:
        worker = DeliveryWorker(fc, **kwargs)
        made.append(worker)
        return worker

    yield make
    for worker in made:
        await worker.stop(deadline_s=0)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as started:
        yield started


# -- helpers ------------------------------------------------------------------------------


async def delivery(fc: Forecourt, delivery_id: str) -> Delivery:
    async with fc.sessionmaker() as session:
        found = await session.get(Delivery, delivery_id)
    assert found is not None
    return found


async def statuses(fc: Forecourt, ids: list[str]) -> dict[str, str]:
    async with fc.sessionmaker() as session:
        rows = await session.execute(
            select(Delivery.id, Delivery.status).where(Delivery.id.in_(ids))
        )
        return {row.id: row.status for row in rows}


async def attempts(fc: Forecourt, delivery_id: str) -> list[Attempt]:
    async with fc.sessionmaker() as session:
        rows = await session.scalars(
            select(Attempt).where(Attempt.delivery_id == delivery_id).order_by(Attempt.attempt_no)
        )
        return list(rows)


async def endpoint_row(fc: Forecourt, endpoint_id: str) -> Endpoint:
    async with fc.sessionmaker() as session:
        found = await session.get(Endpoint, endpoint_id)
    assert found is not None
    return found


async def settle(
    fc: Forecourt,
    ids: list[str],
    states: tuple[str, ...] = FINAL,
    timeout_s: float = SETTLE_TIMEOUT_S,
) -> dict[str, str]:
    """Wait until every delivery is in one of ``states``."""
    deadline = time.monotonic() + timeout_s
    while True:
        current = await statuses(fc, ids)
        if all(current.get(i) in states for i in ids):
            return current
        if time.monotonic() > deadline:
            left = Counter(current.values())
            raise AssertionError(f"deliveries did not reach {states} in {timeout_s} s: {left}")
        await asyncio.sleep(0.05)


class FirstClaims:
    """Counts the claims of a started worker's loop, so a test can wait until its first
    (empty) claim is behind it before publishing what only a wake or a hand-off delivers."""

    def __init__(self, worker: DeliveryWorker) -> None:
        self.done = 0
        self._claim = worker.claim
        worker.claim = self._counted  # type: ignore[method-assign]

    async def _counted(self, limit: int) -> list[Any]:
        try:
            return list(await self._claim(limit))
        finally:
            self.done += 1

    async def wait(self, receiver: Receiver, count: int = 1) -> None:
        await receiver.wait_for(lambda: self.done >= count, timeout_s=HANG_S, what="a claim")


async def backdate_failures(fc: Forecourt, endpoint_id: str, seconds: float) -> None:
    """Move the start of an endpoint's failure run back, instead of waiting that long."""
    async with fc.sessionmaker() as session, session.begin():
        await session.execute(
            update(Endpoint)
            .where(Endpoint.id == endpoint_id)
            .values(failing_since=utcnow() - timedelta(seconds=seconds))
        )


def attempts_metric(outcome: str) -> float:
    return REGISTRY.get_sample_value("forecourt_webhook_attempts_total", {"outcome": outcome}) or 0


# -- one attempt, each kind of answer -------------------------------------------------------


async def test_success_is_signed_logged_and_final(
    forecourt: MakeForecourt, workers: MakeWorker, receiver: Receiver
) -> None:
    fc = await forecourt()
    endpoint = await add_endpoint(fc, receiver.url(), headers={"X-Team": "analytics"})
    [delivery_id] = await publish(fc, endpoint)
    before = attempts_metric(SUCCEEDED)

    began = time.monotonic()
    assert await workers(fc).run_once() == 1
    window_ms = (time.monotonic() - began) * 1000

    [got] = receiver.received
    assert got.webhook_id == delivery_id
    assert got.headers["X-Team"] == "analytics"
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["User-Agent"].startswith("Forecourt-Webhooks/")
    signing.verify(SECRET, got.body, got.headers)
    standardwebhooks.Webhook(SECRET).verify(got.body, got.headers)
    body = orjson.loads(got.body)
    assert body["type"] == "dashboard.created"
    assert body["specversion"] == "1.0"
    assert body["data"] == {"index": 0, "name": "Q3 revenue"}

    row = await delivery(fc, delivery_id)
    assert row.status == SUCCEEDED
    assert row.attempts == 1
    assert row.last_status_code == 200
    assert row.last_error is None
    assert row.finished_at is not None
    assert row.lease_owner is None and row.lease_expires_at is None
    [attempt] = await attempts(fc, delivery_id)
    assert attempt.attempt_no == 1
    assert attempt.status_code == 200
    assert attempt.response_excerpt == "ok"
    assert attempt.error_class is None
    # Measured inside the run, in milliseconds: no longer than the run the test watched.
    assert 0 <= attempt.duration_ms <= window_ms + 1
    assert abs((utcnow() - attempt.started_at).total_seconds()) < 30
    assert attempts_metric(SUCCEEDED) == before + 1


async def test_server_error_is_retried_with_the_same_webhook_id_until_failed(
    forecourt: MakeForecourt, workers: MakeWorker, receiver: Receiver
) -> None:
    fc = await forecourt()
    receiver.reply("/down", Reply(status=500, body=b"database on fire"))
    endpoint = await add_endpoint(fc, receiver.url("/down"))
    [delivery_id] = await publish(fc, endpoint)
    worker = workers(fc)
    await worker.start()

    await settle(fc, [delivery_id])

    assert receiver.ids() == [delivery_id] * 3
    for got in receiver.received:  # each retry is signed afresh
        signing.verify(SECRET, got.body, got.headers)
    row = await delivery(fc, delivery_id)
    assert (row.status, row.attempts, row.last_status_code) == (FAILED, 3, 500)
    assert row.last_error == "HTTP 500"
    assert row.next_attempt_at is None and row.finished_at is not None
    logged = await attempts(fc, delivery_id)
    assert [a.attempt_no for a in logged] == [1, 2, 3]
    assert all(a.status_code == 500 for a in logged)
    assert all(a.response_excerpt == "database on fire" for a in logged)
    assert all(a.worker_id == worker.worker_id for a in logged)
    health = await endpoint_row(fc, endpoint.id)
    assert health.consecutive_failures == 3
    assert health.failing_since is not None
    assert health.enabled


async def test_recovery_after_failures_succeeds_and_resets_the_failure_run(
    forecourt: MakeForecourt, workers: MakeWorker, receiver: Receiver
) -> None:
    fc = await forecourt()
    receiver.reply("/flaky", lambda _, seen: Reply(status=503 if seen < 3 else 200))
    endpoint = await add_endpoint(fc, receiver.url("/flaky"))
    [delivery_id] = await publish(fc, endpoint)
    await workers(fc).start()

    await settle(fc, [delivery_id])

    row = await delivery(fc, delivery_id)
    assert (row.status, row.attempts) == (SUCCEEDED, 3)
    assert [a.status_code for a in await attempts(fc, delivery_id)] == [503, 503, 200]
    health = await endpoint_row(fc, endpoint.id)
    assert health.consecutive_failures == 0
    assert health.failing_since is None


async def test_client_error_is_final_at_once(
    forecourt: MakeForecourt, workers: MakeWorker, receiver: Receiver
) -> None:
    fc = await forecourt()
    receiver.reply("/strict", Reply(status=400, body=b"bad schema"))
    endpoint = await add_endpoint(fc, receiver.url("/strict"))
    [delivery_id] = await publish(fc, endpoint)

    await workers(fc).run_once()

    row = await delivery(fc, delivery_id)
    assert (row.status, row.attempts, row.last_status_code) == (FAILED, 1, 400)
    assert len(receiver.received) == 1


async def test_gone_disables_the_endpoint_and_emits_the_event(
    forecourt: MakeForecourt, workers: MakeWorker, receiver: Receiver
) -> None:
    fc = await forecourt()
    receiver.reply("/gone", Reply(status=410))
    endpoint = await add_endpoint(fc, receiver.url("/gone"))
    [first] = await publish(fc, endpoint)
    disabled: list[tuple[str, bool, bool]] = []

    async def on_disabled(session: AsyncSession, disabled_endpoint: Endpoint) -> None:
        disabled.append((disabled_endpoint.id, disabled_endpoint.enabled, session.in_transaction()))

    worker = workers(fc, on_endpoint_disabled=on_disabled)
    await worker.run_once()

    row = await delivery(fc, first)
    assert (row.status, row.attempts, row.last_status_code) == (FAILED, 1, 410)
    gone = await endpoint_row(fc, endpoint.id)
    assert not gone.enabled
    assert gone.disabled_at is not None
    assert gone.disabled_reason and "410" in gone.disabled_reason
    assert disabled == [(endpoint.id, False, True)]

    # A disabled endpoint's deliveries wait, untouched, and resume when it is re-enabled.
    [second] = await publish(fc, endpoint)
    receiver.reply("/gone", Reply(status=200))
    assert await worker.run_once() == 0
    assert (await delivery(fc, second)).status == PENDING
    async with fc.sessionmaker() as session, session.begin():
        await session.execute(
            update(Endpoint).where(Endpoint.id == endpoint.id).values(enabled=True)
        )
    assert await worker.run_once() == 1
    assert (await delivery(fc, second)).status == SUCCEEDED


async def test_too_many_requests_honours_retry_after(
    forecourt: MakeForecourt, workers: MakeWorker, receiver: Receiver
) -> None:
    fc = await forecourt()
    receiver.reply(
        "/busy",
        lambda _, seen: Reply(status=429, headers={"Retry-After": "2"}) if seen == 1 else Reply(),
    )
    endpoint = await add_endpoint(fc, receiver.url("/busy"))
    [delivery_id] = await publish(fc, endpoint)
    worker = workers(fc)

    before = utcnow()
    await worker.run_once()
    after = utcnow()

    row = await delivery(fc, delivery_id)
    assert row.status == RETRYING
    assert row.last_status_code == 429
    assert row.next_attempt_at is not None
    # Retry-After replaces the (zero) linear interval, unjittered: two seconds after the
    # answer, which came inside the run.
    due = timedelta(seconds=2)
    assert before + due <= row.next_attempt_at <= after + due
    wait = (row.next_attempt_at - utcnow()).total_seconds()
    assert await worker.run_once() == 0  # not due yet
    await asyncio.sleep(wait + 0.05)
    assert await worker.run_once() == 1
    assert (await delivery(fc, delivery_id)).status == SUCCEEDED
    assert receiver.ids() == [delivery_id, delivery_id]


async def test_a_receiver_that_hangs_times_out_and_is_retried(
    forecourt: MakeForecourt, workers: MakeWorker, receiver: Receiver
) -> None:
    fc = await forecourt()
    receiver.reply("/hang", Reply(delay_s=NEVER_S))
    endpoint = await add_endpoint(fc, receiver.url("/hang"), timeout_s=0.5)
    [delivery_id] = await publish(fc, endpoint)

    began = time.monotonic()
    # The receiver never answers: only the endpoint's timeout ends the attempt.
    await asyncio.wait_for(workers(fc).run_once(), HANG_S)
    window_ms = (time.monotonic() - began) * 1000
    assert receiver.completed == []

    row = await delivery(fc, delivery_id)
    assert row.status == RETRYING
    assert row.last_status_code is None
    assert row.last_error is not None and row.last_error.startswith("timeout")
    [attempt] = await attempts(fc, delivery_id)
    assert attempt.status_code is None
    assert attempt.error_class == "timeout"
    assert attempt.response_excerpt is None
    assert 450 <= attempt.duration_ms <= window_ms + 1  # the 0.5 s timeout, not less


async def test_a_closed_connection_is_a_retried_connection_error(
    forecourt: MakeForecourt, workers: MakeWorker, receiver: Receiver
) -> None:
    fc = await forecourt()
    receiver.reply("/drop", Reply(close=True))
    endpoint = await add_endpoint(fc, receiver.url("/drop"))
    [delivery_id] = await publish(fc, endpoint)

    await workers(fc).run_once()

    [attempt] = await attempts(fc, delivery_id)
    assert attempt.status_code is None
    assert attempt.error_class == "connection"
    assert attempt.error_message
    assert (await delivery(fc, delivery_id)).status == RETRYING


async def test_nothing_listening_is_a_retried_connection_error(
    forecourt: MakeForecourt, workers: MakeWorker
) -> None:
    fc = await forecourt()
    endpoint = await add_endpoint(fc, f"http://127.0.0.1:{free_port()}/hook")
    [delivery_id] = await publish(fc, endpoint)

    await workers(fc).run_once()

    [attempt] = await attempts(fc, delivery_id)
    assert (attempt.status_code, attempt.error_class) == (None, "connection")
    assert (await delivery(fc, delivery_id)).status == RETRYING


async def test_redirects_are_not_followed(
    forecourt: MakeForecourt, workers: MakeWorker, receiver: Receiver
) -> None:
    fc = await forecourt()
    receiver.reply("/moved", Reply(status=302, headers={"Location": receiver.url("/elsewhere")}))
    endpoint = await add_endpoint(fc, receiver.url("/moved"))
    [delivery_id] = await publish(fc, endpoint)

    await workers(fc).run_once()

    assert [r.path for r in receiver.received] == ["/moved"]
    row = await delivery(fc, delivery_id)
    assert (row.status, row.last_status_code) == (FAILED, 302)


async def test_response_excerpt_is_truncated(
    forecourt: MakeForecourt, workers: MakeWorker, receiver: Receiver
) -> None:
    fc = await forecourt()
    receiver.reply("/chatty", Reply(body=b"x" * 100_000 + b"\xff"))
    endpoint = await add_endpoint(fc, receiver.url("/chatty"))
    [delivery_id] = await publish(fc, endpoint)

    await workers(fc).run_once()

    [attempt] = await attempts(fc, delivery_id)
    assert attempt.status_code == 200
    assert attempt.response_excerpt == "x" * EXCERPT_BYTES


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_ssrf_guard_refuses_loopback_by_default(
    forecourt: MakeForecourt, workers: MakeWorker, receiver: Receiver, host: str
) -> None:
    fc = await forecourt(webhook_allow_private="false")
    endpoint = await add_endpoint(fc, f"http://{host}:{receiver.port}/hook")
    [delivery_id] = await publish(fc, endpoint)

    await workers(fc).run_once()

    assert receiver.received == []
    row = await delivery(fc, delivery_id)
    assert (row.status, row.attempts) == (FAILED, 1)  # final, although the policy allows 3
    [attempt] = await attempts(fc, delivery_id)
    assert (attempt.status_code, attempt.error_class) == (None, "ssrf")
    assert attempt.error_message
    if host == "localhost":  # a name: refused without saying what it resolves to
        assert "localhost resolves to an address that is not allowed" in attempt.error_message
        assert "127.0.0.1" not in attempt.error_message
    else:
        assert "loopback" in attempt.error_message


async def test_secret_rotation_signs_with_both_secrets(
    forecourt: MakeForecourt, workers: MakeWorker, receiver: Receiver
) -> None:
    fc = await forecourt()
    box = SecretBox(fc.settings.resolved_secret_key, "webhook-secret")
    rotating = await add_endpoint(
        fc,
        receiver.url("/rotating"),
        previous_secret_encrypted=box.encrypt(OLD_SECRET),
        previous_secret_expires_at=utcnow() + timedelta(hours=1),
    )
    expired = await add_endpoint(
        fc,
        receiver.url("/expired"),
        previous_secret_encrypted=box.encrypt(OLD_SECRET),
        previous_secret_expires_at=utcnow() - timedelta(seconds=1),
    )
    await publish(fc, rotating)
    await publish(fc, expired)

    await workers(fc).run_once()

    by_path = {r.path: r for r in receiver.received}
    during = by_path["/rotating"]
    assert len(during.headers["webhook-signature"].split()) == 2
    signing.verify(SECRET, during.body, during.headers)
    signing.verify(OLD_SECRET, during.body, during.headers)
    after = by_path["/expired"]
    assert len(after.headers["webhook-signature"].split()) == 1
    signing.verify(SECRET, after.body, after.headers)
    with pytest.raises(signing.WebhookVerificationError):
        signing.verify(OLD_SECRET, after.body, after.headers)


# -- endpoint health -------------------------------------------------------------------------


async def test_endpoint_failing_for_the_window_is_disabled(
    forecourt: MakeForecourt, workers: MakeWorker, receiver: Receiver
) -> None:
    fc = await forecourt(endpoint_disable_after_s=NEVER_S, endpoint_disable_min_failures=3)
    receiver.reply("/down", Reply(status=500))
    endpoint = await add_endpoint(
        fc, receiver.url("/down"), retry_policy={"kind": "none", "max_attempts": 1}
    )
    events: list[str] = []

    async def on_disabled(session: AsyncSession, disabled: Endpoint) -> None:
        # What the events service will do: write endpoint.disabled in the same transaction.
        event_id = new_id("evt")
        session.add(
            Event(
                id=event_id,
                tenant_id=disabled.tenant_id,
                ce_id=event_id,
                source="/forecourt",
                type="endpoint.disabled",
                time=utcnow(),
                data={"endpoint_id": disabled.id, "reason": disabled.disabled_reason},
                severity="warning",
                size_bytes=0,
            )
        )
        events.append(event_id)

    worker = workers(fc, on_endpoint_disabled=on_disabled)
    await publish(fc, endpoint, count=3)
    assert await worker.run_once() == 3
    # Enough failures, but not for long enough yet.
    health = await endpoint_row(fc, endpoint.id)
    assert (health.enabled, health.consecutive_failures) == (True, 3)

    await backdate_failures(fc, endpoint.id, NEVER_S + 1)
    await publish(fc, endpoint)
    assert await worker.run_once() == 1

    health = await endpoint_row(fc, endpoint.id)
    assert not health.enabled
    assert health.consecutive_failures == 4
    assert health.disabled_reason and "4 in a row" in health.disabled_reason
    [event_id] = events
    async with fc.sessionmaker() as session:
        stored = await session.get(Event, event_id)
    assert stored is not None
    assert stored.data == {"endpoint_id": endpoint.id, "reason": health.disabled_reason}


async def test_a_success_ends_the_failure_run(
    forecourt: MakeForecourt, workers: MakeWorker, receiver: Receiver
) -> None:
    fc = await forecourt(endpoint_disable_after_s=NEVER_S, endpoint_disable_min_failures=2)
    endpoint = await add_endpoint(
        fc, receiver.url("/h"), retry_policy={"kind": "none", "max_attempts": 1}
    )
    worker = workers(fc)

    async def one(status: int) -> None:
        receiver.reply("/h", Reply(status=status))
        await publish(fc, endpoint)
        assert await worker.run_once() == 1

    await one(500)
    await backdate_failures(fc, endpoint.id, NEVER_S + 1)
    await one(200)
    await one(500)
    await one(500)
    # Without the reset the run would be 3 failures long and older than the window.
    health = await endpoint_row(fc, endpoint.id)
    assert health.enabled
    assert health.consecutive_failures == 2


# -- rate limit and concurrency ---------------------------------------------------------------


async def test_rate_limit_postpones_without_counting_an_attempt(
    forecourt: MakeForecourt, workers: MakeWorker, receiver: Receiver
) -> None:
    fc = await forecourt()
    endpoint = await add_endpoint(fc, receiver.url(), rate_limit_per_s=2)
    ids = await publish(fc, endpoint, count=5)

    before = utcnow()
    assert await workers(fc).run_once() == 5

    assert len(receiver.received) == 2
    rows = [await delivery(fc, i) for i in ids]
    sent = [r for r in rows if r.status == SUCCEEDED]
    held = [r for r in rows if r.status == PENDING]
    assert (len(sent), len(held)) == (2, 3)
    for row in held:
        assert row.attempts == 0
        assert row.lease_owner is None
        # Postponed by the limiter's wait (a second at least) from when it was held back.
        assert row.next_attempt_at is not None
        assert row.next_attempt_at >= before + timedelta(seconds=1)
        assert await attempts(fc, row.id) == []


async def test_per_endpoint_concurrency_is_bounded(
    forecourt: MakeForecourt, workers: MakeWorker, receiver: Receiver
) -> None:
    fc = await forecourt(endpoint_concurrency=3, delivery_concurrency=20)
    receiver.reply("/slow", Reply(delay_s=0.2))
    endpoint = await add_endpoint(fc, receiver.url("/slow"))
    ids = await publish(fc, endpoint, count=12)

    await workers(fc).run_once()

    assert await settle(fc, ids) == dict.fromkeys(ids, SUCCEEDED)
    assert receiver.max_in_flight == 3


async def test_attempts_waiting_for_their_commit_hold_no_connection(
    forecourt: MakeForecourt, workers: MakeWorker, receiver: Receiver
) -> None:
    """With two exchanges at once, four deliveries are all sent while the first two attempts
    still wait to be recorded; the fifth waits for a recorded one."""
    fc = await forecourt(delivery_concurrency=2, delivery_batch_size=2)
    endpoint = await add_endpoint(fc, receiver.url())
    worker = workers(fc)
    release = asyncio.Event()

    async def slow_record(batch: Any) -> None:
        await release.wait()
        await worker.queue.record(batch)

    worker._recorder._write = slow_record
    parked = _Parking()
    worker._slot_free = parked  # the loop waits on it when it may claim nothing
    ids = await publish(fc, endpoint, count=5)
    await worker.start()

    await receiver.wait_for(lambda: len(receiver.completed) == 4, what="4 deliveries sent")
    # Parked, unsignalled, with the four exchanges over: a fifth, had it been allowed, would
    # have been claimed instead (and the loop would never park here).
    await receiver.wait_for(
        lambda: parked.waiting and not parked.is_set() and not worker._exchanging,
        timeout_s=HANG_S,
        what="the worker to wait for a recorded attempt",
    )
    assert len(receiver.completed) == 4
    assert (await delivery(fc, ids[-1])).status == PENDING
    assert worker.in_flight == 4
    release.set()
    assert await settle(fc, ids) == dict.fromkeys(ids, SUCCEEDED)
    assert len(receiver.completed) == 5


class _Parking(asyncio.Event):
    """An event that tells whether someone is waiting on it."""

    waiting = False

    async def wait(self) -> Literal[True]:
        self.waiting = True
        try:
            return await super().wait()
        finally:
            self.waiting = False


async def test_wake_delivers_without_waiting_for_the_poll(
    forecourt: MakeForecourt, workers: MakeWorker, receiver: Receiver
) -> None:
    # The next poll is an hour away: only a wake can deliver within the test.
    fc = await forecourt(delivery_poll_interval_s=NEVER_S)
    endpoint = await add_endpoint(fc, receiver.url())
    worker = workers(fc)
    claims = FirstClaims(worker)
    await worker.start()
    await claims.wait(receiver)  # the worker has found nothing and sleeps

    ids = await publish(fc, endpoint)
    worker.wake()
    await receiver.wait_for(lambda: len(receiver.completed) == 1, timeout_s=HANG_S, what="wake")
    await settle(fc, ids, timeout_s=HANG_S)
    assert claims.done == 2


# -- leases, stop, takeover -------------------------------------------------------------------


async def test_graceful_stop_finishes_quick_deliveries(
    forecourt: MakeForecourt, workers: MakeWorker, receiver: Receiver
) -> None:
    fc = await forecourt()
    receiver.reply("/quick", Reply(delay_s=0.3))
    endpoint = await add_endpoint(fc, receiver.url("/quick"))
    ids = await publish(fc, endpoint, count=4)
    worker = workers(fc)
    await worker.start()
    await receiver.wait_for(lambda: receiver.in_flight() == 4, what="4 requests in flight")

    await worker.stop(deadline_s=5.0)

    assert await statuses(fc, ids) == dict.fromkeys(ids, SUCCEEDED)
    assert worker.in_flight == 0


async def test_graceful_stop_releases_what_it_cannot_finish(
    forecourt: MakeForecourt, workers: MakeWorker, receiver: Receiver
) -> None:
    fc = await forecourt()
    receiver.reply("/slow", Reply(delay_s=NEVER_S))
    endpoint = await add_endpoint(fc, receiver.url("/slow"), timeout_s=5.0)
    ids = await publish(fc, endpoint, count=4)
    worker = workers(fc)
    await worker.start()
    await receiver.wait_for(lambda: receiver.in_flight() == 4, what="4 requests in flight")

    # Waiting for the receivers would end in a 5 s timeout: attempts recorded, not released.
    await asyncio.wait_for(worker.stop(deadline_s=0.2), HANG_S)

    for delivery_id in ids:
        row = await delivery(fc, delivery_id)
        assert (row.status, row.attempts) == (PENDING, 0)
        assert row.lease_owner is None and row.lease_expires_at is None
        assert row.next_attempt_at is not None and row.next_attempt_at <= utcnow()
        assert await attempts(fc, delivery_id) == []
    assert worker.in_flight == 0

    # Another worker picks them up straight away.
    receiver.reply("/slow", Reply())
    assert await workers(fc).run_once() == 4
    assert await statuses(fc, ids) == dict.fromkeys(ids, SUCCEEDED)


async def test_an_expired_lease_is_taken_over(
    forecourt: MakeForecourt, workers: MakeWorker, receiver: Receiver
) -> None:
    fc = await forecourt()
    endpoint = await add_endpoint(fc, receiver.url())
    [delivery_id] = await publish(fc, endpoint)
    dead = workers(fc, worker_id="dead-worker")
    alive = workers(fc, worker_id="alive-worker")

    [claim] = await dead.claim(10)  # and never processes it
    row = await delivery(fc, delivery_id)
    assert (row.status, row.lease_owner) == (DELIVERING, "dead-worker")
    assert await alive.run_once() == 0  # the lease still holds

    async with fc.sessionmaker() as session, session.begin():
        await session.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    assert await alive.run_once() == 1

    row = await delivery(fc, delivery_id)
    assert (row.status, row.attempts, row.lease_owner) == (SUCCEEDED, 1, None)
    [attempt] = await attempts(fc, delivery_id)
    assert attempt.worker_id == "alive-worker"

    # The first worker wakes up late: its POST goes out (at-least-once) and is logged, but it
    # no longer owns the delivery, so the delivery's state is not touched.
    await dead.process(claim)
    assert receiver.ids() == [delivery_id, delivery_id]
    logged = await attempts(fc, delivery_id)
    assert sorted(a.worker_id or "" for a in logged) == ["alive-worker", "dead-worker"]
    row = await delivery(fc, delivery_id)
    assert (row.status, row.attempts) == (SUCCEEDED, 1)


async def test_heartbeat_keeps_a_slow_delivery_from_being_taken_over(
    forecourt: MakeForecourt, workers: MakeWorker, receiver: Receiver
) -> None:
    fc = await forecourt(delivery_lease_s=0.6)
    receiver.reply("/slow", Reply(delay_s=1.5))
    endpoint = await add_endpoint(fc, receiver.url("/slow"), timeout_s=5.0)
    ids = await publish(fc, endpoint, count=3)
    first = workers(fc, worker_id="first")
    await first.start()
    await receiver.wait_for(lambda: receiver.in_flight() == 3, what="3 requests in flight")
    second = workers(fc, worker_id="second")
    await second.start()

    await settle(fc, ids)

    assert sorted(receiver.ids()) == sorted(ids)  # each exactly once
    for delivery_id in ids:
        [attempt] = await attempts(fc, delivery_id)
        assert attempt.worker_id == "first"


async def test_deliver_now_attempts_at_once(
    forecourt: MakeForecourt, workers: MakeWorker, receiver: Receiver
) -> None:
    fc = await forecourt()
    endpoint = await add_endpoint(fc, receiver.url(), rate_limit_per_s=1)
    [delivery_id] = await publish(fc, endpoint)
    async with fc.sessionmaker() as session, session.begin():
        await session.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id)
            .values(status=RETRYING, attempts=1, next_attempt_at=utcnow() + timedelta(hours=5))
        )
    worker = workers(fc)

    attempt = await worker.deliver_now(delivery_id)

    assert (attempt.attempt_no, attempt.status_code, attempt.delivery_id) == (2, 200, delivery_id)
    assert receiver.ids() == [delivery_id]
    assert (await delivery(fc, delivery_id)).status == SUCCEEDED
    with pytest.raises(NotFound):
        await worker.deliver_now("dlv_missing")
    [other] = await publish(fc, endpoint)
    assert len(await workers(fc, worker_id="holder").claim(10)) == 1
    with pytest.raises(Conflict):
        await worker.deliver_now(other)


@pytest.mark.postgres
async def test_two_workers_never_deliver_one_delivery_concurrently(
    backend: str, forecourt: MakeForecourt, workers: MakeWorker, receiver: Receiver
) -> None:
    if backend != "postgres":
        pytest.skip("concurrent claiming by several nodes is what PostgreSQL is for")
    settings = {"delivery_batch_size": 10, "delivery_concurrency": 16, "endpoint_concurrency": 16}
    fc_a = await forecourt(**settings)
    fc_b = await forecourt(**settings)
    receiver.reply("/hook", Reply(delay_s=0.01))
    endpoints = [await add_endpoint(fc_a, receiver.url()) for _ in range(4)]
    ids: list[str] = []
    for endpoint in endpoints:
        ids.extend(await publish(fc_a, endpoint, count=50))
    a = workers(fc_a, worker_id="worker-a")
    b = workers(fc_b, worker_id="worker-b")
    await asyncio.gather(a.start(), b.start())

    assert await settle(fc_a, ids, timeout_s=30.0) == dict.fromkeys(ids, SUCCEEDED)

    assert receiver.overlaps == []
    assert Counter(receiver.ids()) == Counter(ids)  # every one exactly once: no failures
    async with fc_a.sessionmaker() as session:
        rows = (await session.execute(select(Attempt.delivery_id, Attempt.worker_id))).all()
    assert Counter(row.delivery_id for row in rows) == Counter(ids)
    assert {row.worker_id for row in rows} == {"worker-a", "worker-b"}


class _CrashingHandoff:
    """A local worker that reserves room for new deliveries, then dies before adopting them."""

    worker_id = "crashed-worker"
    lease = timedelta(seconds=30)

    def __init__(self) -> None:
        self.reserved = 0
        self.adopted: list[str] = []

    def reserve(self, wanted: int) -> int:
        self.reserved += wanted
        return wanted

    def release(self, count: int) -> None:
        self.reserved -= count

    def adopt(self, claims: Any) -> None:
        self.adopted += [claim.id for claim in claims]  # and never delivers them


async def _publish_through_api(fc: Forecourt, count: int) -> list[str]:
    """Publish ``count`` events through the event service (the API's path); delivery ids."""
    from forecourt.events.schemas import EventPublish
    from forecourt.principal import Principal

    async with fc.sessionmaker() as session:
        tenant = await session.scalar(select(Endpoint.tenant_id))
        assert tenant is not None
        actor = Principal("system", None, tenant, frozenset({"admin"}))
        for index in range(count):
            body = EventPublish(type="dashboard.created", data={"index": index})
            await fc.events(session).publish(actor, body)
        rows = await session.scalars(select(Delivery.id).order_by(Delivery.created_at))
        return list(rows)


async def test_deliveries_handed_to_the_local_worker_are_committed_leased_and_survive_it(
    forecourt: MakeForecourt, workers: MakeWorker, receiver: Receiver
) -> None:
    fc = await forecourt()
    await add_endpoint(fc, receiver.url())
    handoff = _CrashingHandoff()
    fc.event_writer.handoff = handoff

    ids = await _publish_through_api(fc, 3)

    assert sorted(handoff.adopted) == sorted(ids)
    for delivery_id in ids:
        row = await delivery(fc, delivery_id)
        assert (row.status, row.lease_owner) == (DELIVERING, "crashed-worker")
        assert row.lease_expires_at is not None and row.lease_expires_at > utcnow()
    alive = workers(fc, worker_id="alive-worker")
    assert await alive.run_once() == 0  # the dead worker's lease still holds

    async with fc.sessionmaker() as session, session.begin():
        await session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids))
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    assert await alive.run_once() == 3
    assert sorted(receiver.ids()) == sorted(ids)
    assert set((await statuses(fc, ids)).values()) == {SUCCEEDED}


async def test_a_running_worker_delivers_what_it_is_handed_without_claiming(
    forecourt: MakeForecourt, workers: MakeWorker, receiver: Receiver
) -> None:
    fc = await forecourt(delivery_poll_interval_s=NEVER_S)  # claiming alone takes an hour
    await add_endpoint(fc, receiver.url())
    worker = workers(fc, worker_id="local-worker")
    claims = FirstClaims(worker)
    await worker.start()
    await claims.wait(receiver)  # a late first claim would deliver them without a hand-off
    fc.event_writer.handoff = worker

    ids = await _publish_through_api(fc, 5)

    await settle(fc, ids)
    assert claims.done == 1
    assert sorted(receiver.ids()) == sorted(ids)
    for delivery_id in ids:
        [attempt] = await attempts(fc, delivery_id)
        assert attempt.worker_id == "local-worker"


async def test_hand_offs_beyond_the_free_slots_wait_in_the_local_backlog(
    forecourt: MakeForecourt, workers: MakeWorker, receiver: Receiver
) -> None:
    """Two slots and a backlog of four times two: ten handed-off deliveries are all leased to
    the worker and delivered in turn without a claim; an eleventh stays queued."""
    fc = await forecourt(delivery_poll_interval_s=NEVER_S, delivery_concurrency=2)
    receiver.reply("/hook", Reply(delay_s=0.2))
    await add_endpoint(fc, receiver.url())
    worker = workers(fc, worker_id="local-worker")
    claims = FirstClaims(worker)
    await worker.start()
    await claims.wait(receiver)  # the first (empty) claim is behind it; the next is an hour away
    fc.event_writer.handoff = worker

    ids = await _publish_through_api(fc, 11)

    leased = {i: (await delivery(fc, i)).lease_owner for i in ids}
    assert list(leased.values()).count("local-worker") == 10
    await receiver.wait_for(lambda: len(receiver.completed) == 10, timeout_s=HANG_S, what="sent")
    assert receiver.max_in_flight == 2
    assert claims.done == 1
    queued = [i for i, owner in leased.items() if owner is None]
    assert (await delivery(fc, queued[0])).status == PENDING
    assert sorted(receiver.ids()) == sorted(i for i in ids if i not in queued)


async def test_stop_hands_the_local_backlog_back(
    forecourt: MakeForecourt, workers: MakeWorker, receiver: Receiver
) -> None:
    fc = await forecourt(delivery_concurrency=1, delivery_batch_size=2)
    receiver.reply("/hook", Reply(delay_s=3.0))
    await add_endpoint(fc, receiver.url(), timeout_s=5.0)
    worker = workers(fc, worker_id="local-worker")
    await worker.start()
    fc.event_writer.handoff = worker

    ids = await _publish_through_api(fc, 3)
    await receiver.wait_for(lambda: receiver.in_flight() == 1, what="the first in flight")
    await worker.stop(deadline_s=0.2)

    rows = [await delivery(fc, i) for i in ids]
    assert [(r.status, r.lease_owner, r.attempts) for r in rows] == [(PENDING, None, 0)] * 3
    assert len(receiver.received) == 1
