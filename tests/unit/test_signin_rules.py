"""The sign-in throttle's arithmetic: free attempts, doubling waits, the lockout; the memory
store's bound; and the fall-back to local counting when Redis fails."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from forecourt.errors import RateLimited
from forecourt.users.throttle import (
    MAX_WAIT_MS,
    MemoryThrottleStore,
    Rule,
    SignInThrottle,
    Verdict,
)


def test_waits_double_after_the_free_attempts_then_lock() -> None:
    rule = Rule(free=5, lockout_after=10, lockout_ms=900_000)
    assert [rule.wait_ms(n) for n in range(1, 11)] == [
        0,
        0,
        0,
        0,
        0,
        1000,
        2000,
        4000,
        8000,
        900_000,
    ]
    assert rule.wait_ms(11) == 900_000


def test_waits_are_capped() -> None:
    rule = Rule(free=1, lockout_after=100, lockout_ms=3_600_000)
    assert rule.wait_ms(60) == MAX_WAIT_MS
    short = Rule(free=1, lockout_after=100, lockout_ms=3000)
    assert short.wait_ms(10) == 3000


async def test_the_memory_store_refuses_until_the_wait_is_over() -> None:
    store = MemoryThrottleStore()
    rule = Rule(free=1, lockout_after=3, lockout_ms=60_000)
    assert await store.acquire(["a"], [rule], 0) == Verdict(True)
    assert await store.acquire(["a"], [rule], 0) == Verdict(True)  # 2nd: wait 1 s after
    assert await store.acquire(["a"], [rule], 500) == Verdict(False, 500, False)
    assert await store.acquire(["a"], [rule], 1000) == Verdict(True)  # 3rd: locks
    assert await store.acquire(["a"], [rule], 1000) == Verdict(False, 60_000, True)
    # A refused attempt counts nothing: after the lockout, one more attempt is allowed.
    assert await store.acquire(["a"], [rule], 61_000) == Verdict(True)
    await store.clear(["a"])
    assert await store.acquire(["a"], [rule], 61_000) == Verdict(True)


async def test_the_memory_store_is_bounded() -> None:
    store = MemoryThrottleStore(max_entries=3)
    rule = Rule(free=5, lockout_after=10, lockout_ms=60_000)
    for name in "abcdef":
        await store.acquire([name], [rule], 0)
    assert len(store._state) == 3


class BrokenStore:
    async def acquire(self, names: Sequence[str], rules: Sequence[Rule], now_ms: int) -> Verdict:
        raise RedisConnectionError("down")

    async def clear(self, names: Sequence[str]) -> None:
        raise RedisConnectionError("down")


async def test_without_redis_the_node_counts_locally() -> None:
    throttle = SignInThrottle(BrokenStore(), lockout_failures=2, lockout_s=60, clock=lambda: 0.0)
    await throttle.attempt("default", "a@example.com", "198.51.100.1")
    await throttle.attempt("default", "a@example.com", "198.51.100.1")
    with pytest.raises(RateLimited) as info:
        await throttle.attempt("default", "a@example.com", "198.51.100.1")
    assert info.value.headers == {"Retry-After": "60"}
    assert "locked" in info.value.detail
    await throttle.succeeded("default", "a@example.com", "198.51.100.1")
    await throttle.attempt("default", "a@example.com", "198.51.100.1")


def test_names_do_not_hold_the_email() -> None:
    account, pair = SignInThrottle.names("Default", "A@Example.com", "198.51.100.1")
    assert "example" not in account + pair
    assert (account, pair) == SignInThrottle.names("default", "a@example.com ", "198.51.100.1")
    assert SignInThrottle.names("default", "a@example.com", "198.51.100.2")[0] == account
    assert SignInThrottle.names("default", "a@example.com", "198.51.100.2")[1] != pair
