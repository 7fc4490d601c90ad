"""Both limiters against the same scenarios, on a real Redis, and failover when Redis dies.

Redis comes from FORECOURT_TEST_REDIS_URL (default redis://127.0.0.1:6379/0); when it cannot be
reached these tests fail, saying so. The restart test starts its own ``redis-server``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from uuid import uuid4

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from redis.asyncio import BlockingConnectionPool, Redis

from conftest import free_port, start_redis_server, stop_process
from forecourt.ratelimit import failover
from forecourt.ratelimit.failover import FailoverLimiter
from forecourt.ratelimit.memory import MemoryLimiter
from forecourt.ratelimit.redis import SCRIPT, RedisLimiter
from forecourt.ratelimit.windows import (
    MAX_LIMIT,
    Decision,
    Limiter,
    Window,
    WindowCounters,
    admits,
)

REDIS_URL = os.environ.get("FORECOURT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN_PREFIX = f"fctest:{uuid4().hex}:"
# Nothing listens on port 1 of the loopback: connections are refused at once.
DEAD_REDIS_URL = "redis://127.0.0.1:1/0"
CONNECT_TIMEOUT_S = 0.2
SERVER_START_TIMEOUT_S = 5.0
EPOCH_S = 1_700_000_000.0
POOL_SIZE = 32
HANG_S = 60.0  # only catches a hang

pytestmark = pytest.mark.redis


class FakeClock:
    """Seconds, moved by hand; serves as wall clock and as monotonic clock."""

    def __init__(self, now_s: float = EPOCH_S) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


class CountingLimiter:
    """Wraps a limiter and counts the calls that reach it."""

    def __init__(self, inner: Limiter) -> None:
        self.inner = inner
        self.calls = 0

    async def hit(self, key: str, windows: Sequence[Window], cost: int = 1) -> Decision:
        self.calls += 1
        return await self.inner.hit(key, windows, cost)

    async def peek(self, key: str, windows: Sequence[Window]) -> Decision:
        self.calls += 1
        return await self.inner.peek(key, windows)

    async def reset(self, key: str) -> None:
        self.calls += 1
        await self.inner.reset(key)

    async def aclose(self) -> None:
        await self.inner.aclose()


def unreachable(url: str, exc: BaseException) -> str:
    return (
        f"Redis at {url} cannot be reached ({type(exc).__name__}: {exc}). Start one, or point "
        "FORECOURT_TEST_REDIS_URL at one: these tests must run, not skip."
    )


async def delete_prefixed(client: Redis, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await client.delete(*keys)


@pytest.fixture
def prefix() -> str:
    return f"{RUN_PREFIX}{uuid4().hex[:8]}:"


async def connect_redis() -> Redis:
    # A blocking pool makes 200 concurrent calls queue for a connection instead of failing.
    pool = BlockingConnectionPool.from_url(
        REDIS_URL, max_connections=POOL_SIZE, socket_connect_timeout=1.0
    )
    client = Redis.from_pool(pool)
    try:
        await client.ping()
    except (redis.RedisError, OSError) as exc:
        await client.aclose()
        pytest.fail(unreachable(REDIS_URL, exc))
    return client


@pytest.fixture
async def redis_client(prefix: str) -> AsyncIterator[Redis]:
    client = await connect_redis()
    yield client
    await delete_prefixed(client, prefix)
    await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def limiter_backend(
    request: pytest.FixtureRequest, prefix: str
) -> AsyncIterator[tuple[Limiter, FakeClock]]:
    """Each limiter, on a fake clock: the Redis one sends its time to the script."""
    clock = FakeClock()
    if request.param == "memory":
        limiter = MemoryLimiter(clock)
        yield limiter, clock
        await limiter.aclose()
        return
    client = await connect_redis()
    yield RedisLimiter(client, prefix, clock=clock), clock
    await delete_prefixed(client, prefix)
    await client.aclose()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def registry_counter(registry: CollectorRegistry) -> Counter:
    return Counter("errors", "outages", registry=registry)


def outages(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("errors_total")


# --- both backends ----------------------------------------------------------------------------


async def test_concurrent_hits_admit_exactly_the_limit(
    limiter_backend: tuple[Limiter, FakeClock],
) -> None:
    limiter, _ = limiter_backend
    window = Window("minute", 37, 60)
    decisions = await asyncio.gather(*(limiter.hit("crowd", [window]) for _ in range(200)))
    assert sum(d.allowed for d in decisions) == 37
    assert sorted(d.states[0].remaining for d in decisions if d.allowed) == list(range(37))


async def test_remaining_counts_down_then_denies(
    limiter_backend: tuple[Limiter, FakeClock],
) -> None:
    limiter, clock = limiter_backend
    window = Window("minute", 37, 60)
    seen = [(await limiter.hit("seq", [window])).states[0].remaining for _ in range(37)]
    assert seen == list(range(36, -1, -1))
    denied = await limiter.hit("seq", [window])
    assert not denied.allowed
    assert denied.violated == window
    clock.advance(120)
    assert (await limiter.hit("seq", [window])).states[0].remaining == 36


async def test_denied_hit_charges_no_window(limiter_backend: tuple[Limiter, FakeClock]) -> None:
    limiter, _ = limiter_backend
    minute, hour = Window("minute", 3, 60), Window("hour", 10, 3600)
    for _ in range(3):
        assert (await limiter.hit("multi", [minute, hour])).allowed
    denied = await limiter.hit("multi", [minute, hour], 1)
    assert not denied.allowed
    assert denied.violated == minute
    assert [s.remaining for s in denied.states] == [0, 7]
    assert (await limiter.peek("multi", [hour])).states[0].remaining == 7
    # A cost above what the hour has left is refused there, and takes nothing either.
    assert not (await limiter.hit("multi", [hour], 8)).allowed
    assert (await limiter.peek("multi", [hour])).states[0].remaining == 7


async def test_reset_forgets_every_window(limiter_backend: tuple[Limiter, FakeClock]) -> None:
    limiter, _ = limiter_backend
    windows = [Window("minute", 1, 60), Window("day", 1, 86400)]
    assert (await limiter.hit("gone", windows)).allowed
    assert not (await limiter.hit("gone", windows)).allowed
    await limiter.reset("gone")
    assert (await limiter.hit("gone", windows)).allowed


async def test_backends_decide_identically(redis_client: Redis, prefix: str) -> None:
    """The same traffic on the same clock: the same Decisions, field for field."""
    rng = random.Random(20240601)
    clock = FakeClock()
    memory = MemoryLimiter(clock)
    shared = RedisLimiter(redis_client, prefix, clock=clock)
    windows = [Window("second", 3, 1), Window("minute", 20, 60), Window("hour", 90, 3600)]
    for step in range(400):
        clock.advance(rng.choice([0, 0, 0.001, 0.05, 0.4, 1.5, 7.0, 31.0]))
        key = f"k{rng.randrange(3)}"
        subset = windows[rng.randrange(3) :]
        if step % 7 == 0:
            pair = (await memory.peek(key, subset), await shared.peek(key, subset))
        else:
            cost = rng.choice([1, 1, 1, 2, 5])
            pair = (await memory.hit(key, subset, cost), await shared.hit(key, subset, cost))
        assert pair[0] == pair[1], f"step {step}"


async def test_redis_uses_its_own_clock_by_default(redis_client: Redis, prefix: str) -> None:
    limiter = RedisLimiter(redis_client, prefix)
    window = Window("hour", 37, 3600)
    seen = [(await limiter.hit("server-time", [window])).states[0].remaining for _ in range(37)]
    assert seen == list(range(36, -1, -1))
    assert 0 < await redis_client.pttl(f"{prefix}server-time") <= 2 * window.ms


# --- the Lua arithmetic -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sync_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1.0)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        client.close()
        pytest.fail(unreachable(REDIS_URL, exc))
    yield client
    client.close()


def lua_admits(
    client: redis.Redis, key: str, now_ms: int, counters: WindowCounters, window: Window, cost: int
) -> bool:
    start, prev, curr = counters
    w = window.ms
    client.hset(key, mapping={f"s{w}": start, f"p{w}": prev, f"c{w}": curr})
    try:
        reply = client.eval(SCRIPT, 1, key, now_ms, cost, 0, f"{w}:{window.limit}")
    finally:
        client.delete(key)
    return bool(reply.split()[0] == b"1")


def test_lua_is_exact_where_doubles_are_not(sync_client: redis.Redis) -> None:
    # prev*(w - e) - spare*w == +1 or -1 at about 2.7e24: far below what a double resolves.
    window = Window("month", MAX_LIMIT, 2_592_000)
    w = window.ms
    prev = 400_000 * w - 1
    now_ms = 5 * w + 1  # one ms into a fixed window: prev weighs (w - 1)/w
    key = f"{RUN_PREFIX}exact"
    for spare, expected in ((400_000 * w - 400_000 - 1, False), (400_000 * w - 400_000, True)):
        counters = (5 * w, prev, MAX_LIMIT - 1 - spare)
        assert admits(now_ms, counters, window, 1) is expected
        assert lua_admits(sync_client, key, now_ms, counters, window, 1) is expected
    # Plain doubles cannot tell prev*(w - 1) from spare*w + 1 at this size, and would admit.
    spare = 400_000 * w - 400_000 - 1
    assert float(prev) * (w - 1) <= float(spare) * w


@settings(max_examples=150, deadline=None)
@given(
    seconds=st.sampled_from([1, 60, 3600, 86400, 2_592_000, 68_000_000]),
    limit=st.one_of(st.integers(1, 1000), st.integers(1, MAX_LIMIT)),
    data=st.data(),
)
def test_lua_agrees_with_python(
    sync_client: redis.Redis, seconds: int, limit: int, data: st.DataObject
) -> None:
    window = Window("w", limit, seconds)
    w = window.ms
    start = data.draw(st.integers(0, 10**6)) * w
    counters = (start, data.draw(st.integers(0, limit)), data.draw(st.integers(0, limit)))
    now_ms = start + data.draw(st.integers(0, 3 * w))
    cost = data.draw(st.integers(1, limit + 1))
    expected = admits(now_ms, counters, window, cost)
    assert lua_admits(sync_client, f"{RUN_PREFIX}agree", now_ms, counters, window, cost) is expected


# --- failover ---------------------------------------------------------------------------------


async def dead_redis_limiter() -> tuple[RedisLimiter, Redis]:
    client = Redis.from_url(DEAD_REDIS_URL, socket_connect_timeout=CONNECT_TIMEOUT_S)
    return RedisLimiter(client), client


async def test_failover_answers_from_the_fallback_while_redis_is_unreachable(
    caplog: pytest.LogCaptureFixture, registry: CollectorRegistry, registry_counter: Counter
) -> None:
    shared, client = await dead_redis_limiter()
    primary = CountingLimiter(shared)
    clock = FakeClock()
    limiter = FailoverLimiter(
        primary,
        MemoryLimiter(clock),
        retry_interval_s=60.0,
        errors_counter=registry_counter,
        clock=clock,
    )
    window = Window("minute", 10, 60)
    with caplog.at_level(logging.INFO, logger="forecourt.ratelimit"):
        decisions = [await limiter.hit("k", [window]) for _ in range(30)]
        assert [d.allowed for d in decisions] == [True] * 10 + [False] * 20
        assert primary.calls == 1  # probed once, not once per request
        clock.advance(61)
        await limiter.hit("k", [window])
        assert primary.calls == 2
    await limiter.aclose()
    await client.aclose()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].name == "forecourt.ratelimit"
    assert outages(registry) == 1
    assert limiter.primary_down


async def test_failover_fails_closed_when_asked(
    registry: CollectorRegistry, registry_counter: Counter
) -> None:
    shared, client = await dead_redis_limiter()
    limiter = FailoverLimiter(
        shared, MemoryLimiter(), fail_open=False, errors_counter=registry_counter
    )
    window = Window("minute", 10, 60)
    for _ in range(5):
        decision = await limiter.hit("k", [window])
        assert not decision.allowed
        assert decision.retry_after_s == 1
        assert decision.violated is None
        assert decision.states[0].remaining == 0
    assert (await limiter.hit("k", [])).allowed
    await limiter.aclose()
    await client.aclose()
    assert outages(registry) == 1


async def test_failover_counts_each_outage_once(
    redis_client: Redis, prefix: str, registry: CollectorRegistry, registry_counter: Counter
) -> None:
    class Flaky:
        """A limiter that is down while ``down`` is set."""

        def __init__(self, inner: Limiter) -> None:
            self.inner = inner
            self.down = False

        async def hit(self, key: str, windows: Sequence[Window], cost: int = 1) -> Decision:
            if self.down:
                raise redis.ConnectionError("down")
            return await self.inner.hit(key, windows, cost)

        async def peek(self, key: str, windows: Sequence[Window]) -> Decision:
            return await self.hit(key, windows, 1)

        async def reset(self, key: str) -> None:
            await self.inner.reset(key)

        async def aclose(self) -> None:
            await self.inner.aclose()

    flaky = Flaky(RedisLimiter(redis_client, prefix))
    limiter = FailoverLimiter(
        flaky, MemoryLimiter(), retry_interval_s=0.0, errors_counter=registry_counter
    )
    window = Window("minute", 1000, 60)
    for down in (False, True, True, False, False, True, False, True, True):
        flaky.down = down
        assert (await limiter.hit("k", [window])).allowed
        assert limiter.primary_down is down
    assert outages(registry) == 3


def test_default_counter_is_registered_once() -> None:
    # A second registration (as on a reload of the module) hands back the first counter.
    assert failover._errors_counter() is failover.BACKEND_ERRORS
    assert REGISTRY.get_sample_value("forecourt_ratelimit_backend_errors_total") is not None


async def test_failover_survives_a_redis_restart(
    caplog: pytest.LogCaptureFixture, registry: CollectorRegistry, registry_counter: Counter
) -> None:
    port = free_port()
    server = await start_redis_server(port)
    client = Redis(
        host="127.0.0.1", port=port, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=1.0
    )
    fallback = MemoryLimiter()
    # The probe interval runs on a clock the test moves: a probe is due only when it says so.
    clock = FakeClock()
    limiter = FailoverLimiter(
        RedisLimiter(client),
        fallback,
        retry_interval_s=0.1,
        timeout_s=0.2,
        errors_counter=registry_counter,
        clock=clock,
    )
    # A month, so no fixed-window boundary falls inside the test and moves counts to prev.
    window = Window("month", 1000, 2_592_000)
    answers: list[Decision] = []
    stop = asyncio.Event()

    async def traffic() -> None:
        while not stop.is_set():
            answers.append(await limiter.hit("k", [window]))
            await asyncio.sleep(0.005)

    async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
        """Wait for ``condition``, moving the clock so the dead server is probed meanwhile."""
        deadline = asyncio.get_running_loop().time() + HANG_S
        while not await condition():
            assert asyncio.get_running_loop().time() < deadline, f"timed out: {what}"
            clock.advance(0.05)
            await asyncio.sleep(0.01)

    async def counted_in_fallback() -> int:
        return 1000 - (await fallback.peek("k", [window])).states[0].remaining

    try:
        with caplog.at_level(logging.INFO, logger="forecourt.ratelimit"):
            for _ in range(5):
                await limiter.hit("k", [window])
            assert await client.hget("fc:rl:k", "c2592000000") == b"5"

            # Several clients, so one stuck probing the dead server does not stall the rest.
            running = [asyncio.create_task(traffic()) for _ in range(4)]

            async def flowing() -> bool:
                return len(answers) >= 20

            await until(flowing, "traffic counted in Redis")
            server.kill()
            await server.wait()

            async def failed_over() -> bool:
                return limiter.primary_down and await counted_in_fallback() > 50

            await until(failed_over, "traffic counted in the fallback")
            stop.set()
            await asyncio.gather(*running)
            assert all(d.allowed for d in answers)

            server = await start_redis_server(port)
            assert limiter.primary_down  # no probe is due yet: the clock has not moved
            clock.advance(0.15)  # past the retry interval
            back = await limiter.hit("k", [window])
            assert not limiter.primary_down
            # The new server started empty: this count is its, not the fallback's.
            assert back.states[0].remaining == 999
            assert await client.hget("fc:rl:k", "c2592000000") == b"1"
    finally:
        stop.set()
        await limiter.aclose()
        await client.aclose()
        await stop_process(server)
    levels = [r.levelno for r in caplog.records if r.name == "forecourt.ratelimit"]
    assert levels == [logging.WARNING, logging.INFO]
    assert outages(registry) == 1
