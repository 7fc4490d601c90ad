"""The sliding-window counter's arithmetic, and the in-process limiter on a fake clock."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from forecourt.ratelimit.memory import MemoryLimiter
from forecourt.ratelimit.windows import (
    STANDARD_WINDOWS,
    Decision,
    Window,
    WindowCounters,
    admits,
    evaluate,
    fresh,
    observe,
    remaining,
    roll,
    state,
    wait_ms,
)

EPOCH_S = 1_700_000_000.0  # a fixed wall-clock instant for the fake clocks


class FakeClock:
    """Seconds since the epoch, moved by hand."""

    def __init__(self, now_s: float = EPOCH_S) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


window_lengths = st.one_of(st.sampled_from(list(STANDARD_WINDOWS.values())), st.integers(1, 300))
windows = st.builds(Window, name=st.just("w"), limit=st.integers(1, 500), seconds=window_lengths)


@st.composite
def window_and_counters(draw: st.DrawFn) -> tuple[Window, WindowCounters, int]:
    """A window, counters it could hold (each count at most the limit), and a time after them."""
    window = draw(windows)
    w = window.ms
    start = draw(st.integers(0, 10**6)) * w
    prev = draw(st.integers(0, window.limit))
    curr = draw(st.integers(0, window.limit))
    now_ms = start + draw(st.integers(0, w - 1))
    return window, (start, prev, curr), now_ms


def reference_admits(now_ms: int, counters: WindowCounters, window: Window, cost: int) -> bool:
    """The definition, in exact fractions: prev weighted by its overlap, plus curr, plus cost."""
    start, prev, curr = roll(*counters, now_ms, window.ms)
    overlap = Fraction(window.ms - (now_ms - start), window.ms)
    return prev * overlap + curr + cost <= window.limit


# --- the arithmetic ---------------------------------------------------------------------------


@given(window_and_counters(), st.integers(1, 600))
def test_admission_matches_the_definition(
    case: tuple[Window, WindowCounters, int], cost: int
) -> None:
    window, counters, now_ms = case
    assert admits(now_ms, counters, window, cost) == reference_admits(
        now_ms, counters, window, cost
    )


@given(window_and_counters())
def test_remaining_is_the_largest_admissible_cost(case: tuple[Window, WindowCounters, int]) -> None:
    window, counters, now_ms = case
    left = remaining(now_ms, counters, window)
    assert left >= 0
    if left > 0:
        assert admits(now_ms, counters, window, left)
    assert not admits(now_ms, counters, window, left + 1)


@given(window_and_counters(), st.integers(0, 10**10), st.integers(0, 10**10))
def test_estimate_only_decays_without_traffic(
    case: tuple[Window, WindowCounters, int], later_ms: int, later_still_ms: int
) -> None:
    window, counters, now_ms = case
    first = remaining(now_ms, counters, window)
    second = remaining(now_ms + later_ms, counters, window)
    third = remaining(now_ms + later_ms + later_still_ms, counters, window)
    assert first <= second <= third


@given(window_and_counters())
def test_window_is_empty_after_twice_its_length_idle(
    case: tuple[Window, WindowCounters, int],
) -> None:
    window, counters, now_ms = case
    later = now_ms + 2 * window.ms
    assert roll(*counters, later, window.ms)[1:] == (0, 0)
    assert remaining(later, counters, window) == window.limit


@given(window_and_counters(), st.data())
def test_wait_is_the_first_admissible_millisecond(
    case: tuple[Window, WindowCounters, int], data: st.DataObject
) -> None:
    window, counters, now_ms = case
    cost = data.draw(st.integers(1, window.limit))
    waited = wait_ms(now_ms, counters, window, cost)
    assert waited >= 0
    assert admits(now_ms + waited, counters, window, cost)
    if waited > 0:
        assert not admits(now_ms + waited - 1, counters, window, cost)


@st.composite
def denied_requests(
    draw: st.DrawFn,
) -> tuple[int, list[Window], list[WindowCounters], int]:
    """One instant, windows of distinct lengths with counters, and a cost some window refuses."""
    lengths = draw(st.lists(window_lengths, min_size=1, max_size=3, unique=True))
    ws = [Window(f"w{s}", draw(st.integers(1, 500)), s) for s in lengths]
    now_ms = draw(st.integers(0, 10**12))
    counters = [
        (
            now_ms - now_ms % w.ms,
            draw(st.integers(0, w.limit)),
            draw(st.integers(0, w.limit)),
        )
        for w in ws
    ]
    cost = draw(st.integers(1, min(w.limit for w in ws)))
    assume(not evaluate(now_ms, counters, ws, cost).allowed)
    return now_ms, ws, counters, cost


@given(denied_requests())
def test_retry_after_is_the_first_whole_second_that_admits(
    case: tuple[int, list[Window], list[WindowCounters], int],
) -> None:
    now_ms, ws, counters, cost = case
    decision = evaluate(now_ms, counters, ws, cost)
    retry_ms = decision.retry_after_s * 1000
    assert decision.retry_after_s >= 1
    assert evaluate(now_ms + retry_ms, counters, ws, cost).allowed
    assert decision.violated is not None
    if decision.retry_after_s > 1:
        assert not evaluate(now_ms + retry_ms - 1000, counters, ws, cost).allowed
        # The window reported is the one still refusing a second earlier.
        violated = ws.index(decision.violated)
        assert not admits(now_ms + retry_ms - 1000, counters[violated], ws[violated], cost)


@given(window_and_counters())
def test_reset_is_when_the_next_unit_fits_or_the_fixed_window_ends(
    case: tuple[Window, WindowCounters, int],
) -> None:
    window, counters, now_ms = case
    s = state(now_ms, counters, window)
    assert s.reset_s >= 1
    if s.remaining == 0:
        assert admits(now_ms + s.reset_s * 1000, counters, window, 1)
    else:
        start = roll(*counters, now_ms, window.ms)[0]
        assert (s.reset_s - 1) * 1000 < start + window.ms - now_ms <= s.reset_s * 1000


def test_cost_above_the_limit_is_denied_with_the_wait_until_empty() -> None:
    window = Window("minute", 5, 60)
    decision = evaluate(60_000, [fresh(60_000, window.ms)], [window], 6)
    assert not decision.allowed
    assert decision.violated == window
    assert decision.retry_after_s == 120


def test_boundary_burst_is_smoothed() -> None:
    # A fixed window would admit a full quota on each side of the boundary.
    window = Window("minute", 10, 60)
    w = window.ms
    counters: WindowCounters = fresh(w - 1, w)
    for _ in range(10):
        decision = evaluate(w - 1, [counters], [window], 1)
        assert decision.allowed
        counters = (counters[0], counters[1], counters[2] + 1)
    assert not evaluate(w, [counters], [window], 1).allowed
    # Halfway through the next window half of the previous count still weighs.
    assert remaining(w + w // 2, counters, window) == 5


@pytest.mark.parametrize(
    ("name", "limit", "seconds"),
    [("", 1, 1), ("é", 1, 1), ("w", 0, 1), ("w", 1, 0), ("w", 2**51, 1), ("w", 1, 2**36)],
)
def test_window_rejects_what_the_backends_cannot_hold(name: str, limit: int, seconds: int) -> None:
    with pytest.raises(ValueError):
        Window(name, limit, seconds)


# --- the in-process limiter -------------------------------------------------------------------


@given(limit=st.integers(1, 300), offset_ms=st.integers(0, 59_999))
def test_fresh_key_admits_exactly_the_limit_at_one_instant(limit: int, offset_ms: int) -> None:
    clock = FakeClock(EPOCH_S + offset_ms / 1000)
    limiter = MemoryLimiter(clock)
    window = Window("minute", limit, 60)

    async def run() -> list[Decision]:
        return [await limiter.hit("k", [window]) for _ in range(limit + 1)]

    decisions = asyncio.run(run())
    assert [d.allowed for d in decisions] == [True] * limit + [False]
    assert [d.states[0].remaining for d in decisions[:limit]] == list(range(limit - 1, -1, -1))


@given(costs=st.lists(st.integers(1, 20), min_size=1, max_size=40), limit=st.integers(1, 100))
def test_remaining_falls_by_the_cost_of_each_admitted_hit(costs: list[int], limit: int) -> None:
    limiter = MemoryLimiter(FakeClock())
    window = Window("hour", limit, 3600)

    async def run() -> None:
        left = limit
        for cost in costs:
            decision = await limiter.hit("k", [window], cost)
            assert decision.allowed == (cost <= left)
            if decision.allowed:
                left -= cost
            assert decision.states[0].remaining == left >= 0

    asyncio.run(run())


@given(
    steps=st.lists(st.tuples(st.integers(0, 90_000), st.integers(1, 7)), min_size=1, max_size=60)
)
def test_memory_limiter_agrees_with_the_definition(steps: list[tuple[int, int]]) -> None:
    """Random traffic: every decision is the one the fractional definition gives."""
    clock = FakeClock()
    limiter = MemoryLimiter(clock)
    ws = [Window("second", 4, 1), Window("minute", 20, 60)]
    model: dict[int, WindowCounters] = {}

    async def run() -> None:
        for advance_ms, cost in steps:
            clock.advance(advance_ms / 1000)
            now_ms = round(clock() * 1000)
            rolled = [roll(*model.get(w.ms, fresh(now_ms, w.ms)), now_ms, w.ms) for w in ws]
            expected = all(
                reference_admits(now_ms, c, w, cost) for c, w in zip(rolled, ws, strict=True)
            )
            decision = await limiter.hit("k", ws, cost)
            assert decision.allowed == expected
            if expected:
                for (s, p, c), w in zip(rolled, ws, strict=True):
                    model[w.ms] = (s, p, c + cost)
                    assert c + cost <= w.limit  # a fixed window never holds more than the limit

    asyncio.run(run())


async def test_denied_hit_charges_no_window() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock)
    minute, hour = Window("minute", 3, 60), Window("hour", 10, 3600)
    for _ in range(3):
        assert (await limiter.hit("k", [minute, hour])).allowed
    denied = await limiter.hit("k", [minute, hour])
    assert not denied.allowed
    assert denied.violated == minute
    assert [s.remaining for s in denied.states] == [0, 7]
    # The hour window alone still has its 7: the denied hit took nothing from it.
    assert (await limiter.peek("k", [hour])).states[0].remaining == 7
    clock.advance(120)
    assert [s.remaining for s in (await limiter.hit("k", [minute, hour])).states] == [2, 6]


async def test_peek_charges_nothing() -> None:
    limiter = MemoryLimiter(FakeClock())
    window = Window("minute", 2, 60)
    await limiter.hit("k", [window])
    for _ in range(5):
        decision = await limiter.peek("k", [window])
        assert decision.allowed
        assert decision.states[0].remaining == 1
    await limiter.hit("k", [window])
    assert not (await limiter.peek("k", [window])).allowed


async def test_reset_forgets_the_key() -> None:
    limiter = MemoryLimiter(FakeClock())
    window = Window("minute", 1, 60)
    await limiter.hit("k", [window])
    assert not (await limiter.hit("k", [window])).allowed
    await limiter.reset("k")
    assert (await limiter.hit("k", [window])).allowed


async def test_concurrent_hits_never_overdraw() -> None:
    limiter = MemoryLimiter(FakeClock())
    window = Window("minute", 37, 60)
    decisions = await asyncio.gather(*(limiter.hit("k", [window]) for _ in range(200)))
    assert sum(d.allowed for d in decisions) == 37


async def test_idle_keys_are_evicted_after_twice_their_longest_window() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock, sweep_every=10)
    short, long = Window("second", 5, 1), Window("minute", 5, 60)
    await limiter.hit("short", [short])
    await limiter.hit("long", [short, long])
    clock.advance(2)
    for i in range(10):
        await limiter.hit(f"busy{i}", [short])
    assert len(limiter) == 11  # "short" is gone, "long" still needs its minute window
    clock.advance(120)
    for i in range(20):
        await limiter.hit(f"later{i}", [short])
    assert len(limiter) == 20


async def test_duplicate_window_lengths_are_refused() -> None:
    limiter = MemoryLimiter(FakeClock())
    with pytest.raises(ValueError):
        await limiter.hit("k", [Window("a", 1, 60), Window("b", 2, 60)])


async def test_no_windows_means_no_limit() -> None:
    decision = await MemoryLimiter(FakeClock()).hit("k", [])
    assert decision == Decision(allowed=True, states=(), retry_after_s=0, violated=None)
    assert observe(0, [], []).allowed
