"""The claim path never strands what it claimed: a failure injected at each step (building one
row's body, reading the claimed rows, the hand-off of fresh deliveries, the local backlog, a
single attempt on request) leaves every other delivery delivered to a real receiver and no
delivery ``delivering``; a delivery that cannot be sent is failed with its reason, alone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from conftest import Harness
from forecourt.core import Forecourt
from forecourt.errors import Conflict
from forecourt.events.models import Event
from forecourt.webhooks import queue as queue_module
from forecourt.webhooks import targets
from forecourt.webhooks.delivery import DeliveryWorker
from forecourt.webhooks.models import DELIVERING, FAILED, SUCCEEDED, Delivery
from receivers import Receiver, add_endpoint, nodes, publish

FAST = {
    "webhook_allow_private": "127.0.0.0/8",
    "delivery_poll_interval_s": 0.05,
    "delivery_lease_s": 30.0,
    "delivery_shutdown_grace_s": 2.0,
}
HANG_S = 60.0  # only catches a hang
TYPE = "claim.test"

MakeForecourt = Callable[..., Awaitable[Forecourt]]


@pytest.fixture
async def forecourt(settings_factory: Any) -> AsyncIterator[MakeForecourt]:
    async with nodes(settings_factory, **FAST) as make:
        yield make


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as started:
        yield started


async def states(fc: Forecourt) -> dict[str, str]:
    async with fc.sessionmaker() as session:
        rows = await session.execute(select(Delivery.id, Delivery.status))
        return {row.id: row.status for row in rows}


async def settle(fc: Forecourt, expected: dict[str, str]) -> None:
    """Wait until every delivery of ``expected`` has its state (fail after HANG_S)."""
    deadline = time.monotonic() + HANG_S
    while True:
        found = await states(fc)
        if all(found.get(i) == s for i, s in expected.items()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"deliveries did not settle: {found}")
        await asyncio.sleep(0.05)


async def delivering(fc: Forecourt) -> int:
    async with fc.sessionmaker() as session:
        count = await session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.status == DELIVERING)
        )
    return int(count or 0)


async def poison(fc: Forecourt, delivery_id: str) -> None:
    """Give the delivery's event data the codec cannot encode (300 levels deep), as a row
    written before the codec's limits could hold."""
    deep: Any = 1
    for _ in range(300):
        deep = [deep]
    async with fc.sessionmaker() as session, session.begin():
        found = await session.get(Delivery, delivery_id)
        assert found is not None
        event = await session.get(Event, found.event_id)
        assert event is not None
        event.data = deep


async def test_a_row_whose_body_cannot_be_built_is_failed_alone(
    forecourt: MakeForecourt, receiver: Receiver
) -> None:
    fc = await forecourt()
    first = await add_endpoint(fc, receiver.url("/a"))
    second = await add_endpoint(fc, receiver.url("/b"))
    ids = await publish(fc, first, 4) + await publish(fc, second, 4)
    await poison(fc, ids[1])
    worker = DeliveryWorker(fc)
    try:
        assert await worker.run_once() == len(ids) - 1
    finally:
        await worker.stop(deadline_s=0)
    expected = {i: SUCCEEDED for i in ids} | {ids[1]: FAILED}
    assert await states(fc) == expected
    assert sorted(receiver.ids()) == sorted(i for i in ids if i != ids[1])
    async with fc.sessionmaker() as session:
        failed = await session.get(Delivery, ids[1])
    assert failed is not None and "cannot be built" in (failed.last_error or "")
    # Asked for again, it is refused with its reason and stays failed, not delivering.
    retrier = DeliveryWorker(fc)
    try:
        with pytest.raises(Conflict, match="cannot be sent"):
            await retrier.deliver_now(ids[1])
    finally:
        await retrier.stop(deadline_s=0)
    assert (await states(fc))[ids[1]] == FAILED


async def test_a_body_builder_failing_for_one_row_fails_only_that_row(
    forecourt: MakeForecourt, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    fc = await forecourt()
    endpoint = await add_endpoint(fc, receiver.url())
    ids = await publish(fc, endpoint, 6)
    async with fc.sessionmaker() as session:
        bad_event = await session.scalar(select(Delivery.event_id).where(Delivery.id == ids[3]))
    real = queue_module.build_body

    def build_body(row: Any) -> bytes:
        if row.id == bad_event:
            raise RuntimeError("injected")
        return real(row)

    monkeypatch.setattr(queue_module, "build_body", build_body)
    worker = DeliveryWorker(fc)
    await worker.start()
    try:
        await settle(fc, {i: SUCCEEDED for i in ids} | {ids[3]: FAILED})
    finally:
        await worker.stop(deadline_s=0)
    assert await delivering(fc) == 0
    assert sorted(receiver.ids()) == sorted(i for i in ids if i != ids[3])


@pytest.mark.parametrize("step", ["endpoints", "bodies"])
async def test_a_failure_reading_the_claimed_rows_gives_every_row_back(
    forecourt: MakeForecourt, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    fc = await forecourt()
    endpoint = await add_endpoint(fc, receiver.url())
    ids = await publish(fc, endpoint, 5)
    failures = [1]

    def failing(real: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapper(*args: Any) -> Any:
            if failures:
                failures.pop()
                raise RuntimeError("injected")
            return await real(*args)

        return wrapper

    if step == "endpoints":
        monkeypatch.setattr(targets, "by_id_checked", failing(targets.by_id_checked))
    else:
        monkeypatch.setattr(queue_module, "_bodies", failing(queue_module._bodies))
    worker = DeliveryWorker(fc)
    try:
        with pytest.raises(RuntimeError, match="injected"):
            await worker.claim(10)
        assert await delivering(fc) == 0  # given back at once, not when the lease runs out
        assert set((await states(fc)).values()) == {"pending"}
        assert await worker.run_once() == len(ids)
    finally:
        await worker.stop(deadline_s=0)
    assert await states(fc) == {i: SUCCEEDED for i in ids}
    assert sorted(receiver.ids()) == sorted(ids)


async def api_publish(h: Harness, count: int) -> None:
    for i in range(count):
        response = await h.client.post(
            "/api/v1/events", json={"type": TYPE, "data": {"i": i}}, headers=h.auth()
        )
        assert response.status_code == 201, response.text


async def node_with_endpoint(harness_factory: Any, receiver: Receiver, **settings: Any) -> Harness:
    h: Harness = await harness_factory(**{**FAST, **settings})
    made = await h.client.post("/api/v1/event-types", json={"name": TYPE}, headers=h.auth())
    assert made.status_code == 201, made.text
    hook = await h.client.post(
        "/api/v1/webhooks", json={"url": receiver.url(), "event_types": [TYPE]}, headers=h.auth()
    )
    assert hook.status_code == 201, hook.text
    return h


async def all_delivered(h: Harness, receiver: Receiver, worker: DeliveryWorker, count: int) -> None:
    """Wait until ``count`` deliveries reached the receiver and all succeeded; then none is
    ``delivering`` and the worker holds none."""
    await receiver.wait_for(
        lambda: len(set(receiver.ids())) == count, HANG_S, f"{count} deliveries"
    )
    await settle(h.fc, {i: SUCCEEDED for i in await states(h.fc)})
    assert await delivering(h.fc) == 0
    assert worker.in_flight == 0


def fail_spawn(worker: DeliveryWorker, monkeypatch: pytest.MonkeyPatch, calls: set[int]) -> None:
    """Make the worker's ``_spawn`` raise on the given calls (1-based)."""
    real = worker._spawn
    seen = [0]

    def spawn(claim: Any) -> None:
        seen[0] += 1
        if seen[0] in calls:
            raise RuntimeError("injected")
        real(claim)

    monkeypatch.setattr(worker, "_spawn", spawn)


async def test_a_failed_hand_off_gives_its_deliveries_back(
    harness_factory: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await node_with_endpoint(harness_factory, receiver)
    worker = h.fc.worker
    assert worker is not None and h.fc.event_writer.handoff is worker
    fail_spawn(worker, monkeypatch, {1})
    await api_publish(h, 3)
    await all_delivered(h, receiver, worker, 3)


async def test_a_failure_starting_the_local_backlog_gives_it_back(
    harness_factory: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await node_with_endpoint(harness_factory, receiver, delivery_concurrency=1)
    worker = h.fc.worker
    assert worker is not None
    gate = asyncio.Event()
    real_send = worker._sender.send

    async def send(*args: Any) -> Any:
        await gate.wait()  # the first delivery holds the only slot: the rest go to the backlog
        return await real_send(*args)

    monkeypatch.setattr(worker._sender, "send", send)
    fail_spawn(worker, monkeypatch, {2})  # the first start out of the backlog
    response = await h.client.post(
        "/api/v1/events/batch",
        json={"events": [{"type": TYPE, "data": {"i": i}} for i in range(4)]},
        headers=h.auth(),
    )
    assert response.status_code == 201, response.text
    assert len(worker._backlog) == 3
    gate.set()
    await all_delivered(h, receiver, worker, 4)


async def test_a_single_attempt_that_fails_unexpectedly_does_not_hold_its_delivery(
    harness_factory: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await node_with_endpoint(harness_factory, receiver)
    assert h.fc.worker is not None
    await h.fc.worker.stop()  # nothing in the background: the test drives the attempts
    worker = DeliveryWorker(h.fc)
    await api_publish(h, 1)
    [delivery_id] = await states(h.fc)
    real_send = worker._sender.send
    failures = [1]

    async def send(*args: Any) -> Any:
        if failures:
            failures.pop()
            raise RuntimeError("injected")
        return await real_send(*args)

    monkeypatch.setattr(worker._sender, "send", send)
    try:
        with pytest.raises(RuntimeError, match="injected"):
            await worker.deliver_now(delivery_id)
        await settle(h.fc, {delivery_id: "pending"})
        assert worker.in_flight == 0
        retried = await h.client.post(f"/api/v1/deliveries/{delivery_id}/retry", headers=h.auth())
        assert retried.status_code == 200, retried.text  # not 409: nothing holds it
        attempt = await worker.deliver_now(delivery_id)
    finally:
        await worker.stop(deadline_s=0)
    assert attempt.status_code == 200
    assert receiver.ids() == [delivery_id]


async def test_an_attempt_that_keeps_failing_unexpectedly_waits_and_holds_nothing(
    forecourt: MakeForecourt, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    fc = await forecourt()
    good = await add_endpoint(fc, receiver.url("/good"))
    bad = await add_endpoint(fc, receiver.url("/bad"))
    good_ids = await publish(fc, good, 3)
    [bad_id] = await publish(fc, bad, 1)
    worker = DeliveryWorker(fc)
    real_send = worker._sender.send
    calls: list[str] = []

    async def send(url: str, *args: Any) -> Any:
        if url.endswith("/bad"):
            calls.append(url)
            raise RuntimeError("injected")
        return await real_send(url, *args)

    monkeypatch.setattr(worker._sender, "send", send)
    await worker.start()
    try:
        await settle(fc, {i: SUCCEEDED for i in good_ids} | {bad_id: "pending"})
        async with fc.sessionmaker() as session:
            row = await session.get(Delivery, bad_id)
        assert row is not None and row.lease_owner is None
        assert row.next_attempt_at is not None and row.next_attempt_at > row.updated_at
        # Several polls later it has not been tried again: it waits instead of spinning.
        polls = 0

        async def counted(limit: int) -> Any:
            nonlocal polls
            polls += 1
            return await real_claim(limit)

        real_claim = worker.queue.claim
        monkeypatch.setattr(worker.queue, "claim", counted)
        worker.wake()
        await receiver.wait_for(lambda: polls >= 3, HANG_S, "three polls")
        assert calls == [receiver.url("/bad")]
    finally:
        await worker.stop(deadline_s=0)
    assert await delivering(fc) == 0
