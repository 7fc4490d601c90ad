"""A subscriber with a send function attached: sends that complete at once run in the
fan-out, a send that waits is finished by the pump with what queued behind it, in order, and
a full queue behind a stuck send ends the subscriber with 4008."""

from __future__ import annotations

import asyncio
import json

from forecourt.streams import channels
from forecourt.streams.messages import ZERO, StreamMessage
from forecourt.streams.subscriber import SLOW_CLIENT, Ended, Subscriber


def subscriber(queue_size: int = 8) -> Subscriber:
    sub = Subscriber(
        tenant_id="t", actor="key:k", queue_size=queue_size, max_subscriptions=5, head=ZERO
    )
    sub.subscribe([channels.parse("alerts")])
    return sub


def message(n: int) -> StreamMessage:
    m = StreamMessage("alert", "t", channels.ALERTS, channels.ALERTS, {"n": n})
    m.key = (1, n)
    return m


async def test_sends_in_order_across_a_send_that_waits() -> None:
    sub = subscriber()
    sent: list[int] = []
    room = asyncio.Event()
    room.set()
    five = asyncio.Event()

    async def send(text: str) -> None:
        await room.wait()
        sent.append(json.loads(text)["n"])
        if len(sent) == 5:
            five.set()

    sub.attach(send)
    sub.offer(message(1))
    assert len(sent) == 1  # sent in the fan-out itself
    room.clear()
    for n in range(2, 6):
        sub.offer(message(n))
    assert len(sent) == 1
    room.set()
    await asyncio.wait_for(five.wait(), 10)
    assert sent == [1, 2, 3, 4, 5]
    sub.offer(message(6))
    assert len(sent) == 6 and sub.ended is None


async def test_a_full_queue_behind_a_stuck_send_ends_the_subscriber() -> None:
    sub = subscriber(queue_size=2)
    stuck = asyncio.Event()

    async def send(text: str) -> None:
        await stuck.wait()

    sub.attach(send)
    for n in range(1, 5):
        sub.offer(message(n))
    assert sub.ended is not None and sub.ended.code == SLOW_CLIENT
    assert isinstance(sub.next_nowait(), Ended)
    sub.detach()
    await asyncio.sleep(0)


async def test_a_failed_send_ends_the_subscriber() -> None:
    sub = subscriber()

    async def send(text: str) -> None:
        raise OSError("gone")

    sub.attach(send)
    sub.offer(message(1))
    assert sub.ended is not None
