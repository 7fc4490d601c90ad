"""Operation statistics: the sliding-window arithmetic against a direct computation.

A fake clock places calls at chosen times; for each window, count, sum, min and max equal
those of the calls in the window's buckets (the last ``window / BUCKET_S`` 5-second
buckets, the current one included), and p50/p95 are within one histogram bin (5 %) above
the nearest-rank percentile of those calls, never below it. The slowest calls are the top
of the same calls.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from forecourt.observability.operations import (
    BUCKET_S,
    GROWTH,
    MIN_DURATION_S,
    RING_SIZE,
    SLOW_PER_BUCKET,
    WINDOWS_S,
    OperationStats,
    timed,
)
from forecourt.stats import percentile

START = 1_800_000_000.0
HORIZON_S = RING_SIZE * BUCKET_S * 2  # calls older than the ring must have been dropped


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


calls = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=HORIZON_S, allow_nan=False),
        st.floats(min_value=0, max_value=120, allow_nan=False),
        st.sampled_from(["GET /a", "POST /b/{id}", "claim"]),
    ),
    min_size=1,
    max_size=200,
).map(lambda items: sorted(items, key=lambda item: item[0]))


def close_to(estimate: float, true: float) -> bool:
    floor = max(true, MIN_DURATION_S)
    return true * (1 - 1e-9) <= estimate <= floor * GROWTH * (1 + 1e-9)


@settings(max_examples=300, deadline=None)
@given(calls=calls, read_after=st.floats(min_value=0, max_value=3 * BUCKET_S))
def test_windows_match_a_direct_computation(
    calls: list[tuple[float, float, str]], read_after: float
) -> None:
    clock = FakeClock(START)
    stats = OperationStats(clock)
    for offset, duration, name in calls:
        clock.now = START + offset
        stats.record(name, duration)
    clock.now += read_after
    now_bucket = int(clock.now // BUCKET_S)
    for window, seconds in WINDOWS_S.items():
        first = now_bucket - seconds // BUCKET_S + 1
        inside = [(d, n) for t, d, n in calls if int((START + t) // BUCKET_S) >= first]
        summaries = stats.summaries(window)
        names = {n for _, n in inside}
        assert set(summaries) == names
        for name in names:
            durations = sorted(d for d, n in inside if n == name)
            _, summary = summaries[name]
            assert summary.count == len(durations)
            assert math.isclose(summary.total_s, sum(durations), rel_tol=1e-9, abs_tol=1e-12)
            assert summary.min_s == durations[0]
            assert summary.max_s == durations[-1]
            assert math.isclose(
                summary.avg_s, sum(durations) / len(durations), rel_tol=1e-9, abs_tol=1e-12
            )
            p50 = percentile(durations, 0.5)
            p95 = percentile(durations, 0.95)
            assert p50 is not None and p95 is not None
            assert close_to(summary.p50_s, p50), (summary.p50_s, p50)
            assert close_to(summary.p95_s, p95), (summary.p95_s, p95)
        slow = stats.slowest(window, SLOW_PER_BUCKET)
        expected = sorted((d for d, _ in inside), reverse=True)[: len(slow)]
        # Each bucket keeps its SLOW_PER_BUCKET slowest, so the window's top is exact.
        assert len(slow) == min(len(inside), SLOW_PER_BUCKET)
        assert [s.duration_s for s in slow] == expected


def test_memory_is_bounded_by_the_ring() -> None:
    clock = FakeClock(START)
    stats = OperationStats(clock)
    for second in range(0, 4 * RING_SIZE * BUCKET_S, 1):
        clock.now = START + second
        stats.record("GET /a", 0.01 * (second % 7 + 1))
    series = stats._series["GET /a"]
    assert len(series.ring) == RING_SIZE
    assert all(b is not None and len(b.bins) <= 7 for b in series.ring)
    assert stats.summaries("1h")["GET /a"][1].count == RING_SIZE * BUCKET_S


async def test_timed_counts_a_call_that_raises() -> None:
    clock = FakeClock(START)
    stats = OperationStats(clock)
    try:
        async with timed("rollup", stats):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    with timed("rollup", stats):
        pass
    kind, summary = stats.summaries("1m")["rollup"]
    assert kind == "job" and summary.count == 2
