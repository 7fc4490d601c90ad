"""A node's cache of tenant overviews (the summary, plugin health), each entry for a short
TTL and dropped at once when a write changes its tenant, on every node through the broadcast.

Invariant: an entry computed while an invalidation of its tenant arrived is never stored, so
a read that began before a write cannot put back what the write made stale.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

INVALIDATE_CHANNEL = "overview.invalidate"
MAX_TENANTS = 10_000


class OverviewCache:
    """Values by tenant and key, each until ``ttl_s`` after it was computed."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, dict[str, tuple[float, Any]]] = {}
        self._generation: dict[str, int] = {}
        self._resets = 0  # counters dropped: no read begun before may store

    async def get_or_compute(
        self, tenant_id: str, key: str, compute: Callable[[], Awaitable[Any]]
    ) -> Any:
        """The cached value of ``key`` for the tenant, or ``compute()``'s, stored if still fresh."""
        now = time.monotonic()
        found = self._entries.get(tenant_id, {}).get(key)
        if found is not None and found[0] > now:
            return found[1]
        generation = self._stamp(tenant_id)
        value = await compute()
        if self.ttl_s > 0 and self._stamp(tenant_id) == generation:
            if len(self._entries) >= MAX_TENANTS and tenant_id not in self._entries:
                self._entries.clear()
            self._entries.setdefault(tenant_id, {})[key] = (now + self.ttl_s, value)
        return value

    def invalidate(self, tenant_id: str) -> None:
        """Drop the tenant's entries; reads under way do not store theirs."""
        self._entries.pop(tenant_id, None)
        self._generation[tenant_id] = self._generation.get(tenant_id, 0) + 1
        if len(self._generation) > MAX_TENANTS:
            self._entries.clear()
            self._generation = {}
            self._resets += 1

    def _stamp(self, tenant_id: str) -> tuple[int, int]:
        return self._resets, self._generation.get(tenant_id, 0)
