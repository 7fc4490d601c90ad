"""The in-process replay ring: ids in order, bounded by count and by bytes, and it says when
messages after an id are gone."""

from __future__ import annotations

from forecourt.streams.messages import StreamMessage
from forecourt.streams.replay import MemoryLog


def message(n: int, size: int = 10) -> StreamMessage:
    return StreamMessage("event", "ten_a", "events", "events:a.b", {"n": n, "pad": "x" * size})


async def test_ids_increase_and_after_returns_what_follows() -> None:
    ring = MemoryLog(window_s=600, max_messages=100)
    keys = [ring.append(message(i)).key for i in range(5)]
    assert keys == sorted(keys) and len(set(keys)) == 5
    assert [m.data["n"] for m in await ring.after(keys[1])] == [2, 3, 4]
    assert await ring.after(keys[-1]) == []
    assert await ring.head() == keys[-1]
    assert not ring.lost_after(keys[0])


async def test_the_ring_is_bounded_by_count_and_bytes_and_says_what_is_lost() -> None:
    by_count = MemoryLog(window_s=600, max_messages=2)
    first = by_count.append(message(0)).key
    for i in range(1, 4):
        by_count.append(message(i))
    assert [m.data["n"] for m in await by_count.after((0, 0))] == [2, 3]
    assert by_count.lost_after(first)

    by_bytes = MemoryLog(window_s=600, max_messages=1000, max_bytes=5_000)
    first = by_bytes.append(message(0, 1_000)).key
    for i in range(1, 20):
        by_bytes.append(message(i, 1_000))
    kept = await by_bytes.after((0, 0))
    assert 0 < len(kept) < 20 and sum(len(m.text()) for m in kept) <= 5_000
    assert by_bytes.lost_after(first)
    assert not by_bytes.lost_after(kept[-1].key)
