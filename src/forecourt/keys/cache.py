"""In-process cache of verified keys, keyed by hash, invalidated across nodes by key id.

Known keys and unknown hashes live in two separately bounded structures: a flood of bogus
keys fills the small negative cache and evicts only its own oldest entries, never a valid key
(which would send that key's next request to the database).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

INVALIDATE_CHANNEL = "keys.invalidate"
MAX_ENTRIES = 100_000
MAX_NEGATIVES = 10_000
# Unknown hashes: long enough that a repeated bogus key costs one lookup per burst, short
# enough that memory turns over; they never become valid (keys are random), so no staleness.
NEGATIVE_TTL_S = 20.0


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


class NegativeCache:
    """Hashes known not to be valid credentials, each until its expiry; FIFO-bounded.

    Entries are never refreshed by a hit: a bogus credential is looked up again once its
    entry expires, whatever the traffic.
    """

    def __init__(self, ttl_s: float, max_entries: int = MAX_NEGATIVES) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._expiry: OrderedDict[str, float] = OrderedDict()

    def hit(self, digest: str, now: float | None = None) -> bool:
        expires = self._expiry.get(digest)
        if expires is None:
            return False
        if (now if now is not None else time.monotonic()) >= expires:
            del self._expiry[digest]
            return False
        return True

    def add(self, digest: str) -> None:
        if self.ttl_s <= 0 or self.max_entries <= 0:
            return
        self._expiry.pop(digest, None)
        self._expiry[digest] = time.monotonic() + self.ttl_s
        while len(self._expiry) > self.max_entries:
            self._expiry.popitem(last=False)

    def discard(self, digest: str) -> None:
        self._expiry.pop(digest, None)

    def clear(self) -> None:
        self._expiry.clear()

    def __len__(self) -> int:
        return len(self._expiry)


class KeyCache:
    """hash -> CachedKey, LRU-bounded, plus a separate small cache of unknown hashes.

    ``len()`` counts the known keys only; ``negatives`` holds the unknown ones.
    """

    def __init__(
        self, ttl_s: float, max_entries: int = MAX_ENTRIES, max_negatives: int = MAX_NEGATIVES
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[CachedKey, float]] = OrderedDict()
        self._by_key: dict[str, set[str]] = {}
        self.negatives = NegativeCache(min(ttl_s, NEGATIVE_TTL_S), max_negatives)

    def get(self, key_hash: str, now: float | None = None) -> tuple[bool, CachedKey | None]:
        """(hit, value); a hit with value None means "known not to exist"."""
        entry = self._entries.get(key_hash)
        if entry is None:
            return self.negatives.hit(key_hash, now), None
        value, expires = entry
        if (now if now is not None else time.monotonic()) >= expires:
            self._drop(key_hash)
            return False, None
        self._entries.move_to_end(key_hash)  # LRU: a hit makes the entry the newest
        return True, value

    def put(self, key_hash: str, value: CachedKey | None) -> None:
        if self.ttl_s <= 0:
            return
        if value is None:
            self._drop(key_hash)
            self.negatives.add(key_hash)
            return
        self.negatives.discard(key_hash)
        self._entries[key_hash] = (value, time.monotonic() + self.ttl_s)
        self._entries.move_to_end(key_hash)
        self._by_key.setdefault(value.id, set()).add(key_hash)
        while len(self._entries) > self.max_entries:
            self._drop(next(iter(self._entries)))

    def invalidate(self, key_id: str) -> None:
        for key_hash in self._by_key.pop(key_id, set()):
            self._entries.pop(key_hash, None)

    def clear(self) -> None:
        self._entries.clear()
        self._by_key.clear()
        self.negatives.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key_hash: str) -> None:
        entry = self._entries.pop(key_hash, None)
        if entry is not None:
            value = entry[0]
            hashes = self._by_key.get(value.id)
            if hashes is not None:
                hashes.discard(key_hash)
                if not hashes:
                    del self._by_key[value.id]
