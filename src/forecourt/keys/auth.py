"""Key verification on the hot path: format check, HMAC, cache, and only then the database.

``recall`` answers from memory alone (a malformed key, a cached key, a hash known to be
unknown), so the access middleware can apply the per-IP limit before the one step that costs
a database query, ``load``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forecourt.keys import format as key_format
from forecourt.keys.cache import CachedKey, KeyCache
from forecourt.keys.service import lookup


@dataclass(frozen=True, slots=True)
class Recalled:
    """What memory knows of a presented key: ``key`` is the valid key or None, unless
    memory does not know, and then ``lookup`` is the hash to look up."""

    key: CachedKey | None
    lookup: str | None = None


class KeyAuthenticator:
    """Turns a presented key into its CachedKey, or None for any kind of invalid key."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], secret: bytes, cache: KeyCache
    ) -> None:
        self._sessionmaker = sessionmaker
        self._secret = secret
        self.cache = cache
        self._inflight: dict[str, asyncio.Future[CachedKey | None]] = {}

    def recall(self, raw: str) -> Recalled:
        """The answer memory can give without the database."""
        # Malformed or bad-checksum keys never reach the cache or the database: the format
        # check (a regex and a CRC) is cheaper than remembering them.
        if not key_format.is_well_formed(raw):
            return Recalled(None)
        key_hash = key_format.hash_key(raw, self._secret)
        hit, value = self.cache.get(key_hash)
        if not hit:
            return Recalled(None, lookup=key_hash)
        return Recalled(_valid(value))

    async def load(self, key_hash: str) -> CachedKey | None:
        """The valid key behind ``key_hash`` from the database (remembered either way)."""
        return _valid(await self._load(key_hash))

    async def _load(self, key_hash: str) -> CachedKey | None:
        # One database lookup per hash at a time, however many requests miss together.
        pending = self._inflight.get(key_hash)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[CachedKey | None] = asyncio.get_running_loop().create_future()
        self._inflight[key_hash] = future
        try:
            async with self._sessionmaker() as session:
                value = await lookup(session, key_hash)
            self.cache.put(key_hash, value)
            future.set_result(value)
            return value
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._inflight[key_hash]


def _valid(value: CachedKey | None) -> CachedKey | None:
    if value is None or not value.valid_at(time.time()):
        return None
    return value
