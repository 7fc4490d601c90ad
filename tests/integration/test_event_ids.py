"""Event ids are unique per (source, id), as CloudEvents specifies: two sources may use the
same id; one source repeating an id gets its original event back and stores nothing."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import func, select

from conftest import Harness
from forecourt.events.models import Event

EVENTS = "/api/v1/events"
TYPE = "ids.test"


async def setup(h: Harness) -> None:
    made = await h.client.post("/api/v1/event-types", json={"name": TYPE}, headers=h.auth())
    assert made.status_code == 201, made.text


async def count(h: Harness) -> int:
    async with h.fc.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(Event)) or 0)


async def post(h: Harness, **fields: Any) -> Any:
    return await h.client.post(EVENTS, json={"type": TYPE, **fields}, headers=h.auth())


async def post_batch(h: Harness, *items: tuple[str, str]) -> Any:
    """One batch of events, each given by its (id, source)."""
    events = [{"type": TYPE, "id": ce_id, "source": source} for ce_id, source in items]
    return await h.client.post(f"{EVENTS}/batch", json={"events": events}, headers=h.auth())


async def test_two_sources_may_use_the_same_id(harness: Harness) -> None:
    h = harness
    await setup(h)
    first = await post(h, id="order-1", source="/shop/a", data={"n": 1})
    second = await post(h, id="order-1", source="/shop/b", data={"n": 2})
    assert (first.status_code, second.status_code) == (201, 201), second.text
    assert first.json()["event_id"] != second.json()["event_id"]
    assert second.json()["data"] == {"n": 2}

    # Read by CloudEvents id: the source tells them apart; without it the id is ambiguous.
    for response, source in ((first, "/shop/a"), (second, "/shop/b")):
        got = await h.client.get(f"{EVENTS}/order-1", params={"source": source}, headers=h.auth())
        assert got.status_code == 200, got.text
        assert got.json()["event_id"] == response.json()["event_id"]
        by_own_id = await h.client.get(f"{EVENTS}/{response.json()['event_id']}", headers=h.auth())
        assert by_own_id.json()["source"] == source
    ambiguous = await h.client.get(f"{EVENTS}/order-1", headers=h.auth())
    assert ambiguous.status_code == 422, ambiguous.text
    assert [e["field"] for e in ambiguous.json()["errors"]] == ["source"]
    missing = await h.client.get(f"{EVENTS}/order-1", params={"source": "/c"}, headers=h.auth())
    assert missing.status_code == 404


async def test_one_source_cannot_publish_an_id_twice(harness: Harness) -> None:
    h = harness
    await setup(h)
    first = await post(h, id="dup", source="/shop/a", data={"n": 1})
    assert first.status_code == 201, first.text
    before = await count(h)
    again = await post(h, id="dup", source="/shop/a", data={"n": "different"})
    assert again.status_code == 200, again.text
    assert again.json()["event_id"] == first.json()["event_id"]
    assert again.json()["data"] == {"n": 1}  # the original, whatever the repeat holds
    # Without a source, the default one: the same for both publishes.
    plain = await post(h, id="dup", data={})
    plain_again = await post(h, id="dup", data={})
    assert (plain.status_code, plain_again.status_code) == (201, 200)
    assert plain.json()["event_id"] == plain_again.json()["event_id"]
    assert await count(h) == before + 1
    unique = await h.client.get(f"{EVENTS}/dup", params={"source": "/shop/a"}, headers=h.auth())
    assert unique.json()["event_id"] == first.json()["event_id"]


async def test_batches_follow_the_same_rule(harness: Harness) -> None:
    h = harness
    await setup(h)
    before = await count(h)
    both = await post_batch(h, ("b-1", "/a"), ("b-1", "/b"))
    assert both.status_code == 201, both.text
    assert both.json()["created"] == 2
    repeated = await post_batch(h, ("b-2", "/a"), ("b-2", "/a"))
    assert repeated.status_code == 422, repeated.text
    assert [e["field"] for e in repeated.json()["errors"]] == ["events.1.id"]
    replay = await post_batch(h, ("b-1", "/b"))
    assert replay.status_code == 200, replay.text
    assert replay.json()["events"][0]["duplicate"] is True
    assert await count(h) == before + 2


async def test_concurrent_repeats_of_one_id_store_one_event(harness: Harness) -> None:
    h = harness
    await setup(h)
    before = await count(h)
    responses = await asyncio.gather(
        *(post(h, id="race", source="/racer", data={"try": i}) for i in range(12)),
        *(post(h, id="race", source=f"/other/{i}") for i in range(3)),
    )
    statuses = [r.status_code for r in responses]
    assert statuses[:12].count(201) == 1 and statuses[:12].count(200) == 11, statuses
    assert statuses[12:] == [201, 201, 201]
    assert len({r.json()["event_id"] for r in responses[:12]}) == 1
    assert await count(h) == before + 4
