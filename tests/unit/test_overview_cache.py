"""The overview cache: entries live for their TTL per tenant, an invalidation drops a tenant's
entries, and a value computed while its tenant was invalidated is not stored."""

from __future__ import annotations

import asyncio
from typing import Any

from forecourt.overview.cache import OverviewCache


class Source:
    """Counts computations; each returns the next number."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> int:
        self.calls += 1
        return self.calls


async def test_a_value_is_reused_within_its_ttl_per_tenant_and_key() -> None:
    cache, source = OverviewCache(3600), Source()
    assert await cache.get_or_compute("t1", "summary", source) == 1
    assert await cache.get_or_compute("t1", "summary", source) == 1
    assert await cache.get_or_compute("t1", "status:p", source) == 2
    assert await cache.get_or_compute("t2", "summary", source) == 3


async def test_an_invalidation_drops_that_tenants_entries_alone() -> None:
    cache, source = OverviewCache(3600), Source()
    await cache.get_or_compute("t1", "summary", source)
    await cache.get_or_compute("t2", "summary", source)
    cache.invalidate("t1")
    assert await cache.get_or_compute("t1", "summary", source) == 3
    assert await cache.get_or_compute("t2", "summary", source) == 2


async def test_a_ttl_of_zero_never_stores() -> None:
    cache, source = OverviewCache(0), Source()
    assert await cache.get_or_compute("t1", "summary", source) == 1
    assert await cache.get_or_compute("t1", "summary", source) == 2


async def test_a_read_overlapping_an_invalidation_does_not_store_its_value() -> None:
    cache = OverviewCache(3600)
    started, release = asyncio.Event(), asyncio.Event()

    async def stale() -> str:
        started.set()
        await release.wait()
        return "before the write"

    reading: asyncio.Task[Any] = asyncio.create_task(cache.get_or_compute("t1", "s", stale))
    await started.wait()
    cache.invalidate("t1")  # a write committed while the read was under way
    release.set()
    assert await reading == "before the write"

    async def fresh() -> str:
        return "after the write"

    assert await cache.get_or_compute("t1", "s", fresh) == "after the write"
