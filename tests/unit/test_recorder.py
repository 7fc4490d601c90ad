"""The attempt recorder's group commit, with a fake write function."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy.exc import OperationalError

from forecourt.webhooks.queue import Finished
from forecourt.webhooks.recorder import Recorder


def finished(n: int) -> Finished:
    return cast(Finished, ("attempt", n))  # the recorder never looks inside


async def test_attempts_that_finish_during_a_write_go_into_the_next_one() -> None:
    batches: list[list[Any]] = []
    gate = asyncio.Event()

    async def write(batch: Sequence[Finished]) -> None:
        batches.append(list(batch))
        if len(batches) == 1:
            await gate.wait()  # the first write is slow

    recorder = Recorder(write, give_up_s=5.0)
    first = recorder.submit(finished(0))
    await asyncio.sleep(0)
    rest = [recorder.submit(finished(n)) for n in range(1, 6)]
    gate.set()
    assert await first is True
    assert all([await future for future in rest])
    assert batches == [[finished(0)], [finished(n) for n in range(1, 6)]]
    assert await recorder.drained(1.0)


async def test_a_failed_write_is_retried_then_reported() -> None:
    calls = 0

    async def flaky(batch: Sequence[Finished]) -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise OperationalError("UPDATE ...", {}, Exception("database is restarting"))

    recorder = Recorder(flaky, give_up_s=5.0)
    assert await recorder.submit(finished(1)) is True
    assert calls == 3

    async def down(batch: Sequence[Finished]) -> None:
        raise OperationalError("UPDATE ...", {}, Exception("database is down"))

    recorder = Recorder(down, give_up_s=0.2)
    assert await recorder.submit(finished(2)) is False  # made again after its lease


async def test_a_cancelled_waiter_does_not_stop_the_write() -> None:
    written: list[Any] = []
    gate = asyncio.Event()

    async def write(batch: Sequence[Finished]) -> None:
        await gate.wait()
        written.extend(batch)

    recorder = Recorder(write, give_up_s=5.0)
    waiter = asyncio.ensure_future(recorder.submit(finished(7)))
    await asyncio.sleep(0)
    waiter.cancel()
    gate.set()
    assert await recorder.drained(1.0)
    assert written == [finished(7)]
