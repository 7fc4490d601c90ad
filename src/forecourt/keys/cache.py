"""In-process cache of verified keys, keyed by hash, invalidated across nodes by key id."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

INVALIDATE_CHANNEL = "keys.invalidate"
MAX_ENTRIES = 100_000
NEGATIVE_TTL_S = 5.0  # unknown keys: short, so a brute-force cannot hammer the database


@dataclass(frozen=True, slots=True)
class CachedKey:
    """What authentication needs of a key, taken from its row."""

    id: str
    tenant_id: str
    scopes: frozenset[str]
    tier: str
    rate_limits: dict[str, int]
    expires_at: float | None  # epoch seconds
    revoked: bool
    via_previous: bool  # this hash is the pre-rotation secret
    previous_expires_at: float | None

    def valid_at(self, now: float) -> bool:
        if self.revoked:
            return False
        if self.expires_at is not None and now >= self.expires_at:
            return False
        return not (
            self.via_previous
            and (self.previous_expires_at is None or now >= self.previous_expires_at)
        )


class KeyCache:
    """hash -> (CachedKey | None for unknown, expiry); LRU-bounded."""

    def __init__(self, ttl_s: float, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[CachedKey | None, float]] = OrderedDict()
        self._by_key: dict[str, set[str]] = {}

    def get(self, key_hash: str, now: float | None = None) -> tuple[bool, CachedKey | None]:
        """(hit, value); a hit with value None means "known not to exist"."""
        entry = self._entries.get(key_hash)
        if entry is None:
            return False, None
        value, expires = entry
        if (now if now is not None else time.monotonic()) >= expires:
            self._drop(key_hash)
            return False, None
        self._entries.move_to_end(key_hash)  # LRU: a hit makes the entry the newest
        return True, value

    def put(self, key_hash: str, value: CachedKey | None) -> None:
        if self.ttl_s <= 0:
            return
        ttl = self.ttl_s if value is not None else min(self.ttl_s, NEGATIVE_TTL_S)
        self._entries[key_hash] = (value, time.monotonic() + ttl)
        self._entries.move_to_end(key_hash)
        if value is not None:
            self._by_key.setdefault(value.id, set()).add(key_hash)
        while len(self._entries) > self.max_entries:
            self._drop(next(iter(self._entries)))

    def invalidate(self, key_id: str) -> None:
        for key_hash in self._by_key.pop(key_id, set()):
            self._entries.pop(key_hash, None)

    def clear(self) -> None:
        self._entries.clear()
        self._by_key.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key_hash: str) -> None:
        value, _ = self._entries.pop(key_hash, (None, 0.0))
        if value is not None:
            hashes = self._by_key.get(value.id)
            if hashes is not None:
                hashes.discard(key_hash)
                if not hashes:
                    del self._by_key[value.id]
