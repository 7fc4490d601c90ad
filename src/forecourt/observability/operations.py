"""Operation statistics: how often each route and background job ran, and how long it took,
over sliding windows (1 minute, 5 minutes, 1 hour), in bounded memory.

Each operation keeps a ring of 5-second buckets covering the longest window; a bucket holds
the count, sum, minimum and maximum of its durations and a histogram with bins 5 % wide, so
p50 and p95 are estimated within 5 % (never below the true value) whatever the number of
calls. A window is the last ``window / 5 s`` buckets, the current one included. Recording
is a lock, a few additions and a logarithm: cheap enough for every request.

The figures are per process: an API node has its routes, a worker node its jobs.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Kind = Literal["route", "job"]

BUCKET_S = 5
WINDOWS_S: dict[str, int] = {"1m": 60, "5m": 300, "1h": 3600}
RING_SIZE = max(WINDOWS_S.values()) // BUCKET_S
# Histogram bins grow by 5 %: the relative error of a percentile estimate.
GROWTH = 1.05
_PER_LOG = 1 / math.log(GROWTH)
# Durations shorter than this (1 µs) share the lowest bin.
MIN_DURATION_S = 1e-6
# The slowest operations kept per bucket, across operations: the most /slow can list.
SLOW_PER_BUCKET = 20
# Permille of the percentiles reported (nearest rank, as forecourt.stats.percentile).
PERCENTILES = {"p50": 500, "p95": 950}

# Background operations, by name.
CLAIM = "claim"
DELIVER = "deliver"
PUBLISH_COMMIT = "publish_commit"
PLUGIN_RUN = "plugin_run"
ROLLUP = "rollup"


def bin_upper(index: int) -> float:
    """The upper edge of histogram bin ``index``, which holds [GROWTH**index, its upper
    edge); ``record`` files a duration under floor(log(duration) / log(GROWTH))."""
    return float(GROWTH ** (index + 1))


class _Bucket:
    __slots__ = ("bins", "count", "high", "index", "low", "total")

    def __init__(self, index: int) -> None:
        self.index = index
        self.count = 0
        self.total = 0.0
        self.low = math.inf
        self.high = 0.0
        self.bins: dict[int, int] = {}


class _Series:
    __slots__ = ("kind", "ring")

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self.ring: list[_Bucket | None] = [None] * RING_SIZE


@dataclass(frozen=True)
class Summary:
    """One operation over one window; durations in seconds."""

    count: int
    total_s: float
    min_s: float
    max_s: float
    p50_s: float
    p95_s: float

    @property
    def avg_s(self) -> float:
        return self.total_s / self.count


@dataclass(frozen=True)
class Slow:
    """One slow call: the operation, its duration (seconds) and when it ended (epoch s)."""

    name: str
    kind: Kind
    duration_s: float
    at: float


class OperationStats:
    """Sliding-window statistics of named operations. ``clock`` gives epoch seconds."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._series: dict[str, _Series] = {}
        self._slow: list[tuple[int, list[tuple[float, float, str]]] | None] = [None] * RING_SIZE

    def record(self, name: str, seconds: float, kind: Kind = "job") -> None:
        """One call of ``name`` that took ``seconds``."""
        now = self._clock()
        index = int(now // BUCKET_S)
        slot = index % RING_SIZE
        key = math.floor(
            math.log(seconds if seconds > MIN_DURATION_S else MIN_DURATION_S) * _PER_LOG
        )
        with self._lock:
            series = self._series.get(name)
            if series is None:
                series = self._series[name] = _Series(kind)
            bucket = series.ring[slot]
            if bucket is None or bucket.index != index:
                bucket = series.ring[slot] = _Bucket(index)
            bucket.count += 1
            bucket.total += seconds
            if seconds < bucket.low:
                bucket.low = seconds
            if seconds > bucket.high:
                bucket.high = seconds
            bins = bucket.bins
            bins[key] = bins.get(key, 0) + 1
            slow = self._slow[slot]
            if slow is None or slow[0] != index:
                slow = self._slow[slot] = (index, [])
            heap = slow[1]
            if len(heap) < SLOW_PER_BUCKET:
                heapq.heappush(heap, (seconds, now, name))
            elif seconds > heap[0][0]:
                heapq.heapreplace(heap, (seconds, now, name))

    def summaries(self, window: str) -> dict[str, tuple[Kind, Summary]]:
        """Every operation called within ``window`` (a key of WINDOWS_S), by name."""
        first = self._first_index(window)
        result: dict[str, tuple[Kind, Summary]] = {}
        with self._lock:
            series = list(self._series.items())
            merged = [(n, s.kind, [b for b in s.ring if b is not None and b.index >= first])
                      for n, s in series]  # fmt: skip
            snapshot = [
                (name, kind, [(b.count, b.total, b.low, b.high, dict(b.bins)) for b in buckets])
                for name, kind, buckets in merged
            ]
        for name, kind, buckets in snapshot:
            summary = _merge(buckets)
            if summary is not None:
                result[name] = (kind, summary)
        return result

    def slowest(self, window: str, limit: int = SLOW_PER_BUCKET) -> list[Slow]:
        """The ``limit`` slowest calls within ``window``, slowest first."""
        first = self._first_index(window)
        with self._lock:
            entries = [e for s in self._slow if s is not None and s[0] >= first for e in s[1]]
            kinds = {name: series.kind for name, series in self._series.items()}
        top = heapq.nlargest(min(limit, SLOW_PER_BUCKET), entries)
        return [Slow(name, kinds.get(name, "job"), seconds, at) for seconds, at, name in top]

    def clear(self) -> None:
        with self._lock:
            self._series.clear()
            self._slow = [None] * RING_SIZE

    def _first_index(self, window: str) -> int:
        return int(self._clock() // BUCKET_S) - WINDOWS_S[window] // BUCKET_S + 1


def _merge(buckets: list[tuple[int, float, float, float, dict[int, int]]]) -> Summary | None:
    count = sum(b[0] for b in buckets)
    if not count:
        return None
    low = min(b[2] for b in buckets)
    high = max(b[3] for b in buckets)
    bins: dict[int, int] = {}
    for bucket in buckets:
        for key, n in bucket[4].items():
            bins[key] = bins.get(key, 0) + n
    ordered = sorted(bins.items())
    estimates = []
    for permille in PERCENTILES.values():
        rank = max(1, -(-permille * count // 1000))
        seen = 0
        for key, n in ordered:
            seen += n
            if seen >= rank:
                estimates.append(min(max(bin_upper(key), low), high))
                break
    return Summary(count, sum(b[1] for b in buckets), low, high, estimates[0], estimates[1])


OPERATIONS = OperationStats()
"""This process's statistics."""


class timed:
    """Record the time a block takes as one call of the background operation ``name``; a
    plain or an async context manager (an exception still counts the call)."""

    __slots__ = ("name", "started", "stats")

    def __init__(self, name: str, stats: OperationStats = OPERATIONS) -> None:
        self.name = name
        self.stats = stats
        self.started = 0.0

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *_: object) -> None:
        self.stats.record(self.name, time.perf_counter() - self.started)

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(self, *_: object) -> None:
        self.__exit__()
