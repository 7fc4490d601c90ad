"""Sign-in throttling: per account and per (account, address), growing waits, then a lockout.

Each attempt is counted before the password is checked (and forgotten on success), so a
burst of parallel guesses cannot slip in before the first failure is recorded. Per
(account, address) the first half of ``lockout_failures`` attempts are free; each one past
that makes the next wait twice as long (1 s, 2 s, 4 s, ...), and the ``lockout_failures``-th
locks for ``lockout_s``. Per account, from every address together, the same happens at
``ACCOUNT_FACTOR`` times the counts, which stops a guesser that spreads over many addresses
without letting one address lock its victim out quickly.

Accounts are named by tenant and email whether or not they exist, so the answers reveal
nothing about which accounts exist. State lives in Redis when configured, so every node sees
the same counts; else in memory (bounded). If Redis fails, the node falls back to memory.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import RedisError

from forecourt.errors import RateLimited

log = logging.getLogger("forecourt.signin")

ACCOUNT_FACTOR = 5
FIRST_WAIT_MS = 1000
MAX_WAIT_MS = 5 * 60 * 1000  # waits before the lockout never exceed this
MAX_MEMORY_ENTRIES = 100_000


@dataclass(frozen=True, slots=True)
class Rule:
    """``free`` attempts without a wait, a lockout of ``lockout_ms`` at ``lockout_after``."""

    free: int
    lockout_after: int
    lockout_ms: int

    def wait_ms(self, attempts: int) -> int:
        """How long after attempt number ``attempts`` the next may come."""
        if attempts >= self.lockout_after:
            return self.lockout_ms
        if attempts <= self.free:
            return 0
        doubled: int = FIRST_WAIT_MS << (attempts - self.free - 1)
        return min(doubled, MAX_WAIT_MS, self.lockout_ms)


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after_ms: int = 0
    locked: bool = False


class ThrottleStore(Protocol):
    """Counts attempts per name; the check and the count are one atomic step."""

    async def acquire(self, names: Sequence[str], rules: Sequence[Rule], now_ms: int) -> Verdict:
        """Refuse when any name must still wait; else count an attempt on every name."""
        ...

    async def clear(self, names: Sequence[str]) -> None: ...


class MemoryThrottleStore:
    """Per-process state: name -> (attempts, next allowed ms, forget at ms); LRU-bounded."""

    def __init__(self, max_entries: int = MAX_MEMORY_ENTRIES) -> None:
        self.max_entries = max_entries
        self._state: OrderedDict[str, tuple[int, int, int]] = OrderedDict()

    def _get(self, name: str, now_ms: int) -> tuple[int, int]:
        entry = self._state.get(name)
        if entry is None:
            return 0, 0
        if entry[2] <= now_ms:
            del self._state[name]
            return 0, 0
        return entry[0], entry[1]

    async def acquire(self, names: Sequence[str], rules: Sequence[Rule], now_ms: int) -> Verdict:
        worst, locked = 0, False
        current = [self._get(name, now_ms) for name in names]
        for (attempts, next_ms), rule in zip(current, rules, strict=True):
            if next_ms > now_ms:
                worst = max(worst, next_ms - now_ms)
                locked = locked or attempts >= rule.lockout_after
        if worst:
            return Verdict(False, worst, locked)
        for name, (attempts, _), rule in zip(names, current, rules, strict=True):
            wait = rule.wait_ms(attempts + 1)
            self._state[name] = (attempts + 1, now_ms + wait, now_ms + wait + rule.lockout_ms)
            self._state.move_to_end(name)
        while len(self._state) > self.max_entries:
            self._state.popitem(last=False)
        return Verdict(True)

    async def clear(self, names: Sequence[str]) -> None:
        for name in names:
            self._state.pop(name, None)


# KEYS: one hash per name. ARGV: now_ms, first_wait_ms, max_wait_ms, then per name its
# free, lockout_after and lockout_ms. Returns {allowed, retry_after_ms, locked}.
_ACQUIRE = """
local now = tonumber(ARGV[1])
local first = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local worst, locked = 0, 0
for i, key in ipairs(KEYS) do
  local state = redis.call('HMGET', key, 'n', 'next')
  local n, nxt = tonumber(state[1] or '0'), tonumber(state[2] or '0')
  if nxt > now then
    if nxt - now > worst then worst = nxt - now end
    if n >= tonumber(ARGV[3 + (i - 1) * 3 + 2]) then locked = 1 end
  end
end
if worst > 0 then return {0, worst, locked} end
for i, key in ipairs(KEYS) do
  local base = 3 + (i - 1) * 3
  local free, lock, lock_ms = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]),
    tonumber(ARGV[base + 3])
  local n = redis.call('HINCRBY', key, 'n', 1)
  local wait = 0
  if n >= lock then
    wait = lock_ms
  elseif n > free then
    wait = math.min(first * 2 ^ (n - free - 1), max_wait, lock_ms)
  end
  redis.call('HSET', key, 'next', now + wait)
  redis.call('PEXPIRE', key, wait + lock_ms)
end
return {1, 0, 0}
"""


class RedisThrottleStore:
    """State shared by every node; one script call per attempt."""

    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._script = redis.register_script(_ACQUIRE)

    async def acquire(self, names: Sequence[str], rules: Sequence[Rule], now_ms: int) -> Verdict:
        args: list[int] = [now_ms, FIRST_WAIT_MS, MAX_WAIT_MS]
        for rule in rules:
            args += [rule.free, rule.lockout_after, rule.lockout_ms]
        allowed, retry_ms, locked = await self._script(
            keys=[self.prefix + name for name in names], args=args
        )
        return Verdict(bool(int(allowed)), int(retry_ms), bool(int(locked)))

    async def clear(self, names: Sequence[str]) -> None:
        await self.redis.delete(*(self.prefix + name for name in names))


class SignInThrottle:
    """Admits or refuses sign-in attempts; ``attempt`` before checking the password."""

    def __init__(
        self,
        store: ThrottleStore,
        lockout_failures: int = 10,
        lockout_s: int = 900,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.fallback = MemoryThrottleStore()
        self.clock = clock
        lockout_ms = lockout_s * 1000
        self.pair_rule = Rule(lockout_failures // 2, lockout_failures, lockout_ms)
        account_failures = lockout_failures * ACCOUNT_FACTOR
        self.account_rule = Rule(account_failures // 2, account_failures, lockout_ms)

    @classmethod
    def from_settings(cls, settings: Any, redis: Any | None) -> SignInThrottle:
        store: ThrottleStore = (
            RedisThrottleStore(redis, settings.redis_prefix + "signin:")
            if redis is not None
            else MemoryThrottleStore()
        )
        return cls(store, settings.signin_lockout_failures, settings.signin_lockout_s)

    @staticmethod
    def names(tenant: str, email: str, ip: str | None) -> tuple[str, str]:
        """(account, account+address) names; hashed, so no email is stored in Redis."""
        account = f"{tenant.strip().lower()}\0{email.strip().lower()}"
        pair = f"{account}\0{ip or ''}"
        return (
            "a:" + hashlib.sha256(account.encode()).hexdigest()[:32],
            "p:" + hashlib.sha256(pair.encode()).hexdigest()[:32],
        )

    @staticmethod
    def key_names(ip: str | None) -> tuple[str]:
        """The name of an address's sign-ins with an API key (no account to name)."""
        return ("k:" + hashlib.sha256(f"key\0{ip or ''}".encode()).hexdigest()[:32],)

    async def attempt(self, tenant: str, email: str, ip: str | None) -> None:
        """Count an attempt, or raise RateLimited (429, Retry-After) if it must wait."""
        names = self.names(tenant, email, ip)
        await self._acquire(names, (self.account_rule, self.pair_rule), "this account")

    async def attempt_key(self, ip: str | None) -> None:
        """Count a sign-in with an API key from ``ip`` (the per-address rule of a password
        sign-in), or raise RateLimited (429, Retry-After) if it must wait."""
        await self._acquire(self.key_names(ip), (self.pair_rule,), "this address")

    async def _acquire(self, names: Sequence[str], rules: Sequence[Rule], subject: str) -> None:
        now_ms = int(self.clock() * 1000)
        try:
            verdict = await self.store.acquire(names, rules, now_ms)
        except RedisError as exc:
            log.warning("sign-in throttle: Redis unavailable (%s); counting locally", exc)
            verdict = await self.fallback.acquire(names, rules, now_ms)
        if verdict.allowed:
            return
        retry_s = max(1, math.ceil(verdict.retry_after_ms / 1000))
        if verdict.locked:
            detail = f"Too many failed sign-ins for {subject}; sign-in is locked for {retry_s} s."
        else:
            detail = f"Too many failed sign-ins for {subject}; try again in {retry_s} s."
        raise RateLimited(detail, headers={"Retry-After": str(retry_s)}, retry_after_s=retry_s)

    async def succeeded(self, tenant: str, email: str, ip: str | None) -> None:
        """A right password: forget the account's failures."""
        await self._clear(self.names(tenant, email, ip))

    async def key_succeeded(self, ip: str | None) -> None:
        """A valid key: forget the address's failed sign-ins with keys."""
        await self._clear(self.key_names(ip))

    async def _clear(self, names: Sequence[str]) -> None:
        await self.fallback.clear(names)
        try:
            await self.store.clear(names)
        except RedisError as exc:
            log.warning("sign-in throttle: Redis unavailable (%s)", exc)
