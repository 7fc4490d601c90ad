"""Rate-limit decisions per second: Forecourt's limiters against the `limits` library.

Run by hand from the project root, with Redis on 127.0.0.1:6379::

    python -m bench.ratelimit [--decisions N] [--redis-url URL]

Every side makes the same decisions (three windows: minute, hour and day) for the same keys,
from the same number of concurrent tasks, in this one run. `limits` checks one window per call,
so a multi-window user either tests every window then hits every window (two round trips per
window, and racy) or simply hits each window (one per window, and a denial by one window still
charges the others); both are measured. Ours decides all windows in one call, atomically.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from uuid import uuid4

from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerHour, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.aio.strategies import (
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)
from redis.asyncio import BlockingConnectionPool, Redis

from forecourt.ratelimit.memory import MemoryLimiter
from forecourt.ratelimit.redis import RedisLimiter
from forecourt.ratelimit.windows import Limiter, Window

DECISIONS = 12_000  # per side; keeps the whole run under a minute on two cores
CONCURRENCY = 32
KEYS = 2_000
REDIS_URL = "redis://127.0.0.1:6379/0"
# Large enough that nearly every decision is an admission, which is the common, costlier path.
LIMITS = {"minute": (60, 600), "hour": (3600, 6_000), "day": (86400, 60_000)}
# The exactness check: one key, a small minute quota, many more concurrent hits than it allows.
EXACT_LIMIT = 37
EXACT_HITS = 400

Decide = Callable[[str], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class Result:
    label: str
    per_s: float
    admitted_of_exact: int


def our_windows(exact: bool = False) -> list[Window]:
    minute_limit = EXACT_LIMIT if exact else LIMITS["minute"][1]
    return [
        Window("minute", minute_limit, 60),
        Window("hour", LIMITS["hour"][1], 3600),
        Window("day", LIMITS["day"][1], 86400),
    ]


def their_items(exact: bool = False) -> list[RateLimitItem]:
    minute_limit = EXACT_LIMIT if exact else LIMITS["minute"][1]
    return [
        RateLimitItemPerMinute(minute_limit),
        RateLimitItemPerHour(LIMITS["hour"][1]),
        RateLimitItemPerDay(LIMITS["day"][1]),
    ]


def ours(limiter: Limiter, windows: Sequence[Window]) -> Decide:
    async def decide(key: str) -> bool:
        return (await limiter.hit(key, windows)).allowed

    return decide


def test_then_hit(strategy: RateLimiter, items: Sequence[RateLimitItem]) -> Decide:
    async def decide(key: str) -> bool:
        for item in items:
            if not await strategy.test(item, key):
                return False
        for item in items:
            await strategy.hit(item, key)
        return True

    return decide


def hit_each(strategy: RateLimiter, items: Sequence[RateLimitItem]) -> Decide:
    async def decide(key: str) -> bool:
        allowed = True
        for item in items:
            allowed = await strategy.hit(item, key) and allowed
        return allowed

    return decide


async def drive(decide: Decide, keys: Sequence[str]) -> tuple[float, int]:
    """Decide for every key from CONCURRENCY tasks; the elapsed seconds and admissions."""
    queue = iter(keys)
    admitted = 0

    async def worker() -> None:
        nonlocal admitted
        for key in queue:
            allowed = await decide(key)  # awaited first: `admitted +=` would read it stale
            admitted += allowed

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.perf_counter() - started, admitted


async def measure(label: str, decide: Decide, exact_decide: Decide, keys: Sequence[str]) -> Result:
    """Decisions per second over ``keys``, then the exactness check on a key of its own."""
    await drive(decide, [f"warm:{k}" for k in keys[: len(keys) // 20]])
    elapsed, _ = await drive(decide, keys)
    _, admitted = await drive(exact_decide, [f"exact:{keys[0]}"] * EXACT_HITS)
    return Result(label, len(keys) / elapsed, admitted)


async def run(decisions: int, redis_url: str) -> list[tuple[Result, Result]]:
    rng = random.Random(7)
    run_id = uuid4().hex[:8]
    keys = [f"user{rng.randrange(KEYS)}" for _ in range(decisions)]
    pairs: list[tuple[Result, Result]] = []

    # Redis: our script against limits on the same client library.
    pool = BlockingConnectionPool.from_url(redis_url, max_connections=CONCURRENCY)
    client = Redis.from_pool(pool)
    ours_prefix = f"fcbench:{run_id}:"
    limiter = RedisLimiter(client, ours_prefix)
    exact_limiter = RedisLimiter(client, f"{ours_prefix}x:")
    mine = await measure(
        "forecourt RedisLimiter",
        ours(limiter, our_windows()),
        ours(exact_limiter, our_windows(exact=True)),
        keys,
    )
    storage = RedisStorage(
        "async+" + redis_url, implementation="redispy", key_prefix=f"fcbench{run_id}"
    )
    pairs += await compare_limits(mine, "redis", storage, keys, run_id)
    await storage.reset()
    if isinstance(storage.bridge, RedispyBridge):
        await storage.bridge.storage.aclose()
    async for key in client.scan_iter(match=f"{ours_prefix}*", count=1000):
        await client.delete(key)
    await client.aclose()

    # In process.
    mine = await measure(
        "forecourt MemoryLimiter",
        ours(MemoryLimiter(), our_windows()),
        ours(MemoryLimiter(), our_windows(exact=True)),
        keys,
    )
    memory = MemoryStorage()
    pairs += await compare_limits(mine, "memory", memory, keys, run_id)
    await memory.reset()
    if memory.timer is not None:
        memory.timer.cancel()
    return pairs


async def compare_limits(
    mine: Result, where: str, storage: Storage, keys: Sequence[str], run_id: str
) -> list[tuple[Result, Result]]:
    pairs = []
    strategies: list[tuple[str, RateLimiter]] = [
        ("moving window", MovingWindowRateLimiter(storage)),
        ("sliding window counter", SlidingWindowCounterRateLimiter(storage)),
    ]
    for name, strategy in strategies:
        for mode, build in (("test all, hit all", test_then_hit), ("hit each", hit_each)):
            # Fresh keys per variant, so no variant starts from another's counts.
            tag = f"{run_id}:{name[0]}:{mode[0]}:"
            theirs = await measure(
                f"{where}, {name}, {mode}",
                build(strategy, their_items()),
                build(strategy, their_items(exact=True)),
                [tag + k for k in keys],
            )
            pairs.append((mine, theirs))
    return pairs


def report(pairs: list[tuple[Result, Result]], decisions: int) -> None:
    print(
        f"{decisions} decisions per side over {KEYS} keys, {CONCURRENCY} concurrent tasks, "
        "3 windows (minute, hour, day)"
    )
    print(
        f"admitted: of {EXACT_HITS} concurrent requests on one key with a minute quota of "
        f"{EXACT_LIMIT} (exact: {EXACT_LIMIT})"
    )
    header = (
        f"{'limits baseline':<52} {'ours/s':>8} {'limits/s':>8} {'ratio':>6} "
        f"{'admitted':>9} {'by limits':>9}"
    )
    print(header)
    print("-" * len(header))
    for mine, theirs in pairs:
        ratio = mine.per_s / theirs.per_s
        print(
            f"{theirs.label:<52} {mine.per_s:>8.0f} {theirs.per_s:>8.0f} {ratio:>5.2f}x "
            f"{mine.admitted_of_exact:>9} {theirs.admitted_of_exact:>9}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--decisions", type=int, default=DECISIONS)
    parser.add_argument("--redis-url", default=REDIS_URL)
    args = parser.parse_args()
    started = time.perf_counter()
    pairs = asyncio.run(run(args.decisions, args.redis_url))
    report(pairs, args.decisions)
    print(f"run took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
